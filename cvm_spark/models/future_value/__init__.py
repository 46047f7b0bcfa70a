"""Future value (spec section 4): predicted income over the next H months.

Training looks back one horizon: features as of month ``t-H`` (``t`` = the snapshot month)
and, as label, the income actually earned in months ``t-H+1 .. t``. Accounts are clustered
with ``Pipeline([SQLTransformer (signed log), VectorAssembler, StandardScaler, KMeans])``;
the clusters are named after each fit from the mean label of their members (never from
KMeans' ids); then one Spark ML ``LinearRegression`` per cluster is fitted on the raw
(original-unit) features. The current snapshot (features as of ``t``) is scored with its
cluster's regression. docs/future_value.md has the time line, the choices and the layout
of the saved models.

Design notes (the *why*):

* **Clustering on log-scaled value features.** Income and ARPU are roughly lognormal.
  Standardised raw values put most accounts in one blob near zero and let a few very large
  accounts drive the KMeans objective, and activity/tenure/trend dimensions split dormant
  or young accounts off instead of separating value levels. Value tiers are therefore found
  on ``cluster_features`` (default: ARPU over 3 and 12 months) after a signed ``log1p``,
  while the regressions use ``features`` in original units, where income is linear in its
  predictors. docs/future_value.md has the measurements behind these choices.
* **Weighted regression on the change.** By default (``target: change``) each cluster's
  regression predicts the change of income over the naive forecast (``label - baseline``,
  the baseline being the last H months' income) and the prediction is ``baseline +
  change``: without regularisation that is the same model as regressing the label, with
  it the fit shrinks towards the naive forecast instead of towards 0. Rows are weighted by
  ``1 / (1 + baseline)^2`` because income noise grows with the account's level; unweighted,
  a handful of large volatile accounts decide the coefficients of the high-value cluster.
* **Scoring in one projection.** The fitted coefficients are tiny (k x features), so the
  prediction is one column expression ``intercept[c] + sum_j coef[c][j] * x_j`` chosen with
  ``F.when(cluster == c, ...)``. There is no ``union``/``join`` per cluster, no k-fold
  recomputation of every row (as k ``LinearRegressionModel.transform`` calls would do), no
  Python UDF, and the same code scores a freshly fitted and a reloaded model.
* **Deterministic hold-out and fit.** The hold-out is chosen by a hash of ``(seed,
  account_id)``, not ``randomSplit`` (which depends on partitioning and row order). The
  training rows are hash-partitioned and sorted by account before caching, so KMeans'
  seeded initialisation (which samples rows in partition order) sees the same rows in the
  same order on every run.
* **Scoring with the train-part models.** The models fitted on the train part (1 -
  ``holdout_fraction``) are the ones saved and used for scoring, so the hold-out metrics
  describe exactly the model that produced the scores (no refit on the full set).

The package: ``model`` (the fitted parameters and column names), ``training`` (the
training set), ``fit`` (the fit and its hold-out metrics), ``score`` (the projection that
scores every account) and ``store`` (saving and loading with pyspark.ml's writer and
reader, and the pipeline's fit-or-load).
"""

from cvm_spark.models.future_value.backtest import (
    BACKTEST,
    Origin,
    backtest_origins,
    choose_method,
    error_metrics,
    run_backtest,
)
from cvm_spark.models.future_value.btyd_spend import use_btyd_spend
from cvm_spark.models.future_value.fit import (
    fit_future_value,
    fit_models,
    holdout_flag,
    level_weight,
    training_partitions,
)
from cvm_spark.models.future_value.model import (
    BASELINE,
    CLUSTER_ID,
    CLUSTER_NAME,
    LABEL,
    MIN_TRAINING_PARTITIONS,
    MODEL,
    PREDICTION,
    TRAINING_ROWS_PER_PARTITION,
    ClusterRegression,
    ClusterRegressionStage,
    FutureValueModel,
    FutureValueModelNotFound,
    prediction,
)
from cvm_spark.models.future_value.score import FUTURE_COLUMNS, add_future_value, score
from cvm_spark.models.future_value.store import (
    fit_or_load_future_value,
    load_future_value,
    model_dir,
    run_future_value,
    save_future_value,
)
from cvm_spark.models.future_value.training import (
    TRAINING_SUFFIX,
    as_of_aggregates,
    as_of_offsets,
    build_facts,
    build_training_set,
    label_aggregates,
    training_aggregates,
    training_columns,
    training_from_facts,
)

__all__ = [
    "BACKTEST",
    "BASELINE",
    "CLUSTER_ID",
    "CLUSTER_NAME",
    "FUTURE_COLUMNS",
    "LABEL",
    "MIN_TRAINING_PARTITIONS",
    "MODEL",
    "PREDICTION",
    "TRAINING_ROWS_PER_PARTITION",
    "TRAINING_SUFFIX",
    "ClusterRegression",
    "ClusterRegressionStage",
    "FutureValueModel",
    "FutureValueModelNotFound",
    "Origin",
    "add_future_value",
    "as_of_aggregates",
    "as_of_offsets",
    "backtest_origins",
    "build_facts",
    "build_training_set",
    "choose_method",
    "error_metrics",
    "fit_future_value",
    "fit_models",
    "fit_or_load_future_value",
    "holdout_flag",
    "label_aggregates",
    "level_weight",
    "load_future_value",
    "model_dir",
    "prediction",
    "run_backtest",
    "run_future_value",
    "save_future_value",
    "score",
    "training_aggregates",
    "training_columns",
    "training_from_facts",
    "training_partitions",
    "use_btyd_spend"
]

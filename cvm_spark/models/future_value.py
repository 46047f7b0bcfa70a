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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.regression import LinearRegression, LinearRegressionModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_spark.common.months import add_months, month_end
from cvm_spark.common.timing import StageTimer, no_stage
from cvm_spark.config import (
    FeaturesConfig,
    FutureValueConfig,
    to_dict,
)
from cvm_spark.features.windows import (
    account_attributes,
    account_base,
    aggregates_for,
    features_from_aggregates,
    monthly_aggregates,
    monthly_rows,
    opened_by,
    transaction_aggregates,
    transaction_days,
)
from cvm_spark.schemas.inputs import ACCOUNT_ID
from cvm_spark.schemas.outputs import MetricRow

log = logging.getLogger(__name__)

MODEL = "future_value"
MANIFEST_VERSION = 1

# Internal column names (prefixed so they cannot clash with feature columns).
LABEL = "label"
BASELINE = "baseline"
_HOLDOUT = "_fv_holdout"
_CLUSTER_ID = "_fv_cluster_id"
_CLUSTER_IN = "_fv_cluster_input"
_CLUSTER_SCALED = "_fv_cluster_scaled"
_REG_IN = "_fv_x"
_PRED = "_fv_pred"
_TARGET = "_fv_target"
_WEIGHT = "_fv_weight"
_LOG_PREFIX = "_fv_log_"
_MASK47 = (1 << 47) - 1
_TWO47 = float(1 << 47)

# Accounts per partition of the training frame, and the fewest partitions (two: a shuffle
# into one partition would send every training row through one task; see
# training_partitions).
TRAINING_ROWS_PER_PARTITION = 250_000
MIN_TRAINING_PARTITIONS = 2


@dataclass(frozen=True)
class ClusterRegression:
    """The regression one cluster is scored with (coefficients in original feature units)."""

    cluster_id: int
    name: str
    model: LinearRegressionModel
    pooled: bool  # True: the cluster had too few training rows; the pooled model is used

    @property
    def intercept(self) -> float:
        return float(self.model.intercept)

    @property
    def coefficients(self) -> list[float]:
        return [float(v) for v in self.model.coefficients.toArray()]


@dataclass(frozen=True)
class FutureValueModel:
    """A fitted future-value model.

    Attributes:
        pipeline: ``[SQLTransformer,] VectorAssembler, StandardScaler, KMeans`` fitted on the
            train part; its KMeans writes the cluster id.
        regressions: one per KMeans cluster id, in rank order (highest value first).
        config: the settings it was fitted with.
        seed: seed of KMeans and of the hold-out split.
        metrics: model-metric rows ``(model, scope, metric, value)`` of the fit.
    """

    pipeline: PipelineModel
    regressions: list[ClusterRegression]
    config: FutureValueConfig
    seed: int
    metrics: list[MetricRow]

    @property
    def names(self) -> dict[int, str]:
        """KMeans cluster id -> name."""
        return {r.cluster_id: r.name for r in self.regressions}


class FutureValueModelNotFound(FileNotFoundError):
    """No saved future-value model where one was asked for."""


# --------------------------------------------------------------------------------------------
# Training set
# --------------------------------------------------------------------------------------------


def _require(df: DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: column(s) {missing} not found; future_value.features and "
                         f"future_value.cluster_features must name columns of the features "
                         f"table (have: {sorted(df.columns)})")


def _feature_values(columns: list[str]) -> list[Column]:
    """Feature columns as doubles with nulls as 0 (documented in docs/future_value.md)."""
    return [F.coalesce(F.col(c).cast("double"), F.lit(0.0)).alias(c) for c in columns]


TRAINING_SUFFIX = "__h"


def label_aggregates(cfg: FutureValueConfig) -> list[Column]:
    """Aggregates over monthly rows with ``k`` (months back from the snapshot ``t``) and
    ``income`` (every month, open or not): the label (income of months ``t-H+1 .. t``) and
    the direct baseline (income of months ``t-2H+1 .. t-H``)."""
    h, k, income = cfg.horizon_months, F.col("k"), F.col("income")
    return [F.sum(F.when((k >= 0) & (k < h), income)).alias("_fv_label"),
            F.sum(F.when((k >= h) & (k < 2 * h), income)).alias("_fv_baseline")]


def training_columns(cfg: FutureValueConfig) -> list[str]:
    """The features columns (as of ``t-H``) the training set reads."""
    return [ACCOUNT_ID, "is_closed", *cfg.input_columns, cfg.baseline_column]


def training_aggregates(cfg: FutureValueConfig, features_cfg: FeaturesConfig,
                        product_lines: list[str]) -> set[str]:
    """The aggregates (as of ``t-H``) :func:`training_from_facts` reads."""
    return aggregates_for(training_columns(cfg), features_cfg, product_lines)


def training_from_facts(facts: DataFrame, snapshot: date, features_cfg: FeaturesConfig,
                        product_lines: list[str], cfg: FutureValueConfig) -> DataFrame:
    """The training set from account facts (``cvm_spark.pipeline.facts``): the features as of
    ``t-H`` (aggregates named with :data:`TRAINING_SUFFIX`) and :func:`label_aggregates`.

    The population is the accounts open at the end of month ``t-H`` (not closed by then).

    Returns:
        ``account_id``, the columns of ``cfg.input_columns`` (doubles, nulls as 0),
        ``label`` (sum of ``monthly_product.income`` over months ``t-H+1 .. t``, 0 without
        rows) and ``baseline`` (income of months ``t-2H+1 .. t-H``: the last H months
        repeated; the feature ``income_<H>m`` when H is a feature window, else the direct
        sum).

    Raises:
        ValueError: a configured feature is not a column of the features table, or
            ``target`` is ``change`` and ``income_<H>m`` is not a feature.
    """
    h = cfg.horizon_months
    as_of = add_months(snapshot, -h)
    features = facts.where(opened_by(as_of)).select(
        *features_from_aggregates(as_of, features_cfg, product_lines, TRAINING_SUFFIX,
                                  columns=training_columns(cfg)),
        "_fv_label", "_fv_baseline")
    columns = cfg.input_columns
    _require(features, columns, f"features as of {as_of:%Y-%m}")
    baseline_feature = cfg.baseline_column
    direct_baseline = baseline_feature not in features.columns
    if direct_baseline and cfg.target == "change":
        raise ValueError(f"future_value.target 'change' needs the feature {baseline_feature}: "
                         f"add {h} to features.windows_months or set future_value.target "
                         f"to 'income'")
    baseline = F.col("_fv_baseline") if direct_baseline else F.col(baseline_feature)
    return (features.where(~F.col("is_closed"))
            .select(ACCOUNT_ID, *_feature_values(columns),
                    F.coalesce(F.col("_fv_label"), F.lit(0.0)).alias(LABEL),
                    F.coalesce(baseline.cast("double"), F.lit(0.0)).alias(BASELINE)))


def build_training_set(accounts: DataFrame, transactions: DataFrame,
                       monthly_product: DataFrame, snapshot: date,
                       features_cfg: FeaturesConfig, product_lines: list[str],
                       cfg: FutureValueConfig) -> DataFrame:
    """Features as of ``t-H``, the income of ``t-H+1 .. t`` (label) and the naive baseline.

    :func:`training_from_facts` over the account facts of these inputs (the pipeline builds
    the facts once for every model; this computes them for the training set alone).

    Args:
        accounts, transactions, monthly_product: accepted input rows (contract types).
        snapshot: first day of the snapshot month ``t``.
        features_cfg: window settings of the features.
        product_lines: product lines (as for :func:`cvm_spark.features.windows.compute_features`).
        cfg: future-value settings.

    Raises:
        ValueError: see :func:`training_from_facts`.
    """
    as_of = add_months(snapshot, -cfg.horizon_months)
    attributes = account_attributes(accounts, snapshot)
    base = account_base(accounts, snapshot)
    only = training_aggregates(cfg, features_cfg, product_lines)
    txn_aggs = transaction_aggregates(as_of, features_cfg, TRAINING_SUFFIX, only=only)
    mon = (monthly_rows(monthly_product, base, snapshot, product_lines).groupBy(ACCOUNT_ID)
           .agg(*monthly_aggregates(as_of, snapshot, features_cfg, product_lines,
                                    TRAINING_SUFFIX, only=only), *label_aggregates(cfg)))
    facts = attributes.join(mon, on=ACCOUNT_ID, how="left")
    if txn_aggs:
        txn = (transaction_days(transactions, month_end(as_of), features_cfg)
               .groupBy(ACCOUNT_ID).agg(*txn_aggs))
        facts = facts.join(txn, on=ACCOUNT_ID, how="left")
    return training_from_facts(facts, snapshot, features_cfg, product_lines, cfg)


# --------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------


def holdout_flag(seed: int, fraction: float) -> Column:
    """True for the accounts held out: a hash of ``(seed, account_id)`` below ``fraction``."""
    u = F.xxhash64(F.lit(seed), F.lit("future_value.holdout"), F.col(ACCOUNT_ID)) \
        .bitwiseAND(F.lit(_MASK47)) / _TWO47
    return u < F.lit(fraction)


def level_weight() -> Column:
    """``1 / (1 + baseline)^2``: the inverse variance when noise is proportional to level."""
    return F.lit(1.0) / F.pow(F.lit(1.0) + F.greatest(F.col(BASELINE), F.lit(0.0)), 2)


def _cluster_pipeline(cfg: FutureValueConfig, seed: int) -> Pipeline:
    inputs = list(cfg.cluster_features)
    stages: list = []
    if cfg.cluster_transform == "signed_log1p":
        logs = ", ".join(f"signum(`{c}`) * log1p(abs(`{c}`)) AS `{_LOG_PREFIX}{c}`"
                         for c in inputs)
        stages.append(SQLTransformer(statement=f"SELECT *, {logs} FROM __THIS__"))
        inputs = [f"{_LOG_PREFIX}{c}" for c in inputs]
    stages += [
        VectorAssembler(inputCols=inputs, outputCol=_CLUSTER_IN),
        StandardScaler(inputCol=_CLUSTER_IN, outputCol=_CLUSTER_SCALED, withMean=True,
                       withStd=True),
        KMeans(featuresCol=_CLUSTER_SCALED, predictionCol=_CLUSTER_ID, k=cfg.k, seed=seed,
               maxIter=cfg.kmeans_max_iter),
    ]
    return Pipeline(stages=stages)


def _kmeans(pipeline: PipelineModel) -> KMeansModel:
    model = pipeline.stages[-1]
    assert isinstance(model, KMeansModel)
    return model


def _regression(cfg: FutureValueConfig) -> LinearRegression:
    return LinearRegression(featuresCol=_REG_IN, labelCol=_TARGET, predictionCol=_PRED,
                            maxIter=cfg.max_iter, regParam=cfg.reg_param,
                            elasticNetParam=cfg.elastic_net, loss=cfg.loss,
                            epsilon=cfg.huber_epsilon, standardization=True,
                            **({"weightCol": _WEIGHT} if cfg.weight_by_level else {}))


def prediction(regressions: list[ClusterRegression], cfg: FutureValueConfig) -> Column:
    """The predicted income as one expression over the raw features and the cluster id.

    ``F.when(cluster == c, intercept_c + sum_j coef_cj * x_j)`` for every cluster: one
    projection for all clusters. There is no ``otherwise``: every KMeans id has a branch.
    With ``target = change`` the ``baseline`` column is added; with ``floor_at_zero``
    negative predictions become 0.
    """
    expr: Column | None = None
    for reg in regressions:
        value = F.lit(reg.intercept)
        for name, coef in zip(cfg.features, reg.coefficients, strict=True):
            value = value + F.lit(coef) * F.col(name)
        cond = F.col(_CLUSTER_ID) == F.lit(reg.cluster_id)
        expr = F.when(cond, value) if expr is None else expr.when(cond, value)
    assert expr is not None
    if cfg.target == "change":
        expr = F.col(BASELINE) + expr
    return F.greatest(expr, F.lit(0.0)) if cfg.floor_at_zero else expr


def _name_clusters(stats: dict[int, dict[str, float]], n_centers: int,
                   cfg: FutureValueConfig) -> list[tuple[int, str]]:
    """(cluster id, name) ranked by the members' mean label, highest first.

    Ids without training members rank last; ties keep the KMeans id order.
    """
    def key(cid: int) -> tuple[int, float, int]:
        mean = stats.get(cid, {}).get("mean_label")
        return (0, -mean, cid) if mean is not None else (1, 0.0, cid)

    names = cfg.names()
    ranked = sorted(range(n_centers), key=key)
    return [(cid, names[rank]) for rank, cid in enumerate(ranked)]


def training_partitions(accounts: int) -> int:
    """Partitions of the training frame: one per ``TRAINING_ROWS_PER_PARTITION`` accounts,
    at least ``MIN_TRAINING_PARTITIONS``.

    KMeans' seeded initialisation samples rows partition by partition, so the partitioning
    is part of what makes a fit repeatable: it follows the data, never the machine's cores.
    """
    return max(MIN_TRAINING_PARTITIONS, -(-accounts // TRAINING_ROWS_PER_PARTITION))


def fit_future_value(training: DataFrame, cfg: FutureValueConfig,
                     seed: int, stage: StageTimer = no_stage,
                     materialize: Callable[[DataFrame, str], DataFrame] | None = None,
                     partitions: int | None = None) -> FutureValueModel:
    """Fit clusters and per-cluster regressions on the train part; evaluate on the hold-out.

    Args:
        training: as returned by :func:`build_training_set`.
        cfg: future-value settings.
        seed: seed of KMeans and of the hold-out split (the run's ``run_seed``).
        stage: wraps the three steps: ``future_value_training`` (the training set computed
            and cached), ``kmeans`` (scaler + KMeans), ``regression`` (per-cluster
            regressions and hold-out metrics).

    Returns:
        The fitted :class:`FutureValueModel` with its metric rows: per cluster and overall
        ``rmse``, ``mae``, ``r2`` of the model and ``baseline_rmse``, ``baseline_mae``,
        ``baseline_r2`` of the naive baseline on the hold-out (``r2`` is NaN when the
        label has no variance), row counts (``size``, ``train_rows``, ``holdout_rows``),
        ``mean_label``, ``centroid:<cluster feature>`` (members' mean in original units),
        ``intercept``, ``coef:<feature>`` and ``pooled`` (1 = pooled-regression fallback).

        materialize: writes the training frame once and returns it read back
            (:meth:`cvm_spark.storage.workarea.WorkArea.materialize`): every fit then starts from a
            file scan instead of the training set's lineage. Without it the frame is cached.
        partitions: partitions of the training frame (:func:`training_partitions`); None
            keeps the session's shuffle partitions.

    Raises:
        ValueError: the training set misses a column, or its train part is empty.
    """
    features, columns = list(cfg.features), cfg.input_columns
    _require(training, [ACCOUNT_ID, *columns, LABEL, BASELINE], "training set")
    # Hash-partition and sort by account so the rows, hence KMeans' seeded initialisation
    # and every sum, do not depend on the order shuffles deliver rows in.
    selected = training.select(ACCOUNT_ID, *columns, LABEL, BASELINE,
                               holdout_flag(seed, cfg.holdout_fraction).alias(_HOLDOUT))
    spread = (selected.repartition(F.col(ACCOUNT_ID)) if partitions is None
              else selected.repartition(partitions, F.col(ACCOUNT_ID)))
    ordered = spread.sortWithinPartitions(ACCOUNT_ID)
    data = ordered.persist() if materialize is None else None
    clustered: DataFrame | None = None
    try:
        with stage("future_value_training"):
            # the whole training set is computed here, once: written to the work area, or
            # into the cache by the count
            if materialize is not None:
                data = materialize(ordered, "fv_training")
            assert data is not None
            train = data.where(~F.col(_HOLDOUT))
            n_train = train.count()
        if n_train == 0:
            raise ValueError(f"training set: no accounts in the train part (no account open "
                             f"at the end of month t-{cfg.horizon_months}, or no history?)")
        with stage("kmeans"):
            pipeline = _cluster_pipeline(cfg, seed).fit(train)
        n_centers = len(_kmeans(pipeline).clusterCenters())
        if n_centers < cfg.k:
            log.warning("future value: KMeans found %d distinct centers for k=%d",
                        n_centers, cfg.k)
        with stage("regression"):  # clusters named, per-cluster fits, hold-out metrics
            assembler = VectorAssembler(inputCols=features, outputCol=_REG_IN)
            target = (F.col(LABEL) - F.col(BASELINE) if cfg.target == "change"
                      else F.col(LABEL))
            clustered = (assembler.transform(pipeline.transform(data))
                         .select(ACCOUNT_ID, _CLUSTER_ID, *columns, _REG_IN, LABEL, BASELINE,
                                 target.alias(_TARGET), _HOLDOUT,
                                 level_weight().alias(_WEIGHT))
                         .persist())
            train = clustered.where(~F.col(_HOLDOUT))

            stats = {
                r[_CLUSTER_ID]: r.asDict()
                for r in train.groupBy(_CLUSTER_ID).agg(
                    F.count(F.lit(1)).alias("train_rows"),
                    F.avg(LABEL).alias("mean_label"),
                    *[F.avg(c).alias(f"centroid:{c}") for c in cfg.cluster_features],
                ).collect()
            }
            ranked = _name_clusters(stats, n_centers, cfg)

            regressions: list[ClusterRegression] = []
            pooled_model: LinearRegressionModel | None = None
            for cid, name in ranked:
                rows = int(stats.get(cid, {}).get("train_rows", 0))
                if rows >= cfg.min_cluster_rows:
                    model = _regression(cfg).fit(train.where(F.col(_CLUSTER_ID) == cid))
                    regressions.append(ClusterRegression(cid, name, model, pooled=False))
                    continue
                log.warning("future value: cluster %s has %d training rows (< %d); using the "
                            "regression pooled over all clusters", name, rows, cfg.min_cluster_rows)
                if pooled_model is None:
                    pooled_model = _regression(cfg).fit(train)
                regressions.append(ClusterRegression(cid, name, pooled_model, pooled=True))

            metrics = _metrics(clustered, regressions, stats, cfg)
    finally:
        if clustered is not None:
            clustered.unpersist()
        if data is not None:
            data.unpersist()
    result = FutureValueModel(pipeline=pipeline, regressions=regressions, config=cfg,
                              seed=seed, metrics=metrics)
    log.info("future value: fitted %d clusters (%s); hold-out rmse %.4g vs baseline %.4g",
             len(regressions), ", ".join(r.name for r in regressions),
             _metric(metrics, "overall", "rmse"), _metric(metrics, "overall", "baseline_rmse"))
    return result


def _metric(rows: list[MetricRow], scope: str, metric: str) -> float:
    return next((v for _, s, m, v in rows if s == scope and m == metric), math.nan)


def _errors(n: float, sse: float | None, sae: float | None, sst: float | None
            ) -> tuple[float, float, float]:
    """(rmse, mae, r2) from row count and sums; NaN where undefined."""
    if not n:
        return math.nan, math.nan, math.nan
    r2 = 1.0 - sse / sst if sst else math.nan
    return math.sqrt(sse / n), sae / n, r2


def _metrics(clustered: DataFrame, regressions: list[ClusterRegression],
             stats: dict[int, dict[str, float]], cfg: FutureValueConfig) -> list[MetricRow]:
    """Hold-out errors per cluster and overall (one ``rollup``), plus the fitted parameters."""
    err = prediction(regressions, cfg) - F.col(LABEL)
    base_err = F.col(BASELINE) - F.col(LABEL)
    held = {
        r[_CLUSTER_ID]: r.asDict()  # key None = all clusters (the rollup's grand total)
        for r in clustered.where(F.col(_HOLDOUT)).rollup(_CLUSTER_ID).agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(err * err).alias("sse"),
            F.sum(F.abs(err)).alias("sae"),
            F.sum(base_err * base_err).alias("base_sse"),
            F.sum(F.abs(base_err)).alias("base_sae"),
            (F.var_pop(LABEL) * F.count(F.lit(1))).alias("sst"),
        ).collect()
    }

    def errors(scope: str, h: dict) -> list[MetricRow]:
        n = float(h.get("n") or 0)
        rmse, mae, r2 = _errors(n, h.get("sse"), h.get("sae"), h.get("sst"))
        b_rmse, b_mae, b_r2 = _errors(n, h.get("base_sse"), h.get("base_sae"), h.get("sst"))
        return [(MODEL, scope, "holdout_rows", n),
                (MODEL, scope, "rmse", rmse), (MODEL, scope, "mae", mae),
                (MODEL, scope, "r2", r2), (MODEL, scope, "baseline_rmse", b_rmse),
                (MODEL, scope, "baseline_mae", b_mae), (MODEL, scope, "baseline_r2", b_r2)]

    train_total = float(sum(s["train_rows"] for s in stats.values()))
    rows: list[MetricRow] = [(MODEL, "overall", "train_rows", train_total),
                             *errors("overall", held.get(None, {}))]
    for reg in regressions:
        scope = f"cluster:{reg.name}"
        s = stats.get(reg.cluster_id, {})
        train_rows = float(s.get("train_rows", 0))
        h = held.get(reg.cluster_id, {})
        rows += [(MODEL, scope, "size", train_rows + float(h.get("n") or 0)),
                 (MODEL, scope, "train_rows", train_rows),
                 *errors(scope, h),
                 (MODEL, scope, "mean_label", _float(s.get("mean_label")))]
        rows += [(MODEL, scope, f"centroid:{c}", _float(s.get(f"centroid:{c}")))
                 for c in cfg.cluster_features]
        rows += [(MODEL, scope, "intercept", reg.intercept),
                 *[(MODEL, scope, f"coef:{f}", c)
                   for f, c in zip(cfg.features, reg.coefficients, strict=True)],
                 (MODEL, scope, "pooled", 1.0 if reg.pooled else 0.0)]
    return rows


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------------------------
# Score
# --------------------------------------------------------------------------------------------


_KEEP = "_fv_keep_"
FUTURE_COLUMNS = ["fv_cluster", "future_value"]


def add_future_value(df: DataFrame, model: FutureValueModel) -> DataFrame:
    """``df`` plus ``fv_cluster`` and ``future_value`` (see :func:`score`): one projection
    through the fitted pipeline and the regressions' expression; ``df``'s own columns are
    kept as they are (the models read the features with nulls as 0 under the same names,
    so the originals are carried aside and put back)."""
    cfg = model.config
    columns = cfg.input_columns
    baseline = [cfg.baseline_column] if cfg.target == "change" else []
    _require(df, [ACCOUNT_ID, *columns, *baseline], "features to score")
    closed = (F.coalesce(F.col("is_closed"), F.lit(False)) if "is_closed" in df.columns
              else F.lit(False))
    kept = [F.col(c).alias(f"{_KEEP}{c}") if c in columns else F.col(c) for c in df.columns]
    prepared = df.select(
        *kept, *_feature_values(columns),
        *[F.coalesce(F.col(c).cast("double"), F.lit(0.0)).alias(BASELINE) for c in baseline],
        closed.alias("_fv_closed"))
    names = model.names
    # KMeans ids are 0..n-1, so the name is an array lookup (no CASE, no catch-all).
    name = F.element_at(F.array(*[F.lit(names[i]) for i in range(len(names))]),
                        F.col(_CLUSTER_ID) + 1)
    value = prediction(model.regressions, cfg)
    is_closed = F.col("_fv_closed")
    return model.pipeline.transform(prepared).select(
        *[F.col(f"{_KEEP}{c}").alias(c) if c in columns else F.col(c) for c in df.columns],
        F.when(~is_closed, name).alias("fv_cluster"),
        F.when(is_closed, F.lit(0.0)).otherwise(value).alias("future_value"),
    )


def score(model: FutureValueModel, features_now: DataFrame) -> DataFrame:
    """Score accounts with their cluster's regression.

    Args:
        model: a fitted or loaded :class:`FutureValueModel`.
        features_now: the features table of the snapshot ``t`` (one row per account; the
            configured feature columns; ``is_closed`` when present).

    Returns:
        ``account_id``, ``fv_cluster`` (the cluster's name) and ``future_value`` (predicted
        income over months ``t+1 .. t+H``; floored at 0 when ``floor_at_zero``). Accounts
        closed by the snapshot month end get ``future_value = 0`` and a null ``fv_cluster``.

    Raises:
        ValueError: a configured feature column is missing.
    """
    cfg = model.config
    baseline = [cfg.baseline_column] if cfg.target == "change" else []
    needed = [ACCOUNT_ID, *cfg.input_columns, *baseline]
    _require(features_now, needed, "features to score")
    closed = ["is_closed"] if "is_closed" in features_now.columns else []
    base = features_now.select(*dict.fromkeys([*needed, *closed]))
    return add_future_value(base, model).select(ACCOUNT_ID, *FUTURE_COLUMNS)


# --------------------------------------------------------------------------------------------
# Persistence
# --------------------------------------------------------------------------------------------


def model_dir(root: str, snapshot: date) -> str:
    """``<root>/future_value/<YYYY-MM>``; local roots are made absolute."""
    base = root.rstrip("/") if "://" in root else str(Path(root).resolve())
    return f"{base}/{MODEL}/{snapshot:%Y-%m}"


def save_future_value(model: FutureValueModel, root: str, snapshot: date) -> str:
    """Save the pipeline, the per-cluster regressions and a JSON manifest (overwriting).

    Layout under :func:`model_dir`: ``pipeline/`` (PipelineModel), ``regression/cluster_<id>/``
    (LinearRegressionModel per KMeans id; a pooled fallback is saved under each cluster using
    it) and ``manifest/`` (one text file: JSON with names, features, config and its
    fingerprint, seed and metric rows). The manifest is emptied first and written last, so
    a save that did not finish is not found by :func:`load_future_value`.

    Returns:
        The model directory.
    """
    path = model_dir(root, snapshot)
    spark = SparkSession.active()
    manifest_path = f"{path}/manifest"
    # An empty manifest first: if this save stops half-way over an older model, the
    # directory holds no usable manifest rather than one describing other files.
    spark.createDataFrame([], "value string").coalesce(1).write.mode("overwrite") \
        .text(manifest_path)
    model.pipeline.write().overwrite().save(f"{path}/pipeline")
    for reg in model.regressions:
        reg.model.write().overwrite().save(f"{path}/regression/cluster_{reg.cluster_id}")
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "model": MODEL,
        "snapshot_month": f"{snapshot:%Y-%m}",
        "trained_as_of": f"{add_months(snapshot, -model.config.horizon_months):%Y-%m}",
        "seed": model.seed,
        "config": to_dict(model.config),
        "config_fingerprint": model.config.fingerprint(),
        "clusters": [{"cluster_id": r.cluster_id, "name": r.name, "pooled": r.pooled,
                      "path": f"regression/cluster_{r.cluster_id}"} for r in model.regressions],
        "metrics": [list(m) for m in model.metrics],
    }
    (spark.createDataFrame([(json.dumps(manifest, indent=2),)], "value string")
     .coalesce(1).write.mode("overwrite").text(manifest_path))
    log.info("future value: saved model to %s", path)
    return path


def load_future_value(spark: SparkSession, root: str, snapshot: date) -> FutureValueModel:
    """Load the model saved for ``snapshot`` under ``root``.

    Raises:
        FutureValueModelNotFound: nothing (complete) is saved there.
    """
    path = model_dir(root, snapshot)
    try:
        rows = spark.read.text(f"{path}/manifest", wholetext=True).collect()
    except AnalysisException as exc:
        raise FutureValueModelNotFound(
            f"no future-value model saved for snapshot {snapshot:%Y-%m} under {path} "
            f"(run with retrain to fit one): {str(exc).splitlines()[0]}") from None
    texts = [r.value for r in rows if r.value.strip()]
    if len(texts) != 1:
        raise FutureValueModelNotFound(f"{path}/manifest: expected one manifest file, "
                                       f"found {len(texts)}")
    manifest = json.loads(texts[0])
    try:
        config = FutureValueConfig(**manifest["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}/manifest: settings this version cannot use ({exc}); "
                         f"run with retrain") from None
    pipeline = PipelineModel.load(f"{path}/pipeline")
    regressions = [ClusterRegression(c["cluster_id"], c["name"],
                                     LinearRegressionModel.load(f"{path}/{c['path']}"),
                                     bool(c["pooled"]))
                   for c in manifest["clusters"]]
    metrics = [(m[0], m[1], m[2], float(m[3])) for m in manifest["metrics"]]
    return FutureValueModel(pipeline=pipeline, regressions=regressions, config=config,
                            seed=int(manifest["seed"]), metrics=metrics)


# --------------------------------------------------------------------------------------------
# Glue for the pipeline
# --------------------------------------------------------------------------------------------


def fit_or_load_future_value(spark: SparkSession, training: DataFrame | None, snapshot: date,
                             cfg: FutureValueConfig, seed: int, model_root: str,
                             retrain: bool = True, stage: StageTimer = no_stage,
                             materialize: Callable[[DataFrame, str], DataFrame] | None = None,
                             partitions: int | None = None) -> FutureValueModel:
    """Train (and save) the snapshot's model, or load the one saved for it.

    Args:
        training: the training set (:func:`training_from_facts`, :func:`build_training_set`);
            read only when ``retrain``.
        snapshot: first day of the snapshot month.
        cfg: future-value settings.
        seed: the run's seed.
        model_root: models go to ``<model_root>/future_value/<YYYY-MM>/`` (the pipeline
            passes ``<warehouse>/_models``).
        retrain: fit and save a new model (overwriting the snapshot's); False reuses the
            saved one.
        stage, materialize, partitions: see :func:`fit_future_value`.

    Raises:
        FutureValueModelNotFound: ``retrain`` is False and nothing is saved for the snapshot.
        ValueError: the saved model was fitted with other settings (config fingerprint).
    """
    if retrain:
        if training is None:
            raise ValueError("retrain needs the training set")
        model = fit_future_value(training, cfg, seed, stage=stage, materialize=materialize,
                                 partitions=partitions)
        save_future_value(model, model_root, snapshot)
        return model
    model = load_future_value(spark, model_root, snapshot)
    if model.config != cfg:
        changed = [f.name for f in dataclasses.fields(cfg)
                   if getattr(cfg, f.name) != getattr(model.config, f.name)]
        raise ValueError(
            f"the future-value model saved for {snapshot:%Y-%m} was fitted with other "
            f"settings (fingerprint {model.config.fingerprint()} != {cfg.fingerprint()}; "
            f"changed: {changed}); run with retrain or restore the settings")
    if model.seed != seed:
        log.info("future value: reusing a model fitted with seed %d (run seed %d)",
                 model.seed, seed)
    return model


def run_future_value(accounts: DataFrame, transactions: DataFrame, monthly_product: DataFrame,
                     features_now: DataFrame, snapshot: date, features_cfg: FeaturesConfig,
                     product_lines: list[str], cfg: FutureValueConfig, seed: int,
                     model_root: str, retrain: bool = True, stage: StageTimer = no_stage
                     ) -> tuple[DataFrame, list[MetricRow]]:
    """:func:`fit_or_load_future_value`, then score the current snapshot (:func:`score`).

    Returns:
        The scores and the metric rows of the fit (read back from the manifest when
        reusing).
    """
    training = (build_training_set(accounts, transactions, monthly_product, snapshot,
                                   features_cfg, product_lines, cfg) if retrain else None)
    model = fit_or_load_future_value(features_now.sparkSession, training, snapshot, cfg, seed,
                                     model_root, retrain=retrain, stage=stage)
    return score(model, features_now), model.metrics

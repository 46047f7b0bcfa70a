"""Scoring with a fitted future-value model: one projection (the cluster, then its
regression's prediction), no join per cluster.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvm_spark.models.future_value.model import (
    BASELINE,
    CLUSTER_NAME,
    PREDICTION,
    FutureValueModel,
)
from cvm_spark.models.future_value.training import model_values, require_columns
from cvm_spark.schemas.inputs import ACCOUNT_ID

_KEEP = "_fv_keep_"
FUTURE_COLUMNS = ["fv_cluster", "future_value"]


def add_future_value(df: DataFrame, model: FutureValueModel) -> DataFrame:
    """``df`` plus ``fv_cluster`` and ``future_value`` (see :func:`score`): one projection
    through the fitted ``PipelineModel`` (clusters, then the regressions' expression,
    :meth:`FutureValueModel.as_pipeline_model`); ``df``'s own columns are
    kept as they are (the models read the features with nulls as 0 under the same names,
    so the originals are carried aside and put back)."""
    cfg = model.config
    baseline = [cfg.baseline_column] if cfg.target == "change" else []
    require_columns(df, [ACCOUNT_ID, *cfg.input_columns, *baseline], "features to score")
    columns = cfg.model_columns  # computed from the inputs under these names
    closed = (F.coalesce(F.col("is_closed"), F.lit(False)) if "is_closed" in df.columns
              else F.lit(False))
    kept = [F.col(c).alias(f"{_KEEP}{c}") if c in columns else F.col(c) for c in df.columns]
    prepared = df.select(
        *kept, *model_values(cfg),
        *[F.coalesce(F.col(c).cast("double"), F.lit(0.0)).alias(BASELINE) for c in baseline],
        closed.alias("_fv_closed"))
    is_closed = F.col("_fv_closed")
    return model.as_pipeline_model().transform(prepared).select(
        *[F.col(f"{_KEEP}{c}").alias(c) if c in columns else F.col(c) for c in df.columns],
        F.when(~is_closed, F.col(CLUSTER_NAME)).alias("fv_cluster"),
        F.when(is_closed, F.lit(0.0)).otherwise(F.col(PREDICTION)).alias("future_value"),
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
    require_columns(features_now, needed, "features to score")
    closed = ["is_closed"] if "is_closed" in features_now.columns else []
    base = features_now.select(*dict.fromkeys([*needed, *closed]))
    return add_future_value(base, model).select(ACCOUNT_ID, *FUTURE_COLUMNS)

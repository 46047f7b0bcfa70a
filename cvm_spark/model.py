"""The value model stage of the pipeline (spec sections 4 to 7).

Joins the per-account results of every model onto the scored accounts, scales the value
components to percentiles, and derives tiers, campaign targets, the tier summary and the
model metrics. Each model lives in its own module; this one only wires them together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cvm_spark.clv import ClvFitError, fit_and_score, simple_clv_column
from cvm_spark.config import CvmConfig
from cvm_spark.credit import credit_grades
from cvm_spark.elasticity import value_elasticity
from cvm_spark.features import BTYD_COLUMNS, account_base
from cvm_spark.future_value import run_future_value
from cvm_spark.loyalty import loyalty_scores
from cvm_spark.schemas import ACCOUNT_ID, SNAPSHOT_MONTH
from cvm_spark.tiers import assign_tiers, campaign_targets, tier_summary
from cvm_spark.timing import StageTimer, no_stage
from cvm_spark.value import (
    contribution_value,
    current_and_historical,
    influence_value,
    percentile_scale,
)

log = logging.getLogger(__name__)

MetricRow = tuple[str, str, str, float]
METRICS_SCHEMA = T.StructType([
    T.StructField("model", T.StringType()), T.StructField("scope", T.StringType()),
    T.StructField("metric", T.StringType()), T.StructField("value", T.DoubleType()),
])
CLV_MODEL_COLUMNS = ["expected_purchases", "prob_alive", "expected_avg_value", "clv_discounted"]
SCALED = ["historical_value", "current_value", "influence_value", "future_value"]


@dataclass
class ModelOutputs:
    """DataFrames of the model stage (``scores`` is persisted: call :meth:`unpersist`)."""

    value_scores: DataFrame
    tiers: DataFrame
    campaign_targets: DataFrame
    tier_summary: DataFrame
    model_metrics: DataFrame
    cached: list[DataFrame]

    def unpersist(self) -> None:
        for df in self.cached:
            df.unpersist()


def metrics_frame(spark: SparkSession, rows: list[MetricRow], snapshot: date,
                  run_id: str) -> DataFrame:
    """The model_metrics rows of a run as a DataFrame."""
    clean = [(str(m), str(s), str(k), None if v is None else float(v)) for m, s, k, v in rows]
    return spark.createDataFrame(clean, METRICS_SCHEMA).select(
        F.lit(snapshot).alias(SNAPSHOT_MONTH), F.lit(run_id).alias("run_id"),
        "model", "scope", "metric", "value")


def lifetime_value(features: DataFrame, cfg: CvmConfig) -> tuple[DataFrame, list[MetricRow]]:
    """BG/NBD + Gamma-Gamma CLV; a fit that cannot be used is reported, never used.

    When a fit does not converge or gives unusable parameters, the run goes on: the model
    columns are null for every account, the simple CLV is still computed, the error is
    logged and ``("clv", "all", "usable", 0)`` goes to model_metrics with the fit's own rows.
    """
    btyd = features.select(ACCOUNT_ID, *BTYD_COLUMNS)
    try:
        scores, metrics = fit_and_score(btyd, cfg.clv)
        return scores, [*metrics, ("clv", "all", "usable", 1.0)]
    except ClvFitError as exc:
        log.error("lifetime value: the probabilistic model is not used: %s", exc)
        nulls = [F.lit(None).cast("double").alias(c) for c in CLV_MODEL_COLUMNS]
        scores = btyd.select(ACCOUNT_ID, simple_clv_column(cfg.clv).alias("clv_simple"), *nulls)
        return scores, [*exc.metrics, ("clv", "all", "usable", 0.0)]


def run_value_model(spark: SparkSession, cfg: CvmConfig, accepted: dict[str, DataFrame],
                    features: DataFrame, rfm: DataFrame, run_id: str,
                    model_root: str, retrain: bool = True,
                    stage: StageTimer = no_stage) -> ModelOutputs:
    """Compute every model output for ``cfg.snapshot``.

    Args:
        accepted: accepted input rows per table.
        features: the snapshot's features (persisted by the caller), with BTYD columns.
        rfm: the snapshot's RFM scores (account_id, segment, ...).
        run_id: recorded in model_metrics.
        model_root: where fitted models are saved and loaded (versioned by snapshot).
        retrain: fit the future-value models (else reuse the saved ones).
        stage: wraps each step that runs Spark jobs (``loyalty``, ``future_value_training``,
            ``kmeans``, ``regression``, ``bgnbd``, ``value_components``, ``tiers``); Spark is
            lazy, so each step is where its jobs actually run. What is left (the tier rows
            and the value scores) runs in the writes.
    """
    snapshot = cfg.snapshot
    tm, vm = cfg.features.trend_months, cfg.features.volatility_months
    trend_col, vol_col = f"income_trend_{tm}m", f"income_volatility_{vm}m"
    arpu_col = f"arpu_{max(cfg.features.windows)}m"
    base = account_base(accepted["accounts"], snapshot)
    values = current_and_historical(accepted["monthly_product"], base, snapshot, cfg.value)
    influence = influence_value(accepted["relations"], accepted["transactions"],
                                values.select(ACCOUNT_ID, "current_value"), snapshot, cfg.value)
    credit = credit_grades(accepted["credit"], snapshot, cfg.credit)
    with stage("loyalty"):
        loyalty, loyalty_metrics = loyalty_scores(features, cfg.loyalty, cfg.run_seed)
    elasticity = value_elasticity(accepted["monthly_product"], accepted["marketing"], snapshot,
                                  cfg.elasticity)
    future, fv_metrics = run_future_value(
        accepted["accounts"], accepted["transactions"], accepted["monthly_product"], features,
        snapshot, cfg.features, cfg.validation.product_lines, cfg.future_value,
        seed=cfg.run_seed, model_root=model_root, retrain=retrain, stage=stage)
    with stage("bgnbd"):
        clv, clv_metrics = lifetime_value(features, cfg)

    undefined = cfg.elasticity.labels.undefined
    joined = (features.select(SNAPSHOT_MONTH, ACCOUNT_ID, "tenure_months", "recency_days",
                              "is_closed", trend_col, vol_col, arpu_col)
              .join(values, on=ACCOUNT_ID, how="left")
              .join(influence, on=ACCOUNT_ID, how="left")
              .join(future, on=ACCOUNT_ID, how="left")
              .join(credit, on=ACCOUNT_ID, how="left")
              .join(loyalty, on=ACCOUNT_ID, how="left")
              .join(elasticity, on=ACCOUNT_ID, how="left")
              .join(clv, on=ACCOUNT_ID, how="left"))
    # Materialised once: the percentile cut points, the tiers and every write read it.
    joined = joined.select(
        *[c for c in joined.columns if c != "elasticity_class"],
        F.coalesce(F.col("elasticity_class"), F.lit(undefined)).alias("elasticity_class")
    ).persist()
    group_cols = [f"current_value_{g}" for g in cfg.value.product_groups]
    with stage("value_components"):  # the first percentile aggregate fills the cache
        scaled = percentile_scale(joined, SCALED + group_cols, cfg.value.percentile_points)
        scored = scaled.select("*", contribution_value(cfg.value).alias("contribution_value"))
        scores = percentile_scale(scored, ["contribution_value"], cfg.value.percentile_points)

    tier_input = scores.select(*[c for c in scores.columns if c != "credit_grade"],
                               F.col(cfg.tiers.credit_grade_column).alias("credit_grade"))
    with stage("tiers"):
        tiers = assign_tiers(tier_input, cfg.tiers, trend_col, arpu_col, vol_col).persist()
    campaign_input = scores.join(
        tiers.select(ACCOUNT_ID, "abc_class", "value_level", "lifecycle_stage", "tier",
                     "value_risk_label", "value_growth_label"), on=ACCOUNT_ID, how="inner")
    targets = campaign_targets(campaign_input, cfg.tiers)
    summary = tier_summary(tiers, rfm, scores)
    value_cols = [c for c in scores.columns
                  if c not in ("tenure_months", "recency_days", "is_closed", trend_col, vol_col,
                               arpu_col)]
    metrics = metrics_frame(spark, fv_metrics + loyalty_metrics + clv_metrics, snapshot,
                            run_id)
    return ModelOutputs(value_scores=scores.select(*value_cols), tiers=tiers,
                        campaign_targets=targets, tier_summary=summary, model_metrics=metrics,
                        cached=[joined, tiers])

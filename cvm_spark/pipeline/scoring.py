"""The value model stage of the pipeline (spec sections 4 to 7).

Fits every model, then builds one per-account frame and derives every output table from it.
Each model lives in its own module as a fit (a few aggregates or Spark ML fits, small
numbers to the driver) and a scoring projection; this module only wires them together:

1. **Fits** on the (materialised) features: RFM cut points (given by the pipeline),
   loyalty (standardisation, PCA per dimension, entropy weights, band cuts), future value
   (training set, KMeans, per-cluster regressions), BG/NBD + Gamma-Gamma.
2. **One frame per account**: the features' columns the models read, with the scoring
   projections of loyalty, future value, lifetime value and the RFM segment added as
   columns (no join), then the four aggregates over other inputs joined on ``account_id``:
   current and historical value, influence, credit grades, elasticity. It is materialised
   once (:class:`cvm_spark.storage.workarea.WorkArea`): every later plan starts from its files.
3. **Scales and tiers**: percentiles of the value components (one aggregate), the
   contribution value, its percentile and the ABC cut points (one aggregate), the ABC
   bucket sums (one aggregate), then tiers, stages and matrices as a projection, again
   materialised once.
4. **Outputs** are projections of that frame (value_scores, tiers), an explode of it
   (campaign_targets) and an aggregate of it (tier_summary); their columns are declared
   in :mod:`cvm_spark.storage.tables`, which the runner checks every write against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cvm_spark.common.cuts import quantiles
from cvm_spark.common.threads import side_by_side
from cvm_spark.common.timing import StageTimer, no_stage
from cvm_spark.config import CvmConfig
from cvm_spark.features.rfm import RfmCuts, rfm_scores, rfm_segment
from cvm_spark.features.windows import BTYD_COLUMNS
from cvm_spark.models.btyd import ClvFitError
from cvm_spark.models.clv import CLV_COLUMNS, ClvModel, add_clv, fit_clv, simple_clv_column
from cvm_spark.models.credit import credit_grades
from cvm_spark.models.elasticity import ELASTICITY_COLUMNS, group_elasticity_columns
from cvm_spark.models.future_value import (
    FUTURE_COLUMNS,
    FutureValueModel,
    add_future_value,
    backtest_origins,
    fit_or_load_future_value,
    training_from_facts,
    training_partitions,
    use_btyd_spend,
)
from cvm_spark.models.loyalty import LoyaltyModel, add_loyalty, fit_loyalty, loyalty_columns
from cvm_spark.models.value import (
    PERCENTILE_ACCURACY,
    SCALED,
    contribution_money,
    contribution_value,
    future_share_columns,
    future_value_by_group,
    influence_value,
    percentile_probabilities,
    percentile_scale,
    value_columns,
)
from cvm_spark.models.weights import contribution_weight_metrics
from cvm_spark.pipeline.facts import scored_base_of
from cvm_spark.schemas.inputs import ACCOUNT_ID, SNAPSHOT_MONTH
from cvm_spark.schemas.outputs import MetricRow
from cvm_spark.segments.kpis import kpi_summary
from cvm_spark.segments.tiers import (
    TIER_COLUMNS,
    abc_accuracy,
    abc_probabilities,
    add_tiers,
    campaign_targets,
    check_rule_columns,
    fit_abc,
    tier_summary,
)
from cvm_spark.storage.tables import table_columns

log = logging.getLogger(__name__)

METRICS_SCHEMA = T.StructType([
    T.StructField("model", T.StringType()), T.StructField("scope", T.StringType()),
    T.StructField("metric", T.StringType()), T.StructField("value", T.DoubleType()),
])
CLV_MODEL_COLUMNS = ["expected_purchases", "prob_alive", "expected_avg_value", "clv_discounted"]
Materialize = Callable[[DataFrame, str], DataFrame]


@dataclass
class ModelOutputs:
    """DataFrames of the model stage (projections of the run's work area: nothing cached)."""

    value_scores: DataFrame
    tiers: DataFrame
    campaign_targets: DataFrame
    tier_summary: DataFrame
    kpi_summary: DataFrame
    model_metrics: DataFrame


def metrics_frame(spark: SparkSession, rows: list[MetricRow], snapshot: date,
                  run_id: str) -> DataFrame:
    """The model_metrics rows of a run as a DataFrame."""
    clean = [(str(m), str(s), str(k), None if v is None else float(v)) for m, s, k, v in rows]
    return spark.createDataFrame(clean, METRICS_SCHEMA).select(
        F.lit(snapshot).alias(SNAPSHOT_MONTH), F.lit(run_id).alias("run_id"),
        "model", "scope", "metric", "value")


def fit_lifetime_value(features: DataFrame, cfg: CvmConfig
                       ) -> tuple[ClvModel | None, list[MetricRow]]:
    """BG/NBD + Gamma-Gamma; a fit that cannot be used is reported, never used.

    When a fit does not converge or gives unusable parameters, the run goes on: the model
    columns are null for every account (:func:`add_lifetime_value` with None), the simple
    CLV is still computed, the error is logged and ``("clv", "all", "usable", 0)`` goes to
    model_metrics with the fit's own rows.
    """
    try:
        model = fit_clv(features, cfg.clv)
        return model, [*model.metrics, ("clv", "all", "usable", 1.0)]
    except ClvFitError as exc:
        log.error("lifetime value: the probabilistic model is not used: %s", exc)
        return None, [*exc.metrics, ("clv", "all", "usable", 0.0)]


def add_lifetime_value(df: DataFrame, model: ClvModel | None, cfg: CvmConfig) -> DataFrame:
    """``df`` (with the BTYD columns) plus the CLV columns (model columns null without a
    usable model)."""
    if model is not None:
        return add_clv(df, model.bg, model.gg, cfg.clv, pairs=model.pairs)
    return df.select("*", simple_clv_column(cfg.clv).alias("clv_simple"),
                     *[F.lit(None).cast("double").alias(c) for c in CLV_MODEL_COLUMNS])


def run_value_model(spark: SparkSession, cfg: CvmConfig, accepted: dict[str, DataFrame],
                    facts: DataFrame, rfm_cuts: RfmCuts, run_id: str,
                    model_root: str, materialize: Materialize, accounts: int,
                    k_data_start: int, retrain: bool = True,
                    stage: StageTimer = no_stage) -> ModelOutputs:
    """Compute every model output for ``cfg.snapshot``.

    Args:
        accepted: accepted input rows per table (credit and relations, and transactions for
            the radiation sums, are read here).
        facts: the snapshot's account facts (:mod:`cvm_spark.pipeline.facts`, materialised by the
            caller): the features, values, elasticity and training set are projections.
        rfm_cuts: the fitted RFM cut points (the segment is added to the model's frame).
        run_id: recorded in model_metrics.
        model_root: where fitted models are saved and loaded (versioned by snapshot).
        materialize: writes a frame once and returns it read back
            (:meth:`cvm_spark.storage.workarea.WorkArea.materialize`).
        accounts: the number of accounts (rows of the features): sizes the training frame.
        k_data_start: months back of the earliest accepted monthly fact (A0 back-fill).
        retrain: fit the future-value models (else reuse the saved ones).
        stage: wraps each step that runs Spark jobs (``model_base``, ``fits``: loyalty,
            future value with its back-test and lifetime value side by side,
            ``value_components``, ``tiers``); Spark is lazy, so each step is where its jobs
            actually run. What is left (the outputs'
            projections) runs in the writes.
    """
    trend_col, vol_col, arpu_col = _window_columns(cfg)
    # 0. the per-account columns every model reads, written once: the fits pass over them
    # several times, and derived in the same query as the scoring projections they would
    # make one generated method of ~56 KB (the JVM's limit is 64 KB) and a 1.2 MB task binary
    with stage("model_base"):
        scored_base = materialize(scored_base_of(facts, cfg, k_data_start), "model_base")
    # 1. fits; 2. one frame per account: the scoring projections
    fitted = _fit_models(spark, cfg, scored_base, facts, model_root, materialize, accounts,
                         retrain, stage)
    frame = _account_frame(scored_base, fitted, rfm_cuts, cfg)
    # 3. the aggregates of other inputs joined, the value components and their percentiles
    with stage("value_components"):
        scores, cuts = _value_components(frame, scored_base, accepted, cfg, materialize)
    with stage("tiers"):
        abc = fit_abc(scores, cfg.tiers.abc.measure, cfg.tiers, cuts=cuts["abc"])
        assigned = materialize(
            add_tiers(scores, cfg.tiers, trend_col, arpu_col, vol_col, abc,
                      credit_grade_col=cfg.tiers.credit_grade_column), "scores")
    metrics = metrics_frame(spark, fitted.metrics, cfg.snapshot, run_id)
    return ModelOutputs(value_scores=assigned.select(*table_columns("value_scores", cfg)),
                        tiers=assigned.select(*TIER_COLUMNS),
                        campaign_targets=campaign_targets(assigned, cfg.tiers),
                        tier_summary=tier_summary(assigned),
                        kpi_summary=kpi_summary(assigned, accepted, cfg),
                        model_metrics=metrics)


def check_rules(cfg: CvmConfig) -> None:
    """Every column a campaign or risk-reason condition names exists in the frame it is
    evaluated on: checked from the config alone, so ``cvm run`` and ``cvm validate-config``
    refuse a misspelt column before Spark starts.

    Raises:
        ValueError: naming the unknown columns and where they are used.
    """
    scores = [*_base_columns(cfg), *table_columns("value_scores", cfg), "segment"]
    staged = [*scores, "abc_class", "value_level", "credit_grade_used", "relative_trend",
              "arpu_class", "tier", "lifecycle_stage"]
    check_rule_columns(cfg.tiers, staged, "risk_customers")
    check_rule_columns(cfg.tiers, [*staged, *TIER_COLUMNS], "campaigns")


def _window_columns(cfg: CvmConfig) -> tuple[str, str, str]:
    """The trend, volatility and ARPU feature columns the tiers read."""
    f = cfg.features
    return (f"income_trend_{f.trend_months}m", f"income_volatility_{f.volatility_months}m",
            f"arpu_{max(f.windows_months)}m")


def _base_columns(cfg: CvmConfig) -> list[str]:
    arpu_class = [f"arpu_{cfg.tiers.arpu_class_months}m"] if cfg.tiers.arpu_classes else []
    return list(dict.fromkeys([SNAPSHOT_MONTH, ACCOUNT_ID, "tenure_months", "recency_days",
                               "is_closed", *_window_columns(cfg), *arpu_class,
                               f"income_{cfg.tiers.dormancy_months}m"]))  # dormancy guard


@dataclass(frozen=True)
class _Fitted:
    """The fitted models of a run (the CLV model is None when its fit was not usable)."""

    loyalty: LoyaltyModel
    future: FutureValueModel
    clv: ClvModel | None
    clv_metrics: list[MetricRow]

    contribution_metrics: list[MetricRow]

    @property
    def metrics(self) -> list[MetricRow]:
        return (self.future.metrics + self.loyalty.metrics + self.clv_metrics
                + self.contribution_metrics)


def _fit_models(spark: SparkSession, cfg: CvmConfig, features: DataFrame, facts: DataFrame,
                model_root: str, materialize: Materialize, accounts: int, retrain: bool,
                stage: StageTimer) -> _Fitted:
    """Loyalty weights, the future-value model (fitted or loaded) and BG/NBD + Gamma-Gamma.

    The fits read the materialised model base and facts and not each other's results: they
    run side by side (``performance.parallel_fits`` driver threads,
    :func:`cvm_spark.common.threads.side_by_side`) as one stage, ``fits``.
    """
    lines = cfg.validation.product_lines
    training = training_from_facts(facts, cfg.snapshot, cfg.features, lines, cfg.future_value)
    parallel = cfg.performance.parallel_fits
    with stage("fits"):
        loyalty, future, (clv, clv_metrics) = side_by_side([
            lambda: fit_loyalty(features, cfg.loyalty),
            lambda: fit_or_load_future_value(
                spark, training if retrain else None, cfg.snapshot, cfg.future_value,
                seed=cfg.run_seed, model_root=model_root, retrain=retrain,
                materialize=materialize, partitions=training_partitions(accounts),
                origins=backtest_origins(facts, cfg.snapshot, cfg.features, lines,
                                         cfg.future_value),
                clv_cfg=cfg.clv, parallel=parallel),
            lambda: fit_lifetime_value(features, cfg)], parallel)
    return _Fitted(loyalty, future, clv, clv_metrics, contribution_weight_metrics(cfg.value))


def _account_frame(scored_base: DataFrame, fitted: _Fitted, rfm_cuts: RfmCuts,
                   cfg: CvmConfig) -> DataFrame:
    """One row per account: the base columns, the value and elasticity columns, the
    loyalty, future-value and CLV scores and the RFM segment (projections only)."""
    needed = [*_base_columns(cfg), *cfg.loyalty.feature_columns,
              *cfg.future_value.input_columns, cfg.future_value.baseline_column,
              f"frequency_{cfg.rfm.window_months}m", f"monetary_{cfg.rfm.window_months}m",
              *BTYD_COLUMNS]
    groups = list(cfg.value.product_groups)
    own = [*value_columns(cfg.value), *ELASTICITY_COLUMNS, *group_elasticity_columns(groups)]
    frame = scored_base.select(*dict.fromkeys([*needed, *own, *future_share_columns(groups)]))
    frame = add_loyalty(frame, fitted.loyalty)
    frame = add_future_value(frame, fitted.future)
    if fitted.future.method == "btyd_spend":
        frame = use_btyd_spend(frame, fitted.clv, cfg.clv, cfg.future_value.horizon_months)
    frame = add_lifetime_value(frame, fitted.clv, cfg)
    # the scores first, in a projection of their own: the segment's rules each test them
    scores = rfm_scores(rfm_cuts, cfg.rfm)
    frame = frame.select("*", *[c.alias(f"_rfm_{name}") for name, c in scores.items()])
    segment = rfm_segment(cfg.rfm, *[F.col(f"_rfm_{name}") for name in scores])
    return frame.select(*_base_columns(cfg), *own, *loyalty_columns(cfg.loyalty),
                        *FUTURE_COLUMNS, *future_value_by_group(groups), *CLV_COLUMNS,
                        segment.alias("segment"))


def _value_components(frame: DataFrame, scored_base: DataFrame,
                      accepted: dict[str, DataFrame], cfg: CvmConfig,
                      materialize: Materialize) -> tuple[DataFrame, dict[str, list[float]]]:
    """Influence and credit joined to the account frame, the percentile-scaled value
    components and the contribution value; returns (scores, contribution cut points)."""
    influence = influence_value(accepted["relations"], accepted["transactions"],
                                scored_base.select(ACCOUNT_ID, "current_value"), cfg.snapshot,
                                cfg.value)
    credit = credit_grades(accepted["credit"], cfg.snapshot, cfg.credit)
    undefined = cfg.elasticity.labels.undefined
    joined = (frame.join(influence, on=ACCOUNT_ID, how="left")
              .join(credit, on=ACCOUNT_ID, how="left"))
    group_cols = [f"{part}_{g}" for part in ("current_value", "future_value")
                  for g in cfg.value.product_groups]
    classes = ["elasticity_class", *[f"elasticity_class_{g}" for g in cfg.value.product_groups]]
    value_cols = table_columns("value_scores", cfg)
    raw_value_cols = value_cols[:value_cols.index(f"{SCALED[0]}_pct")]
    inputs = materialize(joined.select(
        *[F.coalesce(F.col(c), F.lit(undefined)).alias(c) if c in classes
          else F.col(c) for c in dict.fromkeys([*_base_columns(cfg), *raw_value_cols,
                                                "segment"])]), "model_inputs")
    bottom = cfg.value.no_evidence_rank == "bottom"    # no evidence (0) ranks lowest
    scaled = percentile_scale(inputs, SCALED + group_cols, cfg.value.percentile_points,
                              zero_at_bottom=bottom)
    # written once: the contribution's cut points and the tiers both read it, and the
    # percentile projections of a dozen columns and the tier rules in one generated
    # method outgrow the JVM's 64 KB limit (codegen then falls back to interpreting)
    scored = materialize(
        scaled.select("*", contribution_value(cfg.value).alias("contribution_value"),
                      contribution_money(cfg.value).alias("contribution_money")),
        "scored")
    # the contribution's percentile and ABC cut points: one aggregate (the same
    # expression when both use the same points, which Spark then computes once)
    cuts = _contribution_cuts(scored, cfg)
    scores = percentile_scale(scored, ["contribution_value"], cfg.value.percentile_points,
                              cuts={"contribution_value": cuts["pct"]}, zero_at_bottom=bottom)
    return scores, cuts


def _contribution_cuts(scored: DataFrame, cfg: CvmConfig) -> dict[str, list[float]]:
    """Cut points of the contribution value for its percentile and of the ABC measure
    (``tiers.abc.measure``) for the ABC classes, in one aggregate."""
    value: Column = F.col("contribution_value")
    row = scored.agg(
        quantiles(value, percentile_probabilities(cfg.value.percentile_points),
                  PERCENTILE_ACCURACY).alias("pct"),
        quantiles(F.col(cfg.tiers.abc.measure), abc_probabilities(cfg.tiers),
                  abc_accuracy(cfg.tiers)).alias("abc"),
    ).first()
    assert row is not None
    return {k: [float(x) for x in (row[k] or [])] for k in ("pct", "abc")}


"""Classes, stages, tiers, matrices and campaign targets (spec section 7).

All inputs are per-account score columns (value components and their 0..100 percentiles,
loyalty band, credit grade, features). Rules and labels come from ``TiersConfig``; see
docs/model.md for the decision tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cvm_spark.common.cuts import CutPoints, Search, bucketize, quantiles
from cvm_spark.config import CampaignCondition, QuadrantConfig, TierRule, TiersConfig
from cvm_spark.schemas.inputs import ACCOUNT_ID, SNAPSHOT_MONTH
from cvm_spark.schemas.outputs import LIFECYCLE_STAGES
from cvm_spark.segments.tier_rules import DAYS_PER_MONTH, guard_inactive, rule_match, tier_reason


@dataclass(frozen=True)
class AbcFit:
    """Where classes A and B start among the cut points of the ABC measure
    (:func:`fit_abc`)."""

    cuts: CutPoints
    a_start: int   # buckets >= a_start are A
    b_start: int   # buckets >= b_start (and < a_start) are B
    measure: str          # the column the classes are cut on (tiers.abc.measure)


def abc_bucket_column(abc_cuts: CutPoints, value: str, search: Search | None) -> Column:
    """The number of cut points below the account's value (0 for a null value)."""
    return F.coalesce(abc_cuts.below(F.col(value), search), F.lit(0))


def _abc_starts(sums: dict[int, float], cfg: TiersConfig) -> tuple[int, int]:
    """Bucket indices where classes A and B start, from the value summed per bucket.

    Accumulated from the top: a bucket is A while the value above it is below ``a_share`` of
    the total, so the bucket that crosses the line is A (Pareto: "the accounts making up the
    top 80%").
    """
    points = cfg.abc.points
    total = sum(v for v in sums.values() if v > 0)
    if total <= 0:
        return points + 1, points + 1          # nothing of value: every account is C
    a_start = b_start = points + 1
    above = 0.0
    for bucket in sorted(sums, reverse=True):
        if above / total < cfg.abc.a_share:
            a_start = bucket
        elif above / total < cfg.abc.b_share:
            b_start = bucket
        above += max(sums[bucket], 0.0)
    return a_start, min(b_start, a_start)


def abc_probabilities(cfg: TiersConfig) -> list[float]:
    """The quantile levels of the ABC cut points (``abc.points - 1`` of them)."""
    points = cfg.abc.points
    return [i / points for i in range(1, points)]


def abc_accuracy(cfg: TiersConfig) -> int:
    return 10 * cfg.abc.points


def fit_abc(df: DataFrame, value: str, cfg: TiersConfig,
            cuts: list[float] | None = None) -> AbcFit:
    """Pareto classes on ``value``: cut points, then the value summed per bucket (one
    aggregate each; at most ``abc.points`` numbers reach the driver; no global sort).

    Args:
        cuts: the ``abc.points - 1`` approximate quantiles of ``value``
            (:func:`abc_probabilities`, :func:`abc_accuracy`) when already computed in
            another aggregate; computed here otherwise.
    """
    if cuts is None:
        row = df.agg(quantiles(F.col(value), abc_probabilities(cfg),
                               abc_accuracy(cfg)).alias("c")).first()
        cuts = [float(x) for x in (row.c or [])] if row is not None else []
    cut_points = CutPoints(cuts)
    out, searches = bucketize(df, {value: cut_points})
    bucket = abc_bucket_column(cut_points, value, searches.get(value))
    sums = {int(r["b"]): float(r["s"] or 0.0)
            for r in out.groupBy(bucket.alias("b")).agg(F.sum(value).alias("s")).collect()}
    a_start, b_start = _abc_starts(sums, cfg)
    return AbcFit(cut_points, a_start, b_start, value)


def _pick(rules: list[TierRule], attr: str) -> Column:
    return F.coalesce(*[F.when(F.col("tier") == r.name, F.lit(getattr(r, attr)))
                        for r in rules])


def _quadrant(key: Column, quad: QuadrantConfig, part: str) -> Column:
    mapping = getattr(quad, part)
    return F.coalesce(*[F.when(key == k, F.lit(v)) for k, v in mapping.items()])


def lifecycle_stage(cfg: TiersConfig, trend_col: str, volatility_col: str) -> Column:
    """Stage from closure, tenure, recency, relative income trend and volatility.

    Order (first match): dormant, potential, new, churn_risk, fluctuating, growing, stable
    (the names: :data:`cvm_spark.schemas.outputs.LIFECYCLE_STAGES`).
    """
    potential, new, growing, stable, fluctuating, churn_risk, dormant = LIFECYCLE_STAGES
    lc = cfg.lifecycle
    recency = F.col("recency_days")
    trend = F.col("relative_trend")
    vol = F.col(volatility_col)
    young = F.col("tenure_months") < lc.new_months
    inactive = recency.isNull() | (recency > lc.dormant_months * DAYS_PER_MONTH)
    return (F.when(F.col("is_closed") | (~young & inactive), F.lit(dormant))
            .when(recency.isNull(), F.lit(potential))
            .when(young, F.lit(new))
            .when((recency > lc.churn_risk_days) | (trend <= lc.churn_risk_trend),
                  F.lit(churn_risk))
            .when(vol >= lc.fluctuating_volatility, F.lit(fluctuating))
            .when(trend >= lc.growing_trend, F.lit(growing))
            .otherwise(F.lit(stable)))


def arpu_class(cfg: TiersConfig, arpu_col: str) -> Column:
    """The ARPU contribution class (``tiers.arpu_classes``, first class whose ``min_arpu``
    the ARPU reaches); null without classes or without an ARPU (never open in the window)."""
    classes = cfg.arpu_classes
    if not classes:
        return F.lit(None).cast("string")
    arpu = F.col(arpu_col)
    rest = F.lit(classes[-1].label)
    out: Column | None = None
    for c in classes[:-1]:
        hit = arpu >= F.lit(c.min_arpu)
        out = F.when(hit, F.lit(c.label)) if out is None else out.when(hit, F.lit(c.label))
    return F.when(arpu.isNotNull(), rest if out is None else out.otherwise(rest))


def risk_reasons(cfg: TiersConfig) -> Column:
    """The names of the ``tiers.risk_customers.reasons`` whose conditions all hold, joined
    by ``"; "`` in config order; null when none holds."""
    reasons = cfg.risk_customers.reasons
    if not reasons:
        return F.lit(None).cast("string")
    joined = F.concat_ws("; ", *[F.when(_all_hold(r.conditions), F.lit(r.name))
                                 for r in reasons])
    return F.when(joined != "", joined)


def check_rule_columns(cfg: TiersConfig, columns: list[str], rules: str) -> None:
    """Every column the conditions of ``rules`` (``campaigns`` or ``risk_customers``) name
    must be one of ``columns``.

    Raises:
        ValueError: naming the unknown columns and where they are used.
    """
    where, named = (("tiers.campaigns", cfg.campaigns) if rules == "campaigns"
                    else ("tiers.risk_customers.reasons", cfg.risk_customers.reasons))
    missing = sorted({c.column for r in named for c in r.conditions} - set(columns))
    if missing:
        raise ValueError(f"{where} refer to unknown column(s) {missing}")


TIER_COLUMNS = [
    SNAPSHOT_MONTH, ACCOUNT_ID, "contribution_value", "contribution_value_pct",
    "contribution_money", "abc_class",
    "value_level", "lifecycle_stage", "arpu_class", "tier", "tier_label_en", "tier_label_zh",
    "contact_channel", "service_level", "tier_reason", "risk_reasons", "risk_customer",
    "value_risk_quadrant", "value_risk_label", "value_risk_strategy", "value_growth_quadrant",
    "value_growth_label", "value_growth_strategy",
]
# the tiers' columns that are not strings
TIER_TYPES = {SNAPSHOT_MONTH: "date", "contribution_value": "double",
              "contribution_value_pct": "double", "contribution_money": "double",
              "risk_customer": "boolean"}


def add_tiers(scores: DataFrame, cfg: TiersConfig, trend_col: str, arpu_col: str,
              volatility_col: str, abc: AbcFit, credit_grade_col: str = "credit_grade",
              arpu_class_col: str | None = None) -> DataFrame:
    """``scores`` plus the tiers table's columns (and ``credit_grade_used``,
    ``relative_trend``): one projection with the fitted ABC buckets.

    Args:
        scores: one row per account with snapshot_month, account_id, contribution_value,
            contribution_value_pct, current_value_pct, loyalty_band, ``credit_grade_col``,
            tenure_months, recency_days, is_closed, ``income_<tiers.dormancy_months>m`` (the
            dormancy guard) and the trend/ARPU/volatility columns.
        trend_col, arpu_col, volatility_col: feature columns used for the relative income
            trend (trend / ARPU, per month) and volatility.
        abc: :func:`fit_abc` on ``scores``' contribution value.
        credit_grade_col: the grade the tier rules read (``tiers.credit_grade_column``).
        arpu_class_col: the ARPU the ARPU classes read (default
            ``arpu_<tiers.arpu_class_months>m``).
    """
    arpu_class_col = arpu_class_col or f"arpu_{cfg.arpu_class_months}m"
    out, searches = bucketize(scores, {abc.measure: abc.cuts})
    bucket = abc_bucket_column(abc.cuts, abc.measure, searches.get(abc.measure))
    df = out.select(*scores.columns, bucket.alias("_bucket"))
    pct = F.col("contribution_value_pct")
    base = df.select(
        "*",
        F.when(F.col("_bucket") >= abc.a_start, F.lit("A"))
        .when(F.col("_bucket") >= abc.b_start, F.lit("B")).otherwise(F.lit("C"))
        .alias("abc_class"),
        F.when(pct >= cfg.high_value_pct, F.lit("high"))
        .when(pct >= cfg.medium_value_pct, F.lit("medium")).otherwise(F.lit("low"))
        .alias("value_level"),
        F.coalesce(F.col(credit_grade_col), F.lit(cfg.no_credit_grade))
        .alias("credit_grade_used"),
        guard_inactive(cfg, f"income_{cfg.dormancy_months}m").alias("_inactive"),
        F.try_divide(F.col(trend_col), F.col(arpu_col)).alias("relative_trend"),
        arpu_class(cfg, arpu_class_col).alias("arpu_class"),
    )
    rules = cfg.tiers
    tier = F.coalesce(*[F.when(rule_match(r, cfg), F.lit(r.name)) for r in rules])
    staged = base.select("*", tier.alias("tier"),
                         lifecycle_stage(cfg, trend_col, volatility_col).alias("lifecycle_stage"))
    check_rule_columns(cfg, staged.columns, "risk_customers")
    staged = staged.select("*", risk_reasons(cfg).alias("risk_reasons"))
    at_risk = F.col("risk_reasons").isNotNull()
    risk_key = F.concat(F.when(F.col("value_level") == "high", F.lit("high"))
                        .otherwise(F.lit("low")), F.lit("_value_"),
                        F.when(F.col("credit_grade_used").isin(cfg.risky_credit_grades)
                               | at_risk, F.lit("high_risk")).otherwise(F.lit("low_risk")))
    growth_key = F.concat(F.when(F.col("current_value_pct") >= cfg.medium_value_pct,
                                 F.lit("high")).otherwise(F.lit("low")), F.lit("_value_"),
                          F.when(F.coalesce(F.col("relative_trend"), F.lit(0.0))
                                 > cfg.growth_trend, F.lit("high_growth"))
                          .otherwise(F.lit("low_growth")))
    assert cfg.value_risk is not None and cfg.value_growth is not None
    return staged.select(
        *scores.columns, "abc_class", "value_level", "credit_grade_used", "relative_trend",
        "lifecycle_stage", "arpu_class", "tier",
        _pick(rules, "label_en").alias("tier_label_en"),
        _pick(rules, "label_zh").alias("tier_label_zh"),
        _pick(rules, "channel").alias("contact_channel"),
        _pick(rules, "service_level").alias("service_level"),
        tier_reason(cfg).alias("tier_reason"),
        "risk_reasons",
        (F.col("value_level").isin(cfg.risk_customers.value_levels) & at_risk)
        .alias("risk_customer"),
        risk_key.alias("value_risk_quadrant"),
        _quadrant(risk_key, cfg.value_risk, "labels").alias("value_risk_label"),
        _quadrant(risk_key, cfg.value_risk, "strategies").alias("value_risk_strategy"),
        growth_key.alias("value_growth_quadrant"),
        _quadrant(growth_key, cfg.value_growth, "labels").alias("value_growth_label"),
        _quadrant(growth_key, cfg.value_growth, "strategies").alias("value_growth_strategy"),
    )


def assign_tiers(scores: DataFrame, cfg: TiersConfig, trend_col: str, arpu_col: str,
                 volatility_col: str) -> DataFrame:
    """ABC class, value level, lifecycle stage, tier with channel/service/labels, matrices.

    :func:`fit_abc` then :func:`add_tiers`; ``scores`` is read three times (cut points,
    bucket sums, the tiers).

    Returns:
        The tiers table columns (:data:`TIER_COLUMNS`).
    """
    abc = fit_abc(scores, cfg.abc.measure, cfg)
    return add_tiers(scores, cfg, trend_col, arpu_col, volatility_col, abc).select(
        *TIER_COLUMNS)


def _all_hold(conditions: list[CampaignCondition]) -> Column:
    match = F.lit(True)
    for cond in conditions:
        match = match & _condition(cond)
    return match


def _condition(cond: CampaignCondition) -> Column:
    c = F.col(cond.column)
    ops = {
        "<": lambda: c < cond.value, "<=": lambda: c <= cond.value,
        ">": lambda: c > cond.value, ">=": lambda: c >= cond.value,
        "==": lambda: c == cond.value, "!=": lambda: c != cond.value,
        "in": lambda: c.isin(cond.value), "not_in": lambda: ~c.isin(cond.value),
        "is_null": lambda: c.isNull(), "not_null": lambda: c.isNotNull(),
    }
    return F.coalesce(ops[cond.op](), F.lit(False))


def campaign_targets(scores: DataFrame, cfg: TiersConfig) -> DataFrame:
    """One row per account and campaign whose conditions all hold, with the reason.

    All campaigns are evaluated in one pass: an array of matching (campaign, reason) structs
    per account, exploded.
    """
    check_rule_columns(cfg, scores.columns, "campaigns")
    if not cfg.campaigns:
        return scores.select(SNAPSHOT_MONTH, ACCOUNT_ID, F.lit(None).cast("string")
                             .alias("campaign"), F.lit(None).cast("string").alias("reason")
                             ).where(F.lit(False))
    entries = []
    for rule in cfg.campaigns:
        match = _all_hold(rule.conditions)
        detail = F.concat_ws("; ", *[F.concat(F.lit(f"{c.column}="),
                                               F.coalesce(F.col(c.column).cast("string"),
                                                          F.lit("null")))
                                      for c in rule.conditions])
        entries.append(F.when(match, F.struct(F.lit(rule.name).alias("campaign"),
                                               F.concat(F.lit(rule.reason + " ("), detail,
                                                        F.lit(")")).alias("reason"))))
    exploded = scores.select(SNAPSHOT_MONTH, ACCOUNT_ID,
                             F.explode(F.array_compact(F.array(*entries))).alias("t"))
    return exploded.select(SNAPSHOT_MONTH, ACCOUNT_ID, F.col("t.campaign").alias("campaign"),
                           F.col("t.reason").alias("reason"))


def tier_summary(assigned: DataFrame) -> DataFrame:
    """Per snapshot x tier x RFM segment x ABC class: accounts, total and mean values, and
    the row's share of the snapshot's accounts and contribution money (a tier's share is the
    sum over its rows).

    Args:
        assigned: one row per account with the tier columns (:func:`add_tiers`), ``segment``,
            ``contribution_value``, ``contribution_money``, ``current_value`` and
            ``future_value``.
    """
    rows = assigned.groupBy(SNAPSHOT_MONTH, "tier", "tier_label_en", "tier_label_zh",
                            "segment", "abc_class").agg(
        F.count(F.lit(1)).alias("accounts"),
        F.sum("contribution_value").alias("total_contribution_value"),
        F.avg("contribution_value").alias("mean_contribution_value"),
        F.sum("contribution_money").alias("total_contribution_money"),
        F.avg("contribution_money").alias("mean_contribution_money"),
        F.sum("current_value").alias("total_current_value"),
        F.avg("current_value").alias("mean_current_value"),
        F.sum("future_value").alias("total_future_value"),
    )
    # the snapshot's totals over its few summary rows (tiers x segments x classes)
    snapshot = Window.partitionBy(SNAPSHOT_MONTH).rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing)
    return rows.select(
        "*",
        (F.col("accounts") / F.sum("accounts").over(snapshot)).alias("share_of_accounts"),
        F.try_divide(F.col("total_contribution_money"),
                     F.sum("total_contribution_money").over(snapshot))
        .alias("share_of_contribution_money"),
    )


def tier_counts(cfg: TiersConfig) -> dict[str, Column]:
    """Rows per tier (aggregates observed while the tiers table is written)."""
    return {rule.name: F.count_if(F.col("tier") == F.lit(rule.name)) for rule in cfg.tiers}

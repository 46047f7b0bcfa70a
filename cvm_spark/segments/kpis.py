"""Company-level KPIs (spec section 9; seed 000): the ``kpi_summary`` table.

Acquisition (客户获取成本, CAC), from ``accounts.acquisition_cost``:

* per acquisition channel and acquisition month (the month the account opened):
  ``new_accounts`` and ``cac`` = the mean acquisition cost of the accounts with a known cost;
* per acquisition channel, per value tier and over all accounts: ``cac``, ``clv`` (the mean
  lifetime value: discounted BG/NBD x Gamma-Gamma CLV, the simple CLV where that is null),
  ``clv_cac_ratio`` = ``clv / cac`` and ``payback_months`` = ``cac`` / the mean monthly
  contribution (current value over ``value.current_months`` months; null when that is not
  positive: the cost is never paid back at today's profit), all over the accounts with a
  known cost, and ``accounts``.

Satisfaction (客户满意度, 净推荐值), from the optional ``surveys`` input: the responses of the
last ``kpi.survey_months`` months up to the snapshot month end, of the accounts scored in the
snapshot, per value tier, RFM segment, lifecycle stage and overall: ``responses``, ``csat``
= the mean CSAT (1..5) over the responses that answer it, and ``nps`` = 100 x (share of 9-10
- share of 0-6) of the likelihood-to-recommend answers (-100..100).

Every row carries ``base``, the number of accounts behind the figure, and ``small_group``
(``base < kpi.min_group_size``): small groups are flagged, not hidden. One ``GROUPING SETS``
aggregate computes every group; the table is long (one row per group and KPI) so BI tools
filter it by ``dimension`` and ``kpi``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.months import add_months, month_end
from cvm_spark.config import CvmConfig
from cvm_spark.schemas.inputs import ACCOUNT_ID, SNAPSHOT_MONTH

KPI_COLUMNS = [SNAPSHOT_MONTH, "dimension", "group_name", "period_month", "kpi", "value",
               "base", "small_group"]
UNKNOWN = "(unknown)"
ALL = "all"
# grouping sets over (snapshot_month, acquisition_channel, acquisition_month, tier), by
# grouping_id() (snapshot_month is always grouped on):
# a bit is set for each column NOT grouped on (channel = 4, month = 2, tier = 1)
_DIMENSIONS = {1: "acquisition_channel_month", 3: "acquisition_channel", 6: "tier", 7: ALL}
# and over (snapshot_month, tier, segment, lifecycle_stage) for the survey KPIs
_SURVEY_DIMENSIONS = {3: "tier", 5: "segment", 6: "lifecycle_stage", 7: ALL}


def kpi_inputs(assigned: DataFrame, accounts: DataFrame, cfg: CvmConfig) -> DataFrame:
    """One row per scored account: snapshot month, tier, acquisition channel, acquisition
    month, acquisition cost, CLV and monthly contribution (``assigned`` joined to the
    accepted accounts on the key)."""
    acquired = accounts.select(ACCOUNT_ID, "acquisition_channel", "acquisition_cost",
                               F.trunc("open_date", "month").alias("acquisition_month"))
    return assigned.select(
        SNAPSHOT_MONTH, ACCOUNT_ID, "tier",
        F.coalesce(F.col("clv_discounted"), F.col("clv_simple")).alias("clv"),
        (F.col("current_value") / F.lit(float(cfg.value.current_months)))
        .alias("monthly_contribution"),
    ).join(acquired, on=ACCOUNT_ID, how="left")


def _kpi(name: str, value: Column, base: Column) -> Column:
    return F.struct(F.lit(name).alias("kpi"), value.cast("double").alias("value"),
                    base.cast("long").alias("base"))


def acquisition_kpis(inputs: DataFrame, cfg: CvmConfig) -> DataFrame:
    """The acquisition rows of ``kpi_summary`` (:data:`KPI_COLUMNS`) from
    :func:`kpi_inputs`."""
    channel = F.coalesce(F.col("acquisition_channel"), F.lit(UNKNOWN))
    costed = F.col("acquisition_cost").isNotNull()
    grouped = inputs.select(SNAPSHOT_MONTH, channel.alias("channel"), "acquisition_month",
                            "tier", "acquisition_cost",
                            F.when(costed, F.col("clv")).alias("clv"),
                            F.when(costed, F.col("monthly_contribution")).alias("monthly"))
    sums = grouped.groupingSets(
        [[SNAPSHOT_MONTH, "channel", "acquisition_month"], [SNAPSHOT_MONTH, "channel"],
         [SNAPSHOT_MONTH, "tier"], [SNAPSHOT_MONTH]],
        SNAPSHOT_MONTH, "channel", "acquisition_month", "tier",
    ).agg(F.grouping_id().alias("gid"),
          F.count(F.lit(1)).alias("accounts"),
          F.count("acquisition_cost").alias("costed"),
          F.avg("acquisition_cost").alias("cac"),
          F.avg("clv").alias("clv"),
          F.avg("monthly").alias("monthly"))
    cac, clv, monthly = F.col("cac"), F.col("clv"), F.col("monthly")
    costed_n, accounts = F.col("costed"), F.col("accounts")
    gid = F.col("gid")
    by_month = gid == F.lit(1)
    kpis = F.when(by_month, F.array(_kpi("new_accounts", accounts, accounts),
                                    _kpi("cac", cac, costed_n))).otherwise(F.array(
        _kpi("accounts", accounts, accounts),
        _kpi("cac", cac, costed_n),
        _kpi("clv", clv, costed_n),
        _kpi("clv_cac_ratio", F.when(cac > 0, clv / cac), costed_n),
        _kpi("payback_months", F.when(monthly > 0, cac / monthly), costed_n)))
    dimension = F.coalesce(*[F.when(gid == F.lit(g), F.lit(d)) for g, d in _DIMENSIONS.items()])
    group = (F.when(gid.isin(1, 3), F.col("channel"))
             .when(gid == F.lit(6), F.col("tier")).otherwise(F.lit(ALL)))
    rows = sums.select(SNAPSHOT_MONTH, dimension.alias("dimension"),
                       group.alias("group_name"),
                       F.when(by_month, F.col("acquisition_month")).alias("period_month"),
                       F.explode(kpis).alias("k"))
    return rows.select(SNAPSHOT_MONTH, "dimension", "group_name", "period_month", "k.kpi",
                       "k.value", "k.base",
                       (F.col("k.base") < F.lit(cfg.kpi.min_group_size)).alias("small_group"))


def survey_kpis(assigned: DataFrame, surveys: DataFrame, cfg: CvmConfig) -> DataFrame:
    """The satisfaction rows of ``kpi_summary`` (:data:`KPI_COLUMNS`): ``responses``,
    ``csat`` and ``nps`` per tier, RFM segment, lifecycle stage and overall, from the
    accepted survey responses of the last ``kpi.survey_months`` months."""
    start = add_months(cfg.snapshot, -(cfg.kpi.survey_months - 1))
    responses = surveys.where(F.col("survey_date").between(F.lit(start),
                                                           F.lit(month_end(cfg.snapshot))))
    joined = responses.select(ACCOUNT_ID, "csat", "recommend").join(
        assigned.select(SNAPSHOT_MONTH, ACCOUNT_ID, "tier", "segment", "lifecycle_stage"),
        on=ACCOUNT_ID, how="inner")
    recommend = F.col("recommend")
    sums = joined.groupingSets(
        [[SNAPSHOT_MONTH, "tier"], [SNAPSHOT_MONTH, "segment"],
         [SNAPSHOT_MONTH, "lifecycle_stage"], [SNAPSHOT_MONTH]],
        SNAPSHOT_MONTH, "tier", "segment", "lifecycle_stage",
    ).agg(F.grouping_id().alias("gid"),
          F.count(F.lit(1)).alias("responses"),
          F.count("csat").alias("csat_n"), F.avg("csat").alias("csat"),
          F.count(recommend).alias("nps_n"),
          # null, not a division by zero, for a group whose responses all lack the
          # recommend answer (a small tier)
          F.try_divide(F.lit(100.0) * (F.count_if(recommend >= 9) - F.count_if(recommend <= 6)),
                       F.count(recommend)).alias("nps"))
    gid = F.col("gid")
    dimension = F.coalesce(*[F.when(gid == F.lit(g), F.lit(d))
                             for g, d in _SURVEY_DIMENSIONS.items()])
    group = (F.when(gid == 3, F.col("tier")).when(gid == 5, F.col("segment"))
             .when(gid == 6, F.col("lifecycle_stage")).otherwise(F.lit(ALL)))
    kpis = F.array(_kpi("responses", F.col("responses"), F.col("responses")),
                   _kpi("csat", F.col("csat"), F.col("csat_n")),
                   _kpi("nps", F.col("nps"), F.col("nps_n")))
    rows = sums.select(SNAPSHOT_MONTH, dimension.alias("dimension"),
                       F.coalesce(group, F.lit(UNKNOWN)).alias("group_name"),
                       F.lit(None).cast("date").alias("period_month"),
                       F.explode(kpis).alias("k"))
    return rows.select(SNAPSHOT_MONTH, "dimension", "group_name", "period_month", "k.kpi",
                       "k.value", "k.base",
                       (F.col("k.base") < F.lit(cfg.kpi.min_group_size)).alias("small_group"))


def kpi_summary(assigned: DataFrame, accepted: dict[str, DataFrame], cfg: CvmConfig
                ) -> DataFrame:
    """The ``kpi_summary`` table: the acquisition rows, and the survey rows when the run read
    the optional ``surveys`` input."""
    out = acquisition_kpis(kpi_inputs(assigned, accepted["accounts"], cfg), cfg)
    if "surveys" in accepted:
        out = out.unionByName(survey_kpis(assigned, accepted["surveys"], cfg))
    return out


# the overall figures the printed run summary shows
SUMMARY_KPIS = ("accounts", "cac", "clv", "clv_cac_ratio", "payback_months", "responses",
                "csat", "nps")


def overall_observations() -> dict[str, Column]:
    """Per KPI of :data:`SUMMARY_KPIS`, its value on the ``all`` row (aggregates observed
    while ``kpi_summary`` is written: no pass of their own)."""
    return {k: F.max(F.when((F.col("dimension") == F.lit(ALL)) & (F.col("kpi") == F.lit(k)),
                            F.col("value"))) for k in SUMMARY_KPIS}

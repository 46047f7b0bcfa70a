"""kpi_summary: acquisition cost (CAC), CLV / CAC and payback, worked by hand on five
accounts."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from pyspark.testing import assertDataFrameEqual

from cvm_spark.config import KpiConfig
from cvm_spark.segments.kpis import KPI_COLUMNS, acquisition_kpis, kpi_inputs

S = date(2024, 12, 1)


def _frames(spark):
    # account, channel, opened, cost, tier, clv_discounted, clv_simple, current value (12 m)
    rows = [("a1", "branch", date(2024, 1, 15), 100.0, "gold", 500.0, 1.0, 120.0),
            ("a2", "branch", date(2024, 1, 20), 50.0, "copper", None, 100.0, 60.0),
            ("a3", "online", date(2024, 2, 3), None, "copper", 20.0, 1.0, 0.0),
            ("a4", "online", date(2024, 2, 10), 30.0, "copper", 60.0, 1.0, -12.0),
            ("a5", None, date(2023, 12, 1), 10.0, "gold", 40.0, 1.0, 24.0)]
    assigned = spark.createDataFrame(
        [(S, a, tier, d, s, cur) for a, _, _, _, tier, d, s, cur in rows],
        "snapshot_month date, account_id string, tier string, clv_discounted double, "
        "clv_simple double, current_value double")
    accounts = spark.createDataFrame(
        [(a, ch, opened, cost) for a, ch, opened, cost, *_ in rows],
        "account_id string, acquisition_channel string, open_date date, "
        "acquisition_cost double")
    return assigned, accounts


def test_acquisition_kpis_by_hand(spark, base_config):
    """Monthly contribution = current value / 12: a1 10, a2 5, a3 0, a4 -1, a5 2; CLV is the
    discounted one, the simple one where it is null (a2: 100). Cost-based figures use the
    accounts with a known cost (not a3)."""
    cfg = replace(base_config, kpi=KpiConfig(min_group_size=2))
    assigned, accounts = _frames(spark)
    got = acquisition_kpis(kpi_inputs(assigned, accounts, cfg), cfg)
    assert got.columns == KPI_COLUMNS

    def row(dim, group, kpi, value, base, period=None):
        return (S, dim, group, period, kpi, value, base, base < 2)

    jan, feb, dec = date(2024, 1, 1), date(2024, 2, 1), date(2023, 12, 1)
    cm = "acquisition_channel_month"
    expected = [
        row(cm, "branch", "new_accounts", 2.0, 2, jan), row(cm, "branch", "cac", 75.0, 2, jan),
        row(cm, "online", "new_accounts", 2.0, 2, feb), row(cm, "online", "cac", 30.0, 1, feb),
        row(cm, "(unknown)", "new_accounts", 1.0, 1, dec),
        row(cm, "(unknown)", "cac", 10.0, 1, dec),
    ]

    def summary(dim, group, accounts_n, costed, cac, clv, monthly):
        return [row(dim, group, "accounts", float(accounts_n), accounts_n),
                row(dim, group, "cac", cac, costed), row(dim, group, "clv", clv, costed),
                row(dim, group, "clv_cac_ratio", clv / cac, costed),
                row(dim, group, "payback_months", cac / monthly if monthly > 0 else None,
                    costed)]

    ch = "acquisition_channel"
    expected += summary(ch, "branch", 2, 2, 75.0, 300.0, 7.5)          # payback 10 months
    expected += summary(ch, "online", 2, 1, 30.0, 60.0, -1.0)          # never paid back
    expected += summary(ch, "(unknown)", 1, 1, 10.0, 40.0, 2.0)
    expected += summary("tier", "gold", 2, 2, 55.0, 270.0, 6.0)
    expected += summary("tier", "copper", 3, 2, 40.0, 80.0, 2.0)        # a2 and a4
    expected += summary("all", "all", 5, 4, 47.5, 175.0, 4.0)          # payback 11.875
    assertDataFrameEqual(got, spark.createDataFrame(expected, got.schema), rtol=1e-12)


def test_small_groups_are_flagged_not_hidden(spark, base_config):
    assigned, accounts = _frames(spark)
    got = acquisition_kpis(kpi_inputs(assigned, accounts, base_config), base_config)
    assert base_config.kpi.min_group_size == 30
    assert got.count() == 6 + 5 * 6 and got.where("not small_group").count() == 0


def test_csat_and_nps_by_hand(spark, base_config):
    """Responses of the last 12 months (2024-01 .. 2024-12) of scored accounts: a1 (gold,
    Champions, stable) 5/10 and 4/9, a2 (copper, Lost, dormant) 2/3 (its 2023-12 response is
    outside the window), a3 (copper, Champions, stable) -/7 and 3/-; a9 is not scored.
    Overall: CSAT (5 + 4 + 2 + 3) / 4 = 3.5; recommend 10, 9, 3, 7: 2 promoters, 1 detractor
    of 4 answers, NPS 100 (2 - 1) / 4 = 25."""
    from cvm_spark.segments.kpis import survey_kpis

    cfg = replace(base_config, kpi=KpiConfig(min_group_size=2))
    assigned = spark.createDataFrame(
        [(S, "a1", "gold", "Champions", "stable"), (S, "a2", "copper", "Lost", "dormant"),
         (S, "a3", "copper", "Champions", "stable")],
        "snapshot_month date, account_id string, tier string, segment string, "
        "lifecycle_stage string")
    surveys = spark.createDataFrame(
        [("a1", date(2024, 12, 5), 5, 10, "app"), ("a1", date(2024, 6, 1), 4, 9, "email"),
         ("a2", date(2024, 11, 11), 2, 3, "phone"), ("a2", date(2023, 12, 31), 1, 0, "app"),
         ("a3", date(2024, 10, 10), None, 7, "app"), ("a3", date(2024, 3, 3), 3, None, "app"),
         ("a9", date(2024, 12, 1), 5, 10, "app")],
        "account_id string, survey_date date, csat int, recommend int, channel string")
    got = survey_kpis(assigned, surveys, cfg)

    def rows(dim, group, responses, csat, csat_n, nps, nps_n):
        return [(S, dim, group, None, "responses", float(responses), responses, responses < 2),
                (S, dim, group, None, "csat", csat, csat_n, csat_n < 2),
                (S, dim, group, None, "nps", nps, nps_n, nps_n < 2)]

    expected = (rows("all", "all", 5, 3.5, 4, 25.0, 4)
                + rows("tier", "gold", 2, 4.5, 2, 100.0, 2)
                + rows("tier", "copper", 3, 2.5, 2, -50.0, 2)
                + rows("segment", "Champions", 4, 4.0, 3, 200 / 3, 3)
                + rows("segment", "Lost", 1, 2.0, 1, -100.0, 1)
                + rows("lifecycle_stage", "stable", 4, 4.0, 3, 200 / 3, 3)
                + rows("lifecycle_stage", "dormant", 1, 2.0, 1, -100.0, 1))
    assertDataFrameEqual(got, spark.createDataFrame(expected, got.schema), rtol=1e-12)


def test_nps_of_a_group_without_recommend_answers_is_null(spark, base_config):
    """A small tier whose responses all lack the recommend answer has no NPS (not a division
    by zero that stops the run); the other tier's NPS is 100 (one promoter of one)."""
    from cvm_spark.segments.kpis import survey_kpis

    assigned = spark.createDataFrame(
        [(S, "a1", "platinum", "Champions", "stable"), (S, "a2", "standard", "Lost", "new")],
        "snapshot_month date, account_id string, tier string, segment string, "
        "lifecycle_stage string")
    surveys = spark.createDataFrame(
        [("a1", date(2024, 12, 5), 4, None, "app"), ("a2", date(2024, 12, 5), 2, 9, "app")],
        "account_id string, survey_date date, csat int, recommend int, channel string")
    nps = {r.group_name: (r.value, r.base) for r in survey_kpis(assigned, surveys, base_config)
           .where("dimension = 'tier' and kpi = 'nps'").collect()}
    assert nps == {"platinum": (None, 0), "standard": (100.0, 1)}


def test_kpi_summary_without_surveys_has_the_acquisition_rows_only(spark, base_config):
    from cvm_spark.segments.kpis import kpi_summary

    assigned, accounts = _frames(spark)
    assigned = assigned.selectExpr("*", "'Loyal' as segment", "'stable' as lifecycle_stage")
    got = kpi_summary(assigned, {"accounts": accounts}, base_config)
    assert {r.dimension for r in got.select("dimension").distinct().collect()} == {
        "acquisition_channel_month", "acquisition_channel", "tier", "all"}
    assert got.where("kpi in ('csat', 'nps', 'responses')").count() == 0

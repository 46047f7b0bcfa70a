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

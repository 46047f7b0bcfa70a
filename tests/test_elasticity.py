"""Value elasticity on hand-written accounts (values checked by eye).

Snapshot: June 2024, periods of 3 months: previous = January..March, current = April..June.
E = (dQ / Q_prev) / (dP / P_prev) with the default ``base`` method.
"""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.testing import assertDataFrameEqual

from cvm_spark.config import ElasticityConfig
from cvm_spark.models.elasticity import value_elasticity
from cvm_spark.schemas.inputs import MARKETING, MONTHLY_PRODUCT

SNAPSHOT = date(2024, 6, 1)
PREV, CUR = date(2024, 2, 1), date(2024, 5, 1)  # one month inside each period


@pytest.fixture(scope="module")
def inputs(spark):
    def income(acc, month, value, line="demand_deposit"):
        return (acc, month, line, 0.0, value, 0.0)

    def spend(acc, month, value):
        return (acc, month, value, 1)

    monthly = spark.createDataFrame([
        income("EL", PREV, 100.0), income("EL", CUR, 200.0),
        income("UN", PREV, 60.0), income("UN", date(2024, 3, 1), 40.0),  # 100 over 2 months
        income("UN", CUR, 100.0), income("UN", SNAPSHOT, 51.0, "loan"),  # 151 over 2 lines
        income("IN", PREV, 100.0), income("IN", CUR, 125.0),
        income("NE", PREV, 100.0), income("NE", CUR, 0.0),
        income("SA", PREV, 100.0), income("SA", CUR, 300.0),
        income("ZP", PREV, 100.0), income("ZP", CUR, 150.0),
        income("NM", PREV, 100.0), income("NM", CUR, 150.0),
        income("EL", date(2023, 12, 1), 999.0),  # before the previous period: ignored
        income("EL", date(2024, 7, 1), 999.0),   # after the snapshot: ignored
    ], MONTHLY_PRODUCT.schema)
    marketing = spark.createDataFrame([
        spend("EL", PREV, 100.0), spend("EL", CUR, 150.0),
        spend("UN", PREV, 100.0), spend("UN", CUR, 150.0),
        spend("IN", PREV, 100.0), spend("IN", CUR, 150.0),
        spend("NE", PREV, 100.0), spend("NE", CUR, 150.0),
        spend("SA", PREV, 80.0), spend("SA", CUR, 80.0),
        spend("ZP", PREV, 0.0), spend("ZP", CUR, 100.0),
        spend("MO", PREV, 50.0), spend("MO", CUR, 100.0),  # marketing only, no income
    ], MARKETING.schema)
    return monthly, marketing


def test_classes_with_the_base_method(spark, inputs):
    actual = value_elasticity(*inputs, SNAPSHOT, ElasticityConfig())
    expected = spark.createDataFrame([
        # E = (100/100) / (50/100) = 2
        ("EL", 100.0, 200.0, 100.0, 150.0, 2.0, "elastic", 200 / 150),
        # E = (51/100) / (50/100) = 1.02, within 1 +- 0.05
        ("UN", 100.0, 151.0, 100.0, 150.0, 1.02, "unit", 151 / 150),
        # E = (25/100) / (50/100) = 0.5
        ("IN", 100.0, 125.0, 100.0, 150.0, 0.5, "inelastic", 125 / 150),
        # E = (-100/100) / (50/100) = -2: |E| > 1, income fell as spend rose
        ("NE", 100.0, 0.0, 100.0, 150.0, -2.0, "elastic", 0.0),
        # spend unchanged: undefined
        ("SA", 100.0, 300.0, 80.0, 80.0, None, "undefined", 300 / 80),
        # no previous spend: no base for dP / P
        ("ZP", 100.0, 150.0, 0.0, 100.0, None, "undefined", 1.5),
        # no marketing rows: spend 0 in both periods, no return on spend
        ("NM", 100.0, 150.0, 0.0, 0.0, None, "undefined", None),
        # no income rows: Q_prev = 0, undefined; return on spend 0
        ("MO", 0.0, 0.0, 50.0, 100.0, None, "undefined", 0.0),
    ], actual.schema)
    assertDataFrameEqual(actual, expected, rtol=1e-9)
    assert actual.columns == ["account_id", "income_prev", "income_cur", "spend_prev",
                              "spend_cur", "elasticity", "elasticity_class",
                              "return_on_spend"]


def test_arc_method_and_spend_tolerance(spark, inputs):
    cfg = ElasticityConfig(method="arc", spend_change_tolerance=0.41)
    actual = value_elasticity(*inputs, SNAPSHOT, cfg).select(
        "account_id", "elasticity", "elasticity_class").where("account_id in ('EL', 'ZP')")
    expected = spark.createDataFrame([
        # dQ / Q_mid = 100/150, dP / P_mid = 50/125 = 0.4 <= 0.41: spend "did not change"
        ("EL", None, "undefined"),
        # dQ / Q_mid = 50/125 = 0.4, dP / P_mid = 100/50 = 2 > 0.41: E = 0.2
        ("ZP", 0.2, "inelastic"),
    ], actual.schema)
    assertDataFrameEqual(actual, expected, rtol=1e-9)

    actual = value_elasticity(*inputs, SNAPSHOT, ElasticityConfig(method="arc")).where(
        "account_id = 'EL'").select("elasticity").first()
    assert actual.elasticity == pytest.approx((100 / 150) / (50 / 125), rel=1e-12)  # 5/3


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"^method must be one of"):
        ElasticityConfig(method="log")
    with pytest.raises(ValueError, match=r"^unit_tolerance"):
        ElasticityConfig(unit_tolerance=-0.1)


def test_elasticity_per_product_line_group(spark):
    """E_g = (dQ_g / Q_g_prev) / (dP / P_prev): each group's income change over the one
    spend change of the account; a group without previous income is undefined."""
    from pyspark.sql import functions as F

    from cvm_spark.models.elasticity import elasticity_from_aggregates

    cfg = ElasticityConfig()
    # income 100 -> 150 in total: savings 80 -> 140 (+75 %), wealth 20 -> 10 (-50 %),
    # loans 0 -> 0; spend 10 -> 15 (+50 %)
    row = spark.createDataFrame(
        [("A", 100.0, 150.0, 80.0, 140.0, 20.0, 10.0, 0.0, 0.0, 10.0, 15.0, 6, 2)],
        "account_id string, income_prev double, income_cur double, "
        "_income_savings_prev double, _income_savings_cur double, "
        "_income_wealth_prev double, _income_wealth_cur double, "
        "_income_loans_prev double, _income_loans_cur double, "
        "spend_prev double, spend_cur double, _income_months int, _spend_months int")
    got = row.select(*elasticity_from_aggregates(cfg, ["savings", "wealth", "loans"]))
    actual = got.select("elasticity", "elasticity_class", "elasticity_savings",
                        "elasticity_class_savings", "elasticity_wealth",
                        "elasticity_class_wealth", "elasticity_loans",
                        "elasticity_class_loans")
    expected = spark.createDataFrame(
        [(1.0, "unit", 1.5, "elastic", -1.0, "unit", None, "undefined")], actual.schema)
    assertDataFrameEqual(actual, expected)
    assert got.where(F.col("return_on_spend") == 10.0).count() == 1

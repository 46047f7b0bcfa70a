"""Window features on a handful of hand-written accounts (values checked by eye).

Snapshot: June 2024 (2024-06-01, month end 2024-06-30); windows 1 and 3 months, so the
3-month window covers 2024-04-01 .. 2024-06-30.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pyspark.testing import assertDataFrameEqual

from cvm_spark.config import FeaturesConfig
from cvm_spark.features.windows import compute_features, transaction_features
from cvm_spark.schemas.inputs import ACCOUNTS, MONTHLY_PRODUCT, TRANSACTIONS

SNAPSHOT = date(2024, 6, 1)
CFG = FeaturesConfig(windows_months=[1, 3], trend_months=3, volatility_months=3,
                     active_months=3)
LINES = ["demand_deposit", "loan"]


def _accounts(spark, rows):
    full = [(a, o, c, "individual", "north", 1980, "branch", None) for a, o, c in rows]
    return spark.createDataFrame(full, ACCOUNTS.required_schema)


def _txns(spark, rows):
    return spark.createDataFrame(
        [(a, f"t{i}", ts, amt, "card", "debit", None) for i, (a, ts, amt) in enumerate(rows)],
        TRANSACTIONS.schema)


@pytest.fixture(scope="module")
def features(spark):
    accounts = _accounts(spark, [
        ("A", date(2020, 1, 15), None),             # old account, transactions at the edges
        ("B", date(2024, 5, 20), None),             # younger than the 3-month window
        ("C", date(2010, 1, 1), date(2024, 5, 10)),  # closed in May
        ("D", date(2023, 1, 1), None),              # no transactions, no monthly facts
        ("E", date(2024, 7, 2), None),              # opened after the snapshot: not scored
    ])
    txns = _txns(spark, [
        ("A", datetime(2024, 6, 30, 10, 0), 10.0),
        ("A", datetime(2024, 4, 1, 0, 0), 20.0),     # first instant of the 3-month window
        ("A", datetime(2024, 3, 31, 23, 59), 40.0),  # last instant before it
        ("A", datetime(2024, 7, 1, 0, 0), 99.0),     # after the snapshot: ignored
        ("C", datetime(2024, 5, 5, 12, 0), 5.0),
    ])
    monthly = spark.createDataFrame([
        ("B", date(2024, 5, 1), "demand_deposit", 100.0, 30.0, 10.0),
        ("B", date(2024, 6, 1), "demand_deposit", 300.0, 60.0, 20.0),
        ("C", date(2024, 4, 1), "loan", 50.0, 10.0, 0.0),
        ("C", date(2024, 5, 1), "loan", 50.0, 10.0, 0.0),
        ("A", date(2024, 3, 1), "loan", 1000.0, 7.0, 1.0),  # outside every window
    ], MONTHLY_PRODUCT.schema)
    return compute_features(accounts, txns, monthly, SNAPSHOT, CFG, LINES).cache()


def test_one_row_per_account_open_by_the_snapshot(features):
    assert sorted(r.account_id for r in features.select("account_id").collect()) == \
        ["A", "B", "C", "D"]


def test_transaction_windows_at_the_edges(spark, features):
    actual = features.select("account_id", "recency_days", "frequency_1m", "monetary_1m",
                             "frequency_3m", "monetary_3m", "avg_ticket_3m",
                             "active_months_3m")
    expected = spark.createDataFrame([
        ("A", 0, 1, 10.0, 2, 30.0, 15.0, 2),
        ("B", None, 0, 0.0, 0, 0.0, None, 0),
        ("C", 56, 0, 0.0, 1, 5.0, 5.0, 1),
        ("D", None, 0, 0.0, 0, 0.0, None, 0),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_arpu_and_balances_over_months_open(spark, features):
    actual = features.select(
        "account_id", "tenure_months", "is_closed", "months_open_1m", "months_open_3m",
        "income_1m", "income_3m", "profit_3m", "arpu_1m", "arpu_3m",
        "avg_balance_demand_deposit_1m", "avg_balance_demand_deposit_3m",
        "avg_balance_loan_3m", "product_count")
    expected = spark.createDataFrame([
        # A: the March row is outside the 3-month window
        ("A", 53, False, 1, 3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
        # B: open 2 of the 3 months -> ARPU = 90 / 2, balance = (100 + 300) / 2
        ("B", 1, False, 1, 2, 60.0, 90.0, 60.0, 60.0, 45.0, 300.0, 200.0, 0.0, 1),
        # C: closed in May -> open April and May; not open in June (ARPU 1m undefined)
        ("C", 172, True, 0, 2, 0.0, 20.0, 20.0, None, 10.0, None, 0.0, 50.0, 0),
        ("D", 17, False, 1, 3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_trend_and_volatility(spark, features):
    actual = features.select("account_id", "income_trend_3m", "income_volatility_3m")
    expected = spark.createDataFrame([
        ("A", 0.0, None),          # zero income: flat, volatility undefined (mean 0)
        ("B", 30.0, 1 / 3),        # 30 -> 60: slope 30/month; std 15 / mean 45
        ("C", 0.0, 0.0),           # 10, 10 while open
        ("D", 0.0, None),
    ], actual.schema)
    assertDataFrameEqual(actual, expected, rtol=1e-9)


def test_btyd_summary_matches_lifetimes_fixture(spark):
    """The three-customer fixture of lifetimes' tests/test_utils.py, in its own convention."""
    txns = _txns(spark, [
        ("1", datetime(2015, 2, 1), 1.0), ("1", datetime(2015, 2, 6), 2.0),
        ("2", datetime(2015, 1, 1), 2.0),
        ("3", datetime(2015, 1, 1), 3.0), ("3", datetime(2015, 1, 2), 1.0),
        ("3", datetime(2015, 1, 5), 5.0),
    ])
    actual = transaction_features(txns, date(2015, 2, 1), CFG,
                                  observation_end=date(2015, 2, 7)).select(
        "account_id", "btyd_frequency", "btyd_recency", "btyd_t", "btyd_monetary")
    # expected values as published in lifetimes' test suite
    expected = spark.createDataFrame([
        ("1", 1.0, 5.0, 6.0, 2.0), ("2", 0.0, 0.0, 37.0, 0.0), ("3", 2.0, 4.0, 37.0, 3.0),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_btyd_summary_parity_with_lifetimes_at_month_end(spark):
    pd = pytest.importorskip("pandas")
    lifetimes_utils = pytest.importorskip("lifetimes.utils")
    rows = [("1", datetime(2015, 2, 1, 9), 1.0), ("1", datetime(2015, 2, 6, 9), 2.0),
            ("1", datetime(2015, 2, 6, 17), 4.0),  # two purchases on one day = one period
            ("2", datetime(2015, 1, 1), 2.0),
            ("3", datetime(2015, 1, 1), 3.0), ("3", datetime(2015, 1, 2), 1.0),
            ("3", datetime(2015, 1, 5), 5.0)]
    # a credit (salary) is not a purchase: it must not change the BTYD summary
    txns = _txns(spark, rows).unionByName(spark.createDataFrame(
        [("2", "salary", datetime(2015, 2, 20), 900.0, "card", "credit", "EMP")],
        TRANSACTIONS.schema))
    reference = lifetimes_utils.summary_data_from_transaction_data(
        pd.DataFrame(rows, columns=["id", "date", "amount"]), "id", "date",
        monetary_value_col="amount", observation_period_end="2015-02-28", freq="D")
    ours = {r.account_id: r for r in transaction_features(
        txns, date(2015, 2, 1), CFG).collect()}
    for account_id, ref in reference.iterrows():
        got = ours[account_id]
        assert (got.btyd_frequency, got.btyd_recency, got.btyd_t) == \
            (ref["frequency"], ref["recency"], ref["T"]), account_id
        assert got.btyd_monetary == pytest.approx(ref["monetary_value"]), account_id

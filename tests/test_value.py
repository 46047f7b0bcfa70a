"""Value components on hand-worked accounts (docs/model.md has the formulas).

Snapshot December 2024, current window 3 months (Oct-Dec), decay q = 0.9, A0 over the
earliest 2 months of data. Monthly facts start in June 2024.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import replace
from datetime import date, datetime

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from cvm_spark.config import ValueConfig
from cvm_spark.features.windows import account_base
from cvm_spark.models.value import (
    contribution_value,
    current_and_historical,
    influence_value,
    percentile_scale,
)
from cvm_spark.schemas.inputs import ACCOUNTS, MONTHLY_PRODUCT, RELATIONS, TRANSACTIONS

S = date(2024, 12, 1)
CFG = ValueConfig(current_months=3, decay=0.9, backfill_months=2)


def _m(month):
    return date(2024, month, 1)


@pytest.fixture(scope="module")
def base(spark):
    rows = [("X", date(2024, 1, 15)), ("Y", date(2022, 6, 1)), ("Z", date(2024, 8, 1)),
            ("E", date(2015, 1, 1))]
    accounts = spark.createDataFrame(
        [(a, o, None, "individual", None, None, None, None) for a, o in rows],
        ACCOUNTS.required_schema)
    return account_base(accounts, S)


@pytest.fixture(scope="module")
def values(spark, base):
    def row(a, month, line, profit):
        return (a, month, line, 0.0, profit, 0.0)

    facts = [row("X", _m(m), "demand_deposit", p)
             for m, p in [(6, 10.0), (7, 20.0), (8, 30.0), (9, 40.0), (10, 100.0), (11, 100.0)]]
    facts += [row("X", _m(12), "demand_deposit", 60.0), row("X", _m(12), "loan", 40.0)]
    facts += [row("Y", _m(m), "wealth", 5.0) for m in range(6, 13)]
    facts += [row("Z", _m(8), "card", 30.0), row("Z", _m(9), "card", 30.0)]
    facts += [row("E", _m(12), "fee_other", 1000.0)]
    monthly = spark.createDataFrame(facts, MONTHLY_PRODUCT.schema)
    return current_and_historical(monthly, base, S, CFG).cache()


def test_current_value_split_by_group(spark, values):
    actual = values.select("account_id", "current_value", "current_value_savings",
                           "current_value_loans", "current_value_wealth",
                           "current_value_other")
    expected = spark.createDataFrame([
        ("E", 1000.0, 0.0, 0.0, 0.0, 1000.0),
        ("X", 300.0, 260.0, 40.0, 0.0, 0.0),
        ("Y", 15.0, 0.0, 0.0, 15.0, 0.0),
        ("Z", 0.0, 0.0, 0.0, 0.0, 0.0),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_historical_value_with_and_without_backfill(spark, values):
    actual = values.select("account_id", "historical_observed", "a0_monthly_profit",
                           "backfill_months", "historical_backfill", "historical_value")
    expected = spark.createDataFrame([
        # E: opened 2015, but no facts before the window: A0 over Jun-Jul = 0
        ("E", 0.0, 0.0, 113, 0.0, 0.0),
        # X: Jun-Sep are 4..1 months before the window, all in year 1: 0.9 * 100 = 90;
        # A0 = (10 + 20) / 2 = 15; Jan-May missing (5 months, year 1): 15 * 5 * 0.9 = 67.5
        ("X", 90.0, 15.0, 5, 67.5, 157.5),
        # Y: observed 0.9 * 4 * 5 = 18; missing Jun 2022 - May 2024 = 24 months, 5..28 months
        # before the window: 8 * 0.9 + 12 * 0.81 + 4 * 0.729 = 19.836, times A0 = 5
        ("Y", 18.0, 5.0, 24, 99.18, 117.18),
        # Z: opened after the data start: no back-fill; 0.9 * (30 + 30)
        ("Z", 54.0, None, 0, 0.0, 54.0),
    ], actual.schema)
    assertDataFrameEqual(actual, expected, rtol=1e-9)


def test_no_decay_sums_profit(spark, base, values):
    flat = current_and_historical(
        spark.createDataFrame([("Z", _m(m), "card", 0.0, 7.0, 0.0) for m in (8, 9)],
                              MONTHLY_PRODUCT.schema),
        base, S, replace(CFG, decay=1.0))
    assert flat.where("account_id = 'Z'").first().historical_value == 14.0


def test_influence_components(spark, values):
    relations = spark.createDataFrame([
        ("X", "E", "employer"),       # X works for E: enterprise = E's current value
        ("X", "Y", "family"),         # family, both directions
        ("Z", "Z2", "family"),        # Z2 is not scored: contributes nothing
    ], RELATIONS.schema)
    txns = spark.createDataFrame(
        [("X", f"q{i}", datetime(2024, 11, 1 + i), 10.0, "demand_deposit", "credit", "Q")
         for i in range(3)]
        + [("X", f"r{i}", datetime(2024, 11, 1 + i), 50.0, "demand_deposit", "credit", "R")
           for i in range(2)]                                         # only 2: not frequent
        + [("X", "old", datetime(2024, 9, 30), 10.0, "demand_deposit", "credit", "Q")]
        + [("Y", f"d{i}", datetime(2024, 12, 1 + i), 10.0, "card", "debit", "Q")
           for i in range(3)],                                        # debits: not income
        TRANSACTIONS.schema)
    actual = influence_value(relations, txns, values.select("account_id", "current_value"),
                             S, CFG)
    expected = spark.createDataFrame([
        ("E", 0.0, 0.0, 0.0, 0.0),
        # 0.4 * 1000 + 0.4 * 15 + 0.2 * 30
        ("X", 1000.0, 15.0, 30.0, 412.0),
        ("Y", 0.0, 300.0, 0.0, 120.0),
        ("Z", 0.0, 0.0, 0.0, 0.0),
    ], actual.schema)
    assertDataFrameEqual(actual, expected, rtol=1e-9)


def test_percentile_scale_and_contribution(spark):
    df = spark.createDataFrame(
        [("a", 0.0, 0.0, 0.0, 0.0), ("b", 0.0, 5.0, 1.0, 1.0), ("c", 0.0, 5.0, 2.0, 2.0),
         ("d", 10.0, 9.0, 3.0, None)],
        "account_id string, historical_value double, current_value double, "
        "influence_value double, future_value double")
    cols = ["historical_value", "current_value", "influence_value", "future_value"]
    scaled = percentile_scale(df, cols, points=4)
    got = {r.account_id: r for r in scaled.select("account_id", *[f"{c}_pct" for c in cols],
                                                  contribution_value(CFG).alias("cv"))
           .collect()}
    # historical cuts [0, 0, 0]: zeros share the mid-rank 50, 10 -> 100
    assert [got[a].historical_value_pct for a in "abcd"] == [50.0, 50.0, 50.0, 100.0]
    # current cuts [0, 5, 5]: 0 -> 1/6, 5 -> 4/6, 9 -> 1
    assert [got[a].current_value_pct for a in "abcd"] == pytest.approx(
        [100 / 6, 400 / 6, 400 / 6, 100.0], abs=1e-3)
    assert got["d"].future_value_pct is None
    expected_d = 0.2 * 100 + 0.55 * 100 + 0.05 * got["d"].influence_value_pct
    assert got["d"].cv == pytest.approx(expected_d)


def test_no_evidence_ranks_at_the_bottom_of_its_tie(spark):
    """10 accounts, 6 without spend (0): with 9 cut points (the values at positions 1..9:
    0 x 6, 10, 20, 20) the zeros' mid-rank is (0 + 6) / 2 / 9 = 33.33; at the bottom they
    take #cuts < 0 = 0. The others keep their mid-ranks: 10 -> 6.5 / 9, 20 -> 8 / 9, 40 -> 1.
    With one loss-making account (-5; cuts -5, 0 x 5, 10, 20, 20) the zeros take 1 / 9 (the
    bottom of their tie) and the loss ranks below them, (0 + 1) / 2 / 9."""
    spend = [0.0] * 6 + [10.0, 20.0, 20.0, 40.0]
    df = spark.createDataFrame([(f"a{i}", v, -5.0 if i == 0 else v)
                                for i, v in enumerate(spend)],
                               "account_id string, spend double, profit double")

    def ranks(bottom: bool) -> list[tuple[float, float]]:
        out = percentile_scale(df, ["spend", "profit"], points=10, zero_at_bottom=bottom)
        got = {r.account_id: (r.spend_pct, r.profit_pct) for r in out.collect()}
        return [got[f"a{i}"] for i in range(10)]

    others = [(72.2222, 72.2222), (88.8889, 88.8889), (88.8889, 88.8889), (100.0, 100.0)]
    assert ranks(True) == [(0.0, 5.5556)] + [(0.0, 11.1111)] * 5 + others
    # today's rule (value.no_evidence_rank: tie_middle): profit's zeros (1 + 6) / 2 / 9
    assert ranks(False) == [(33.3333, 5.5556)] + [(33.3333, 38.8889)] * 5 + others


def _mid_ranks(values: list[float | None], cuts: list[float], n: int) -> list[float | None]:
    """The mid-rank of each value among the cuts, by bisect (Spark's order: NaN is largest)."""
    def key(x: float) -> tuple[int, float]:
        return (1, 0.0) if math.isnan(x) else (0, x)

    keys = [key(c) for c in cuts]
    return [None if v is None else round(
        (bisect.bisect_left(keys, key(v)) + bisect.bisect_right(keys, key(v))) / 2 / n * 100, 4)
        for v in values]


@pytest.mark.parametrize("special", [False, True], ids=["finite", "with-inf-and-nan"])
def test_percentile_scale_equals_bisect_over_the_cut_points(spark, special):
    """Every value's rank equals a binary search over the same cut points done in Python:
    many ties (zeros, repeated values), nulls, and (second case) -inf, +inf and NaN."""
    rng = random.Random(11)
    values: list[float | None] = []
    for _ in range(600):
        r = rng.random()
        values.append(None if r < 0.05 else 0.0 if r < 0.35 else float(rng.randint(1, 8))
                      if r < 0.6 else round(rng.gauss(100, 40), 3))
    if special:
        values[:12] = [math.inf, -math.inf, math.nan] * 4
    df = spark.createDataFrame([(f"a{i}", v) for i, v in enumerate(values)],
                               "account_id string, x double")
    points = 40
    cuts = df.agg(F.percentile_approx("x", [i / points for i in range(1, points)], 10_000)
                  .alias("c")).first().c
    assert len(set(cuts)) < len(cuts)   # the data has tied cut points
    got = {r.account_id: r.x_pct
           for r in percentile_scale(df, ["x"], points).select("account_id", "x_pct").collect()}
    want = _mid_ranks(values, cuts, points - 1)
    for i, expected in enumerate(want):
        assert got[f"a{i}"] == (None if expected is None else pytest.approx(expected, abs=1e-9)), \
            (i, values[i])


def test_percentile_scale_of_a_column_without_finite_cut_points(spark):
    df = spark.createDataFrame([("a", None), ("b", None)], "account_id string, x double")
    assert [r.x_pct for r in percentile_scale(df, ["x"], 10).collect()] == [None, None]
    inf = spark.createDataFrame([("a", math.inf), ("b", math.inf), ("c", None)],
                                "account_id string, x double")
    got = {r.account_id: r.x_pct for r in percentile_scale(inf, ["x"], 10).collect()}
    assert got == {"a": 50.0, "b": 50.0, "c": None}


@pytest.mark.parametrize("decay", [0.9, 1.0, 0.5])
def test_decay_sum_closed_form_equals_the_sum_of_weights(spark, decay):
    """``_decay_sum`` (closed form) equals q^(floor((m-1)/12)+1) summed month by month."""
    from cvm_spark.models.value import _decay_sum

    pairs = [(f, la) for f in (1, 2, 11, 12, 13, 25, 40) for la in (0, 1, 12, 13, 24, 37, 150)]
    df = spark.createDataFrame(pairs, "first int, last int")
    got = {(r["first"], r["last"]): r.s for r in
           df.select("first", "last", _decay_sum(F.col("first"), F.col("last"), decay)
                     .alias("s")).collect()}
    for f, la in pairs:
        want = sum(decay ** ((m - 1) // 12 + 1) for m in range(f, la + 1))
        assert got[(f, la)] == pytest.approx(want, rel=1e-12, abs=1e-12), (f, la)


def test_cut_point_counts_below_and_at_or_below(spark):
    """``CutPoints`` counts equal bisect_left / bisect_right over the cuts (Spark's order)."""
    from cvm_spark.common.cuts import CutPoints, bucketize

    cuts = [-math.inf, -2.0, 0.0, 0.0, 0.0, 1.5, 7.0, 7.0, math.inf, math.nan]
    values = [None, -math.inf, -5.0, -2.0, -1.0, 0.0, 0.5, 1.5, 7.0, 8.0, math.inf, math.nan]
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, x double")
    cp = CutPoints(cuts)
    out, searches = bucketize(df, {"x": cp})
    got = {r.i: (r.lt, r.le) for r in out.select(
        "i", cp.below(F.col("x"), searches["x"]).alias("lt"),
        cp.at_or_below(F.col("x"), searches["x"]).alias("le")).collect()}

    def key(x: float) -> tuple[int, float]:
        return (1, 0.0) if math.isnan(x) else (0, x)

    keys = [key(c) for c in cuts]
    for i, v in enumerate(values):
        want = (None, None) if v is None else (bisect.bisect_left(keys, key(v)),
                                               bisect.bisect_right(keys, key(v)))
        assert got[i] == want, (v, got[i], want)


def test_mid_rank_is_the_mean_of_the_two_counts(spark):
    from cvm_spark.common.cuts import CutPoints, bucketize

    cuts = [-math.inf, -2.0, 0.0, 0.0, 0.0, 1.5, 7.0, 7.0, math.inf, math.nan]
    values = [None, -math.inf, -5.0, -2.0, -1.0, 0.0, 0.5, 1.5, 7.0, 8.0, math.inf, math.nan]
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, x double")
    cp = CutPoints(cuts)
    out, searches = bucketize(df, {"x": cp})
    x, b = F.col("x"), searches["x"]
    rows = out.select("i", cp.mid_rank(x, b).alias("mid"),
                      ((cp.below(x, b) + cp.at_or_below(x, b)) / 2.0).alias("want")).collect()
    assert [r.mid for r in rows] == [r.want for r in rows]
    assert rows[5].mid == 3.5   # 0.0: -inf and -2.0 below (2), three cuts at it (5): 3.5


def test_contribution_money_weights_the_components_in_currency(spark):
    from cvm_spark.models.value import contribution_money

    df = spark.createDataFrame([("a", 1000.0, 200.0, 50.0, 300.0), ("b", None, -40.0, None, 0.0)],
                               "account_id string, historical_value double, "
                               "current_value double, influence_value double, "
                               "future_value double")
    got = {r.account_id: r.m for r in df.select("account_id", contribution_money(CFG).alias("m"))
           .collect()}
    # .20 / .55 / .05 / .20 of the shipped weights; nulls count as 0
    assert got == pytest.approx({"a": 0.2 * 1000 + 0.55 * 200 + 0.05 * 50 + 0.2 * 300,
                                 "b": 0.55 * -40.0})


def test_future_value_split_by_the_groups_recent_income(spark):
    """future_value_<g> = future_value x max(income_g, 0) / sum of them over the last H
    months: the groups add up to the total; no positive income leaves the split null."""
    from pyspark.sql import functions as F

    from cvm_spark.models.value import future_value_by_group

    rows = spark.createDataFrame([
        ("A", 300.0, 60.0, 30.0, 10.0),     # shares 0.6, 0.3, 0.1
        ("B", 100.0, 50.0, -20.0, 0.0),     # a negative income counts as 0: 1, 0, 0
        ("C", 80.0, 0.0, 0.0, None),        # no income: no split
        ("D", 0.0, 5.0, 5.0, 0.0),          # closed (future value 0): 0, 0, 0
    ], "account_id string, future_value double, _fv_income_savings double, "
       "_fv_income_wealth double, _fv_income_loans double")
    actual = rows.select("account_id", *future_value_by_group(["savings", "wealth", "loans"]))
    expected = spark.createDataFrame([
        ("A", 180.0, 90.0, 30.0),
        ("B", 100.0, 0.0, 0.0),
        ("C", None, None, None),
        ("D", 0.0, 0.0, 0.0),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)
    total = actual.where("account_id = 'A'").select(
        (F.col("future_value_savings") + F.col("future_value_wealth")
         + F.col("future_value_loans")).alias("t")).first().t
    assert total == pytest.approx(300.0)

"""Credit scorecard and grades on hand-written accounts (values checked by eye).

Snapshot: June 2024. Default scorecard (docs/quality.md): base 20 plus
  days past due      <=0: 35  <=30: 20  <=60: 10  <=90: 5   else 0
  delinquent months  <=0: 20  <=1: 15   <=3: 8    <=6: 3    else 0
  overdue ratio      <=0: 15  <=0.1: 8  <=0.3: 3            else 0
  utilisation        <=0.3: 10 <=0.6: 7 <=0.9: 3            else 0
grades A >= 85, B >= 70, C >= 55, D >= 40, E below.
"""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.testing import assertDataFrameEqual

from cvm_spark.config import CreditConfig, GradeCut, ScoreBin, Scorecard
from cvm_spark.models.credit import credit_grades, monthly_credit_scores
from cvm_spark.schemas.inputs import CREDIT

SNAPSHOT = date(2024, 6, 1)
CFG = CreditConfig()


def _credit(spark, rows):
    """rows: (account, month, days_past_due, overdue_amount, credit_limit, utilisation)."""
    return spark.createDataFrame(rows, CREDIT.required_schema)


@pytest.fixture(scope="module")
def scorecard_rows(spark):
    june = SNAPSHOT
    return _credit(spark, [
        # every characteristic exactly on a bin edge or just above it
        ("P1", june, 0, 0.0, 1000.0, 0.3),    # 20 + 35 + 20 + 15 + 10 = 100 -> A
        ("P2", june, 30, 100.0, 1000.0, 0.6),  # 20 + 20 + 15 + 8 + 7 = 70 -> B (edge)
        ("P3", june, 31, 300.0, 1000.0, 0.61),  # 20 + 10 + 15 + 3 + 3 = 51 -> D
        ("P4", june, 91, 301.0, 1000.0, 0.91),  # 20 + 0 + 15 + 0 + 0 = 35 -> E
        ("P5", june, 0, 0.0, 0.0, 0.0),        # no limit, nothing overdue: ratio 0 -> 100, A
        ("P6", june, 5, 50.0, 0.0, 1.2),       # no limit, overdue: ratio +inf
                                               # 20 + 20 + 15 + 0 + 0 = 55 -> C (edge)
        # G: delinquent in June and July 2023, March 2024 missing, utilisation 0.5 (7 points)
        ("G", date(2023, 6, 1), 10, 0.0, 1000.0, 0.5),
        ("G", date(2023, 7, 1), 10, 0.0, 1000.0, 0.5),
        ("G", date(2024, 1, 1), 0, 0.0, 1000.0, 0.5),
        ("G", date(2024, 2, 1), 0, 0.0, 1000.0, 0.5),
        ("G", date(2024, 4, 1), 0, 0.0, 1000.0, 0.5),
        ("G", date(2024, 5, 1), 0, 0.0, 1000.0, 0.5),
        ("G", date(2024, 6, 1), 0, 0.0, 1000.0, 0.5),
    ])


def test_scorecard_points_at_bin_edges(spark, scorecard_rows):
    actual = monthly_credit_scores(scorecard_rows, SNAPSHOT, CFG).where("account_id like 'P%'")
    expected = spark.createDataFrame([
        ("P1", SNAPSHOT, 0, 0, 0.0, 0.3, 100, "A"),
        ("P2", SNAPSHOT, 30, 1, 0.1, 0.6, 70, "B"),
        ("P3", SNAPSHOT, 31, 1, 0.3, 0.61, 51, "D"),
        ("P4", SNAPSHOT, 91, 1, 0.301, 0.91, 35, "E"),
        ("P5", SNAPSHOT, 0, 0, 0.0, 0.0, 100, "A"),
        ("P6", SNAPSHOT, 5, 1, float("inf"), 1.2, 55, "C"),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_delinquency_window_counts_calendar_months_across_a_gap(spark, scorecard_rows):
    """G's 12-month window of May 2024 is June 2023..May 2024 (2 delinquent months: 8 points),
    June's is July 2023..June 2024 (1 month: 15 points), although March is missing; rows
    before January (k >= 6) are not reported."""
    actual = monthly_credit_scores(scorecard_rows, SNAPSHOT, CFG).where("account_id = 'G'")
    expected = spark.createDataFrame([
        ("G", date(2024, 1, 1), 0, 2, 0.0, 0.5, 85, "A"),  # 20 + 35 + 8 + 15 + 7
        ("G", date(2024, 2, 1), 0, 2, 0.0, 0.5, 85, "A"),
        ("G", date(2024, 4, 1), 0, 2, 0.0, 0.5, 85, "A"),
        ("G", date(2024, 5, 1), 0, 2, 0.0, 0.5, 85, "A"),
        ("G", date(2024, 6, 1), 0, 1, 0.0, 0.5, 92, "A"),  # 20 + 35 + 15 + 15 + 7
    ], actual.schema)
    assertDataFrameEqual(actual, expected)
    assert actual.columns == ["account_id", "month", "days_past_due", "delinquent_months_12m",
                              "overdue_ratio", "utilisation", "score", "grade"]


def test_credit_grades_snapshot_and_12_month_delinquency(spark, scorecard_rows):
    actual = credit_grades(scorecard_rows, SNAPSHOT, CFG).where("account_id in ('G', 'P3')")
    expected = spark.createDataFrame([
        # max_dpd_12m looks at July 2023..June 2024: the June 2023 row is outside
        ("G", 92, "A", "A", "A", 10, 1, 0.0, None, None),
        ("P3", 51, "D", "D", "D", 31, 1, 300.0, None, None),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)
    assert actual.columns == ["account_id", "credit_score", "credit_grade", "credit_grade_3m",
                              "credit_grade_6m", "max_dpd_12m", "delinquent_months_12m",
                              "overdue_amount", "payment_method", "bad_debt"]


# Roll-ups: a scorecard on utilisation only, so each month's grade is set by one number.
UTIL_ONLY = Scorecard(
    base_score=0,
    max_dpd=[ScoreBin(None, 0)], delinquent_months=[ScoreBin(None, 0)],
    overdue_ratio=[ScoreBin(None, 0)],
    utilisation=[ScoreBin(0.2, 90), ScoreBin(0.4, 75), ScoreBin(0.6, 60), ScoreBin(0.8, 45),
                 ScoreBin(None, 0)])
UTIL = {"A": 0.1, "B": 0.3, "C": 0.5, "D": 0.7, "E": 0.9}
MONTHS = [date(2024, m, 1) for m in range(1, 7)]  # January .. June (k = 5 .. 0)


@pytest.fixture(scope="module")
def history(spark):
    """Monthly grades January..June; '-' = no row that month."""
    grades = {
        "R1": "AEBBCB",  # 3m: B C B        6m: A E B B C B
        "R2": "DDAABC",  # 3m: A B C (tie)  6m: D D A A B C (tie D/A)
        "R3": "AAE-BA",  # 3m: - B A (tie)  6m: A A E B A
        "R4": "CCABD-",  # no June row: snapshot grade null; 3m: B D; 6m: C C A B D
    }
    rows = [(acc, month, 0, 0.0, 1000.0, UTIL[g])
            for acc, history in grades.items()
            for month, g in zip(MONTHS, history, strict=True) if g != "-"]
    rows.append(("R5", date(2023, 12, 1), 0, 0.0, 1000.0, 0.1))  # no row in the last 6 months
    return _credit(spark, rows)


def test_rollup_worst(spark, history):
    cfg = CreditConfig(scorecard=UTIL_ONLY, rollup_rule="worst")
    actual = credit_grades(history, SNAPSHOT, cfg)
    expected = spark.createDataFrame([
        ("R1", 75, "B", "C", "E", 0, 0, 0.0, None, None),
        ("R2", 60, "C", "C", "D", 0, 0, 0.0, None, None),
        ("R3", 90, "A", "B", "E", 0, 0, 0.0, None, None),
        ("R4", None, None, "D", "D", 0, 0, None, None, None),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_rollup_mode_ties_go_to_the_worse_grade(spark, history):
    cfg = CreditConfig(scorecard=UTIL_ONLY, rollup_rule="mode")
    actual = credit_grades(history, SNAPSHOT, cfg)
    expected = spark.createDataFrame([
        ("R1", 75, "B", "B", "B", 0, 0, 0.0, None, None),
        # R2 3m: one each of A, B, C -> C; 6m: D=2, A=2 -> D
        ("R2", 60, "C", "C", "D", 0, 0, 0.0, None, None),
        ("R3", 90, "A", "B", "A", 0, 0, 0.0, None, None),   # 3m: one each of B, A -> B; 6m: A=3
        # R4 3m: one each of B, D -> D; 6m: C=2
        ("R4", None, None, "D", "C", 0, 0, None, None, None),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_telecom_columns_payment_method_and_bad_debt(spark):
    """The optional credit columns: payment_method of the latest month naming one (within
    the half year), bad_debt when any month of the delinquency window was written off, and
    the snapshot month's arrears."""
    rows = [
        # T1 paid by card, then cash in May; June names no method; written off in March
        ("T1", date(2024, 3, 1), 95, 80.0, 300.0, 0.5, "card", True),
        ("T1", date(2024, 5, 1), 0, 0.0, 300.0, 0.5, "cash", False),
        ("T1", date(2024, 6, 1), 20, 40.0, 300.0, 0.5, None, False),
        # T2: direct debit, never written off, a bad-debt month too old (June 2023)
        ("T2", date(2023, 6, 1), 120, 10.0, 300.0, 0.5, "voucher", True),
        ("T2", date(2024, 6, 1), 0, 0.0, 300.0, 0.1, "direct_debit", False),
        # T3: the method only in the year before the half year: not used
        ("T3", date(2023, 11, 1), 0, 0.0, 300.0, 0.1, "cash", None),
        ("T3", date(2024, 6, 1), 0, 0.0, 300.0, 0.1, None, None),
    ]
    credit = spark.createDataFrame(rows, CREDIT.schema)
    actual = credit_grades(credit, SNAPSHOT, CFG).select(
        "account_id", "overdue_amount", "payment_method", "bad_debt")
    expected = spark.createDataFrame([
        ("T1", 40.0, "cash", True),
        ("T2", 0.0, "direct_debit", False),
        ("T3", 0.0, None, None),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_config_rejects_unordered_bins_and_grades():
    with pytest.raises(ValueError, match=r"^utilisation\[1\]\.upper"):
        Scorecard(utilisation=[ScoreBin(0.5, 1), ScoreBin(0.4, 2), ScoreBin(None, 0)])
    with pytest.raises(ValueError, match=r"^max_dpd: the last bin"):
        Scorecard(max_dpd=[ScoreBin(0, 1)])
    with pytest.raises(ValueError, match=r"^grades: min_score must decrease"):
        CreditConfig(grades=[GradeCut("A", 50), GradeCut("B", 60), GradeCut("C", None)])
    with pytest.raises(ValueError, match=r"^rollup_rule"):
        CreditConfig(rollup_rule="mean")

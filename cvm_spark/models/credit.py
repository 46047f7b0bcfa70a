"""Credit scorecard, monthly grades and their quarterly / half-year roll-ups (spec section 5).

Every month of the ``credit`` table (one row per account and month with a credit facility)
gets a score from a points scorecard over four characteristics:

* ``days_past_due`` of the month (the table holds one row per account and month, so this is
  the month's maximum days past due);
* ``delinquent_months_12m``: months with ``days_past_due > 0`` among the last
  ``delinquency_months`` calendar months up to and including the month (a month without a
  row counts as not delinquent);
* ``overdue_ratio = overdue_amount / credit_limit`` (with a zero limit: 0 when nothing is
  overdue, +infinity otherwise, i.e. the worst bin);
* ``utilisation`` as given.

``score = base_score + sum of the points of the bin each characteristic falls in`` (a value
falls in the first bin with ``value <= upper``; the last bin has no upper bound). The score
maps to a grade A..E by cut points; the quarterly and half-year grades combine the monthly
grades of the last 3 and 6 months with the configured rule (``worst`` or ``mode``).

Accounts with no credit row in the roll-up window have no facility and are not in the
output; the caller left-joins, and a null grade means "no credit risk known".

Formulas and a worked example: docs/quality.md.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cvm_spark.common.months import months_back
from cvm_spark.config import CreditConfig, ScoreBin
from cvm_spark.schemas.inputs import ACCOUNT_ID, CREDIT

# the optional credit columns (the telecom profile's): null of their type when a frame
# lacks them (validated inputs always carry them)
CREDIT_TYPES = {f.name: f.dataType for f in CREDIT.schema.fields}


def bin_points(value: Column, bins: list[ScoreBin]) -> Column:
    """Points of the first bin with ``value <= upper`` (null value -> null points)."""
    expr = F.when(value.isNull(), F.lit(None).cast("int"))
    for b in bins[:-1]:
        expr = expr.when(value <= F.lit(b.upper), F.lit(b.points))
    # the last bin has no upper bound: it is the +infinity bin, not a catch-all
    return expr.otherwise(F.lit(bins[-1].points))


def grade_rank(score: Column, cfg: CreditConfig) -> Column:
    """0-based rank of the grade a score earns (0 = best); null score -> null."""
    expr = F.when(score.isNull(), F.lit(None).cast("int"))
    for rank, cut in enumerate(cfg.grades[:-1]):
        expr = expr.when(score >= F.lit(cut.min_score), F.lit(rank))
    return expr.otherwise(F.lit(len(cfg.grades) - 1))


def rank_label(rank: Column, cfg: CreditConfig) -> Column:
    """Grade label of a 0-based rank (null rank -> null)."""
    # a when-chain rather than element_at on a literal array: Spark marks the latter
    # non-nullable although a null rank gives null
    expr = F.when(rank == 0, F.lit(cfg.labels[0]))
    for r, label in enumerate(cfg.labels[1:], start=1):
        expr = expr.when(rank == r, F.lit(label))
    return expr


def overdue_ratio(overdue_amount: Column, credit_limit: Column) -> Column:
    """``overdue / limit``; with no positive limit: 0 if nothing overdue, else +infinity."""
    return (F.when(credit_limit > 0, overdue_amount / credit_limit)
            .when(overdue_amount > 0, F.lit(float("inf")))
            .otherwise(F.lit(0.0)))


def _scored_months(credit: DataFrame, snapshot: date, cfg: CreditConfig) -> DataFrame:
    """Every credit row the grades look at, scored, with ``k`` = months back.

    Rows reach back ``half_year_months + delinquency_months - 1`` months so that the
    delinquency count of the oldest scored month sees its full window.
    """
    lookback = cfg.half_year_months + cfg.delinquency_months - 1
    month_index = F.year("month") * 12 + F.month("month")
    # range frame over a month index, not rows: a month missing from the table is a gap of
    # one month, not a shift of the window
    window = (Window.partitionBy(ACCOUNT_ID).orderBy(month_index)
              .rangeBetween(-(cfg.delinquency_months - 1), Window.currentRow))
    rows = (credit
            .where(F.col("month").between(F.add_months(F.lit(snapshot), -(lookback - 1)),
                                          F.lit(snapshot)))
            .select(
                ACCOUNT_ID, "month",
                months_back(F.col("month"), snapshot).alias("k"),
                F.col("days_past_due").cast("int").alias("days_past_due"),
                F.count(F.when(F.col("days_past_due") > 0, 1)).over(window).cast("int")
                .alias("delinquent_months"),
                overdue_ratio(F.col("overdue_amount"), F.col("credit_limit"))
                .alias("overdue_ratio"),
                F.col("utilisation").cast("double").alias("utilisation"),
                F.col("overdue_amount").cast("double").alias("overdue_amount"),
                *[(F.col(c) if c in credit.columns else F.lit(None)).cast(CREDIT_TYPES[c])
                  .alias(c) for c in CREDIT.optional],
            ))
    sc = cfg.scorecard
    score = (F.lit(sc.base_score)
             + bin_points(F.col("days_past_due"), sc.max_dpd)
             + bin_points(F.col("delinquent_months"), sc.delinquent_months)
             + bin_points(F.col("overdue_ratio"), sc.overdue_ratio)
             + bin_points(F.col("utilisation"), sc.utilisation))
    return rows.select("*", score.cast("int").alias("score")).select(
        "*", grade_rank(F.col("score"), cfg).alias("grade_rank"))


def monthly_credit_scores(credit: DataFrame, snapshot: date, cfg: CreditConfig) -> DataFrame:
    """Score and grade of every account-month in the last ``half_year_months`` months.

    Args:
        credit: accepted ``credit`` rows (contract types; one row per account and month).
        snapshot: first day of the snapshot month.
        cfg: scorecard and grades.

    Returns:
        account_id, month, days_past_due, delinquent_months_<N>m (N = delinquency_months),
        overdue_ratio, utilisation, score, grade; only months that have a credit row.
    """
    d = cfg.delinquency_months
    return (_scored_months(credit, snapshot, cfg)
            .where(F.col("k") < cfg.half_year_months)
            .select(ACCOUNT_ID, "month", "days_past_due",
                    F.col("delinquent_months").alias(f"delinquent_months_{d}m"),
                    "overdue_ratio", "utilisation", "score",
                    rank_label(F.col("grade_rank"), cfg).alias("grade")))


def _rollup(months: int, cfg: CreditConfig) -> Column:
    """Aggregate: grade rank combining the monthly grades with ``k < months`` (null if none)."""
    inside = F.col("k") < months
    if cfg.rollup_rule == "worst":
        return F.max(F.when(inside, F.col("grade_rank")))
    # mode: count each grade, take the greatest (count, rank) pair, so a tie in counts goes to
    # the larger rank, i.e. the worse grade
    counts = [F.struct(F.count(F.when(inside & (F.col("grade_rank") == r), 1)).alias("n"),
                       F.lit(r).alias("rank"))
              for r in range(len(cfg.grades))]
    best = F.greatest(*counts)
    return F.when(best["n"] > 0, best["rank"])


def credit_grades(credit: DataFrame, snapshot: date, cfg: CreditConfig) -> DataFrame:
    """Credit score and grades per account with a facility in the roll-up window.

    Args:
        credit: accepted ``credit`` rows (contract types; one row per account and month).
        snapshot: first day of the snapshot month.
        cfg: scorecard, grades and roll-up rule.

    Returns:
        One row per account with a credit row in the last ``half_year_months`` months:
        account_id, credit_score and credit_grade (snapshot month; null when the account has
        no row for it), credit_grade_<Q>m, credit_grade_<H>m (roll-ups over the months
        present), max_dpd_<N>m, delinquent_months_<N>m (N = delinquency_months; months
        without a row count as 0 days past due), overdue_amount (arrears of the snapshot
        month; null without a row for it), payment_method (of the latest month that names
        one, within the last ``half_year_months``) and bad_debt (a month written off as bad
        debt within the last N months; null when the source has no such column). Accounts
        without a facility are absent: left-join and read a null grade as "no credit risk
        known".
    """
    q, h, d = cfg.quarter_months, cfg.half_year_months, cfg.delinquency_months
    now = F.col("k") == 0
    in_d = F.col("k") < d
    agg = _scored_months(credit, snapshot, cfg).groupBy(ACCOUNT_ID).agg(
        F.count(F.when(F.col("k") < h, 1)).alias("_months_h"),
        F.max(F.when(now, F.col("score"))).alias("credit_score"),
        F.max(F.when(now, F.col("grade_rank"))).alias("_rank_now"),
        _rollup(q, cfg).alias("_rank_q"),
        _rollup(h, cfg).alias("_rank_h"),
        F.max(F.when(in_d, F.col("days_past_due"))).alias("max_dpd"),
        F.count(F.when(in_d & (F.col("days_past_due") > 0), 1)).alias("delinquent"),
        F.max(F.when(now, F.col("overdue_amount"))).alias("overdue_amount"),
        F.max_by(F.col("payment_method"),
                 F.when((F.col("k") < h) & F.col("payment_method").isNotNull(), -F.col("k")))
        .alias("payment_method"),
        F.max(F.when(in_d, F.col("bad_debt").cast("int"))).alias("bad_debt"),
    )
    return agg.where(F.col("_months_h") > 0).select(
        ACCOUNT_ID,
        F.col("credit_score").cast("int").alias("credit_score"),
        rank_label(F.col("_rank_now"), cfg).alias("credit_grade"),
        rank_label(F.col("_rank_q"), cfg).alias(f"credit_grade_{q}m"),
        rank_label(F.col("_rank_h"), cfg).alias(f"credit_grade_{h}m"),
        F.col("max_dpd").cast("int").alias(f"max_dpd_{d}m"),
        F.col("delinquent").cast("int").alias(f"delinquent_months_{d}m"),
        F.col("overdue_amount"), F.col("payment_method"),
        (F.col("bad_debt") > 0).alias("bad_debt"),
    )

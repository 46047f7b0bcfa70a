"""Value elasticity of income to marketing spend, and return on spend (spec section 5).

Two consecutive periods of ``period_months`` months each: *current* = the last
``period_months`` months up to and including the snapshot month, *previous* = the
``period_months`` months before. Per account, ``Q`` = income (``monthly_product.income``
summed over product lines and the period's months) and ``P`` = marketing spend (summed over
the period's months).

``E = (dQ / Q) / (dP / P)`` with ``dQ = Q_cur - Q_prev``, ``dP = P_cur - P_prev`` and the base
chosen by ``method``:

* ``base`` (default): ``Q = Q_prev``, ``P = P_prev`` -- the change relative to where the
  account started, as in the source framework ("one more unit of spend brings E units of
  income growth"). Undefined when ``P_prev = 0`` or ``Q_prev <= 0``.
* ``arc``: ``Q = (Q_prev + Q_cur) / 2``, ``P = (P_prev + P_cur) / 2`` (midpoint formula):
  symmetric in the two periods and defined when spend starts from zero. Undefined when a
  midpoint is not positive.

Either way E is undefined when spend did not change: ``|dP / P| <= spend_change_tolerance``
(0.0 = exactly equal). Class by magnitude: ``|E| > 1 + unit_tolerance`` elastic,
``|E| >= 1 - unit_tolerance`` unit, otherwise inelastic; the sign stays in ``elasticity``
(negative: income moved against spend). ``return_on_spend = Q_cur / P_cur`` over the current
period (null without spend).

The output has one row per account with a ``monthly_product`` or ``marketing`` row in the two
periods; the caller left-joins, and an account without rows is "undefined".
Worked examples: docs/quality.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.months import months_back
from cvm_spark.config import ElasticityConfig
from cvm_spark.schemas.inputs import ACCOUNT_ID


def _period_sums(value: Column, k: Column, months: int, prefix: str) -> list[Column]:
    """``<prefix>_prev`` and ``<prefix>_cur``: sums of ``value`` over the two periods
    (rows with ``k`` in ``0 .. 2 * months - 1``)."""
    return [F.sum(F.when((k >= months) & (k < 2 * months), value).otherwise(F.lit(0.0)))
            .alias(f"{prefix}_prev"),
            F.sum(F.when((k >= 0) & (k < months), value).otherwise(F.lit(0.0)))
            .alias(f"{prefix}_cur")]


def income_aggregates(cfg: ElasticityConfig, groups: Sequence[str] = ()) -> list[Column]:
    """Aggregates over monthly rows with ``k`` and ``income`` (every month, open or not,
    e.g. :func:`cvm_spark.features.windows.monthly_rows`): income of the two periods, and how many
    months of the periods have rows; with ``groups`` (product-line groups, rows carrying
    ``income_<group>``) also each group's income of the two periods (``_income_<group>_prev``
    / ``_cur``)."""
    n, k = cfg.period_months, F.col("k")
    by_group = [c for g in groups
                for c in _period_sums(F.coalesce(F.col(f"income_{g}"), F.lit(0.0)), k, n,
                                      f"_income_{g}")]
    return [*_period_sums(F.col("income"), k, n, "income"), *by_group,
            F.count(F.when((k >= 0) & (k < 2 * n), 1)).alias("_income_months")]


def spend_aggregates(snapshot: date, cfg: ElasticityConfig) -> list[Column]:
    """Aggregates over ``marketing`` rows: spend of the two periods and the rows in them."""
    n, k = cfg.period_months, months_back(F.col("month"), snapshot)
    return [*_period_sums(F.col("spend"), k, n, "spend"),
            F.count(F.when((k >= 0) & (k < 2 * n), 1)).alias("_spend_months")]


def relative_change(prev: Column, cur: Column, method: str) -> Column:
    """``(cur - prev) / base``; null when the base is not positive.

    ``base`` = ``prev`` (method ``base``) or ``(prev + cur) / 2`` (method ``arc``).
    """
    base = prev if method == "base" else (prev + cur) / 2
    return F.when(base > 0, (cur - prev) / base)


def elasticity_class(e: Column, cfg: ElasticityConfig) -> Column:
    """Class of an elasticity by its magnitude; null elasticity -> undefined."""
    tol, labels = cfg.unit_tolerance, cfg.labels
    magnitude = F.abs(e)
    return (F.when(e.isNull(), F.lit(labels.undefined))
            .when(magnitude > 1 + tol, F.lit(labels.elastic))
            .when(magnitude >= 1 - tol, F.lit(labels.unit))
            .otherwise(F.lit(labels.inelastic)))


ELASTICITY_COLUMNS = ["income_prev", "income_cur", "spend_prev", "spend_cur", "elasticity",
                      "elasticity_class", "return_on_spend"]


def group_elasticity_columns(groups: Sequence[str]) -> list[str]:
    """``elasticity_<group>`` and ``elasticity_class_<group>`` of each product-line group."""
    return [c for g in groups for c in (f"elasticity_{g}", f"elasticity_class_{g}")]


def elasticity_from_aggregates(cfg: ElasticityConfig, groups: Sequence[str] = ()
                               ) -> list[Column]:
    """:data:`ELASTICITY_COLUMNS` (and with ``groups`` the
    :func:`group_elasticity_columns`) over a row with the :func:`income_aggregates` and
    :func:`spend_aggregates` (null when the account had no rows). An account with no
    monthly or marketing rows in the two periods gets nulls (its class is the caller's
    "undefined").

    A group's elasticity is the relative change of the group's income over the relative
    change of the account's marketing spend (spend is not split by line): ``E_g = (dQ_g /
    Q_g) / (dP / P)``, undefined (class ``undefined``) when the group had no income in the
    previous period or the spend did not change."""
    has_rows = ((F.coalesce(F.col("_income_months"), F.lit(0)) > 0)
                | (F.coalesce(F.col("_spend_months"), F.lit(0)) > 0))
    sums = {c: F.coalesce(F.col(c), F.lit(0.0))
            for c in ("income_prev", "income_cur", "spend_prev", "spend_cur")}
    dq = relative_change(sums["income_prev"], sums["income_cur"], cfg.method)
    dp = relative_change(sums["spend_prev"], sums["spend_cur"], cfg.method)
    spend_changed = F.abs(dp) > F.lit(cfg.spend_change_tolerance)
    e = F.when(spend_changed, dq / dp)
    values = {**sums, "elasticity": e, "elasticity_class": elasticity_class(e, cfg),
              "return_on_spend": F.when(sums["spend_cur"] > 0,
                                        sums["income_cur"] / sums["spend_cur"])}
    for g in groups:
        dq_g = relative_change(F.coalesce(F.col(f"_income_{g}_prev"), F.lit(0.0)),
                               F.coalesce(F.col(f"_income_{g}_cur"), F.lit(0.0)), cfg.method)
        e_g = F.when(spend_changed, dq_g / dp)
        values[f"elasticity_{g}"] = e_g
        values[f"elasticity_class_{g}"] = elasticity_class(e_g, cfg)
    return [F.when(has_rows, values[c]).alias(c)
            for c in [*ELASTICITY_COLUMNS, *group_elasticity_columns(groups)]]


def value_elasticity(monthly_product: DataFrame, marketing: DataFrame, snapshot: date,
                     cfg: ElasticityConfig) -> DataFrame:
    """Income elasticity to marketing spend between the previous and the current period.

    Args:
        monthly_product: accepted ``monthly_product`` rows (contract types).
        marketing: accepted ``marketing`` rows (contract types).
        snapshot: first day of the snapshot month (the last month of the current period).
        cfg: periods, method, tolerances and labels.

    Returns:
        One row per account with income or marketing rows in the two periods: account_id,
        income_prev, income_cur, spend_prev, spend_cur (0.0 when the account has no rows),
        elasticity (null when undefined), elasticity_class, return_on_spend
        (``income_cur / spend_cur``, null when ``spend_cur = 0``).
    """
    first = F.add_months(F.lit(snapshot), -(2 * cfg.period_months - 1))
    k = months_back(F.col("month"), snapshot).alias("k")
    income = (monthly_product.where(F.col("month").between(first, F.lit(snapshot)))
              .select(ACCOUNT_ID, k, "income")
              .groupBy(ACCOUNT_ID).agg(*income_aggregates(cfg)))
    spend = (marketing.where(F.col("month").between(first, F.lit(snapshot)))
             .groupBy(ACCOUNT_ID).agg(*spend_aggregates(snapshot, cfg)))
    joined = income.join(spend, on=ACCOUNT_ID, how="full")
    return joined.select(ACCOUNT_ID, *elasticity_from_aggregates(cfg))

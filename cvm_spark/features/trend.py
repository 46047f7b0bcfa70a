"""Trend and volatility of monthly income in closed form, from the sums the window
aggregate collects (``sum y``, ``sum k*y``, ``sum y^2``) and the months an account was open:
no window function and no second pass over the monthly rows. The formulas are in
docs/features.md.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def open_range(window: int, k_open: Column, k_close: Column) -> tuple[Column, Column, Column]:
    """(lo, hi, n): the months-back range the account was open in the last ``window``."""
    lo = F.greatest(k_close, F.lit(0))
    hi = F.least(k_open, F.lit(window - 1))
    return lo, hi, F.greatest(hi - lo + 1, F.lit(0))


def _sum_k(lo: Column, hi: Column) -> Column:
    """Sum of the integers lo..hi (0 when hi < lo)."""
    return F.when(hi >= lo, (lo + hi) * (hi - lo + 1) / 2).otherwise(F.lit(0))


def _sum_k2(lo: Column, hi: Column) -> Column:
    """Sum of k^2 for k = lo..hi (0 when hi < lo), lo >= 0."""
    def upto(n: Column) -> Column:
        return n * (n + 1) * (2 * n + 1) / 6

    return F.when(hi >= lo, upto(hi) - upto(lo - 1)).otherwise(F.lit(0))


# A difference of two sums smaller than this share of their size is rounding noise.
CANCELLATION = 1e-9


def _beyond_noise(a: Column, b: Column) -> Column:
    """``a - b``, or exactly 0 where the difference is within the rounding noise of the two
    sums (``CANCELLATION`` of their size).

    The sums come from an aggregate whose partial sums Spark adds in task-finish order, so
    their last bits vary from run to run; for a flat series the difference would be ±1e-16
    instead of 0, and a threshold at 0 (value × growth, "growth_trend: 0.0") would flip.
    """
    return F.when(F.abs(a - b) <= F.lit(CANCELLATION) * (F.abs(a) + F.abs(b)),
                  F.lit(0.0)).otherwise(a - b)


def income_trend(months: int, k_open: Column, k_close: Column, suffix: str) -> Column:
    """OLS slope of monthly income against time over the months open in the window.

    With x = -k (time runs forward as k falls), slope = (n*Sxy - Sx*Sy) / (n*Sxx - Sx^2);
    missing months inside the open range count as zero income.
    """
    lo, hi, n = open_range(months, k_open, k_close)
    sy = F.coalesce(F.col(f"_ty{suffix}"), F.lit(0.0))
    sxy = -F.coalesce(F.col(f"_tky{suffix}"), F.lit(0.0))
    sx = -_sum_k(lo, hi)
    sxx = _sum_k2(lo, hi)
    denom = n * sxx - sx * sx
    return F.when(n >= 2, _beyond_noise(n * sxy, sx * sy) / denom)


def income_volatility(months: int, k_open: Column, k_close: Column, suffix: str) -> Column:
    """Coefficient of variation of monthly income over the months open in the window."""
    _, _, n = open_range(months, k_open, k_close)
    sy = F.coalesce(F.col(f"_vy{suffix}"), F.lit(0.0))
    syy = F.coalesce(F.col(f"_vyy{suffix}"), F.lit(0.0))
    mean = sy / n
    var = F.greatest(_beyond_noise(syy / n, mean * mean), F.lit(0.0))
    return F.when((n >= 2) & (mean > 0), F.sqrt(var) / mean)

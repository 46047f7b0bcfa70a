"""Calendar months: the one place for month arithmetic (dates on the driver, columns in Spark).

A month is named by its first day. ``k`` is "months back" from a reference month (0 = the
month itself).
"""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import Column
from pyspark.sql import functions as F


def month_end(month_start: date) -> date:
    """Last day of the month that starts on ``month_start`` (any day of it works)."""
    nxt = date(month_start.year + (month_start.month == 12), month_start.month % 12 + 1, 1)
    return nxt - timedelta(days=1)


def add_months(month: date, n: int) -> date:
    """First day of the month ``n`` months after (``n < 0``: before) ``month``."""
    idx = month.year * 12 + month.month - 1 + n
    return date(idx // 12, idx % 12 + 1, 1)


def months_between(later: date, earlier: date) -> int:
    """Whole calendar months from ``earlier``'s month to ``later``'s."""
    return (later.year - earlier.year) * 12 + (later.month - earlier.month)


def months_back(month: Column, snapshot: date) -> Column:
    """Whole calendar months from ``month`` (any date in it) back to the snapshot month."""
    s = F.lit(snapshot)
    return (F.year(s) - F.year(month)) * 12 + (F.month(s) - F.month(month))

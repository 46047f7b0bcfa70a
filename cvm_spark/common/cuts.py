"""How many cut points lie below each value: percentile ranks and quantile buckets at scale.

Cut points are a few hundred or thousand approximate quantiles (``percentile_approx``) held
on the driver; values are every account's. For each value the counts ``#cuts < v`` and
``#cuts <= v`` come from one binary search over the distinct cut points
(``pyspark.ml.feature.Bucketizer``: compiled JVM code, no Python; its splits travel as one
``double[]``): one over the distinct cuts (``#cuts <= v``) and one just above them
(``#cuts < v``). Tied cut points (many zeros; every cut when a column has fewer distinct
values than points) add a third search over the positions of the tie groups and one small
literal array of their cumulative surplus (:class:`CutPoints`). No lookup table, no join: a
plan with a dozen percentile columns stays small and its generated code constant in size.
The alternatives measured were worse: literal arrays of every cut indexed by the bucket
(plan strings of megabytes and task binaries of 1.5 MB deserialised by every task), the same
arrays as columns of one broadcast row (every row then carries ~36,000 array elements
through each projection), lookup tables joined by broadcast (one Spark job per table and
query), ``CASE WHEN`` over the cuts or the tie groups (one branch each: generated code
beyond the JVM's 64 KB method limit on small inputs, where every cut is tied) and array
filters with a lambda (~1000x slower).

Spark orders doubles ``-inf < finite < +inf < NaN`` (NaN equals NaN); the counts follow it.

Values are ranked as :func:`rank_value` (rounded to ``RANK_DECIMALS``): a value sits *at* a
cut point when it equals it, and a sum of doubles added up in another order (another
partitioning, another number of cores) can differ by a unit in the last place; rounded,
equal amounts stay equal and the ranks do not depend on the plan.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

RANK_DECIMALS = 6


def rank_value(value: Column) -> Column:
    """The value a column is ranked by: rounded to ``RANK_DECIMALS`` decimals (NaN and
    infinities unchanged, null stays null)."""
    return F.round(value.cast("double"), RANK_DECIMALS)


def probabilities(levels: list[float]) -> Column:
    """A literal array of quantile levels as one SQL expression (one call to the JVM, where
    a Python list becomes one call per element)."""
    return F.expr("array(" + ", ".join(f"{float(p)!r}D" for p in levels) + ")")


def quantiles(value: Column, levels: list[float], accuracy: int) -> Column:
    """``percentile_approx`` of :func:`rank_value` of ``value`` at ``levels``."""
    return F.percentile_approx(rank_value(value), probabilities(levels), accuracy)


@dataclass(frozen=True)
class Search:
    """Where a value stands among one column's distinct finite cut points ``u_1 < ... <
    u_m``, from Bucketizer searches (see :func:`bucketize`)."""

    at_or_below: Column   # b: the number of u_j <= v
    below: Column         # the number of u_j < v
    ties_at_or_below: Column | None = None   # the number of tie groups at positions <= b
    ties_below: Column | None = None         # the same for the number of u_j < v


class CutPoints:
    """Sorted cut points, and the counts of them below a value.

    With the finite cuts' distinct values ``u_1 < ... < u_m`` occurring ``c_1 .. c_m`` times,
    a finite value with ``b`` of them ``<= v`` has ``#cuts <= v = neg + cum(b)``, where
    ``cum(b) = c_1 + ... + c_b`` (cuts at -inf count below every finite value), and
    ``#cuts < v`` the same with the number of ``u_j < v``. ``cum(b)`` is ``b`` plus the
    surplus of the tied cuts up to ``b``: a step function of ``b`` that changes only at the
    positions ``j`` of tied values. A third search over those positions gives the number
    ``k`` of tie groups at or below ``b``, and the surplus is element ``k`` of one literal
    array of cumulative surpluses (as long as the number of tie groups, not of cuts).
    Infinite and NaN values get their counts without the search.
    """

    def __init__(self, cuts: list[float]) -> None:
        self.n = len(cuts)
        self.neg = sum(1 for x in cuts if x == -math.inf)
        self.pos = sum(1 for x in cuts if x == math.inf)
        self.nan = sum(1 for x in cuts if math.isnan(x))
        counts = Counter(x for x in cuts if math.isfinite(x))
        self.distinct = sorted(counts)
        self.finite = sum(counts.values())
        # (j, surplus of the ties among u_1..u_j) at every j whose u_j is tied
        self.ties: list[tuple[int, int]] = []
        surplus = 0
        for j, u in enumerate(self.distinct, start=1):
            if counts[u] > 1:
                surplus += counts[u] - 1
                self.ties.append((j, surplus))

    @property
    def splits(self) -> list[float] | None:
        """Splits of the ``<=`` search, or None when no cut point is finite (no search)."""
        return [-math.inf, *self.distinct, math.inf] if self.distinct else None

    @property
    def splits_below(self) -> list[float] | None:
        """Splits of the ``<`` search: just above each cut (``v >= nextafter(u, inf)`` is
        ``v > u`` for doubles), still strictly increasing."""
        if not self.distinct:
            return None
        return [-math.inf, *[math.nextafter(u, math.inf) for u in self.distinct], math.inf]

    @property
    def tie_splits(self) -> list[float] | None:
        """Splits of the search over tie positions (``k`` = the number of tie groups at
        positions ``<= b``), or None without ties."""
        if not self.ties:
            return None
        return [-math.inf, *[float(j) for j, _ in self.ties], math.inf]

    def cum(self, b: Column, k: Column | None) -> Column:
        """``c_1 + ... + c_b`` for a bucket column ``b`` (0..m) and its tie search ``k``."""
        b = F.least(b.cast("int"), F.lit(len(self.distinct)))
        if not self.ties:
            return b
        assert k is not None, "cut points with ties need the tie search (bucketize)"
        surplus = F.expr("array(0, " + ", ".join(str(extra) for _, extra in self.ties) + ")")
        return b + F.element_at(surplus, k.cast("int") + 1)

    def _finite(self, search: Search | None) -> tuple[Column, Column]:
        if search is None:
            return F.lit(self.neg), F.lit(self.neg)
        return (self.neg + self.cum(search.below, search.ties_below),
                self.neg + self.cum(search.at_or_below, search.ties_at_or_below))

    def mid_rank(self, v: Column, search: Search | None) -> Column:
        """``(#cuts < v + #cuts <= v) / 2`` (null for a null ``v``): at a cut point the mid of
        its tie range, else ``#cuts <= v``."""
        lt, le = self._finite(search)
        return (F.when(v.isNull(), F.lit(None).cast("double"))
                .when(F.isnan(v), F.lit(self.n - self.nan / 2.0))
                .when(v == F.lit(math.inf), F.lit(self.neg + self.finite + self.pos / 2.0))
                .when(v == F.lit(-math.inf), F.lit(self.neg / 2.0))
                .otherwise((lt + le) / 2.0))

    def below(self, v: Column, search: Search | None) -> Column:
        """``#cuts < v`` (null for a null ``v``); ``search``: ``v``'s :func:`bucketize`."""
        lt, _ = self._finite(search)
        return (F.when(v.isNull(), F.lit(None).cast("int"))
                .when(F.isnan(v), F.lit(self.n - self.nan))
                .when(v == F.lit(math.inf), F.lit(self.neg + self.finite))
                .when(v == F.lit(-math.inf), F.lit(0))
                .otherwise(lt))

    def at_or_below(self, v: Column, search: Search | None) -> Column:
        """``#cuts <= v`` (null for a null ``v``)."""
        _, le = self._finite(search)
        return (F.when(v.isNull(), F.lit(None).cast("int"))
                .when(F.isnan(v), F.lit(self.n))
                .when(v == F.lit(math.inf), F.lit(self.neg + self.finite + self.pos))
                .when(v == F.lit(-math.inf), F.lit(self.neg))
                .otherwise(le))


HELPER_PREFIX = "__cuts_"


def bucketize(df: DataFrame, cuts: dict[str, CutPoints]) -> tuple[DataFrame, dict[str, Search]]:
    """``df`` with the searches :class:`CutPoints` needs for each column of ``cuts`` that
    has finite cut points (of the column's :func:`rank_value`).

    One ``pyspark.ml.feature.Bucketizer`` (compiled binary search; the splits travel as
    ``double[]``) computes both searches of every column in one projection; a second one
    searches the tie positions of the columns whose cut points are tied.

    Returns:
        The DataFrame (its columns, then helper columns named ``__cuts_*``: select them away
        when done) and the :class:`Search` of each searched column (absent means no search
        is needed).
    """
    from pyspark.ml.feature import Bucketizer

    searched = [c for c, cp in cuts.items() if cp.splits is not None]
    if not searched:
        return df, {}
    names = {c: f"{HELPER_PREFIX}{i}" for i, c in enumerate(searched)}
    with_values = df.select("*", *[rank_value(F.col(c)).alias(f"{names[c]}_value")
                                   for c in searched])
    inputs, outputs, splits = [], [], []
    for c in searched:
        for kind, sp in (("le", cuts[c].splits), ("lt", cuts[c].splits_below)):
            inputs.append(f"{names[c]}_value")
            outputs.append(f"{names[c]}_{kind}")
            splits.append(sp)
    out = Bucketizer(inputCols=inputs, outputCols=outputs, splitsArray=splits,
                     handleInvalid="keep").transform(with_values)
    tied = [c for c in searched if cuts[c].tie_splits is not None]
    if tied:
        inputs, outputs, splits = [], [], []
        for c in tied:
            for kind in ("le", "lt"):
                inputs.append(f"{names[c]}_{kind}")
                outputs.append(f"{names[c]}_k{kind}")
                splits.append(cuts[c].tie_splits)
        out = Bucketizer(inputCols=inputs, outputCols=outputs, splitsArray=splits,
                         handleInvalid="keep").transform(out)

    def search(c: str) -> Search:
        n = names[c]
        if c in tied:
            return Search(F.col(f"{n}_le"), F.col(f"{n}_lt"), F.col(f"{n}_kle"),
                          F.col(f"{n}_klt"))
        return Search(F.col(f"{n}_le"), F.col(f"{n}_lt"))

    return out, {c: search(c) for c in searched}

"""Settings of the loyalty score (YAML section ``loyalty``; docs/quality.md).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from cvm_spark.common.ahp import AhpResult
from cvm_spark.config.checks import ahp_weights, check
from cvm_spark.config.sources import PRODUCT_LINES

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
_RESERVED_DIMENSIONS = ("score", "band")  # would collide with loyalty_score / loyalty_band


@dataclass(frozen=True)
class LoyaltyIndicator:
    """One indicator of a dimension.

    Attributes:
        name: a column of the features table, or (with ``sum_of``) the indicator's own name.
        direction: +1 when a higher value means more loyal, -1 when it means less.
        sum_of: when given, the indicator is the sum of these features columns (a null counts
            as 0 in the sum).
    """

    name: str
    direction: int = 1
    sum_of: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(bool(self.name.strip()), "name must not be blank")
        check(self.direction in (1, -1), f"direction must be 1 or -1, got {self.direction}")
        check(len(set(self.sum_of)) == len(self.sum_of),
              f"sum_of has duplicates: {self.sum_of}")

    @property
    def columns(self) -> list[str]:
        """Features columns the indicator reads."""
        return self.sum_of or [self.name]


@dataclass(frozen=True)
class LoyaltyDimension:
    """A named group of indicators; its score column is ``loyalty_<name>``."""

    name: str
    indicators: list[LoyaltyIndicator]

    def __post_init__(self) -> None:
        check(_IDENTIFIER.fullmatch(self.name) is not None,
              f"name must be a lower-case identifier, got {self.name!r}")
        check(self.name not in _RESERVED_DIMENSIONS,
              f"name must not be one of {_RESERVED_DIMENSIONS}")
        check(len(self.indicators) > 0, "indicators must not be empty")
        names = [i.name for i in self.indicators]
        check(len(set(names)) == len(names), f"indicators has duplicate names: {names}")


@dataclass(frozen=True)
class LoyaltyBand:
    """A band by rank: the accounts down to ``top_share`` of the population, counted from the
    top, that are not in an earlier band."""

    label: str
    top_share: float

    def __post_init__(self) -> None:
        check(bool(self.label.strip()), "label must not be blank")
        check(0 < self.top_share <= 1, f"top_share must be in (0, 1], got {self.top_share}")


def _default_dimensions() -> list[LoyaltyDimension]:
    return [
        LoyaltyDimension("tenure", [LoyaltyIndicator("tenure_months")]),
        LoyaltyDimension("activity", [
            LoyaltyIndicator("active_months_12m"), LoyaltyIndicator("frequency_12m"),
            LoyaltyIndicator("monetary_12m")]),
        LoyaltyDimension("depth", [
            LoyaltyIndicator("product_count"),
            LoyaltyIndicator("total_balance_12m",
                             sum_of=[f"avg_balance_{pl}_12m" for pl in PRODUCT_LINES]),
            LoyaltyIndicator("income_12m")]),
        LoyaltyDimension("stability", [LoyaltyIndicator("income_volatility_12m", -1)]),
    ]


def _default_bands() -> list[LoyaltyBand]:
    return [LoyaltyBand("high", 0.10), LoyaltyBand("fairly_high", 0.60),
            LoyaltyBand("average", 0.90), LoyaltyBand("low", 1.0)]


DIMENSION_WEIGHTINGS = ("entropy", "ahp")


@dataclass(frozen=True)
class LoyaltyConfig:
    """Loyalty score (spec section 5, loyalty).

    Attributes:
        dimensions: the dimensions and their indicators.
        bands: best band first, with cumulative ``top_share`` increasing to 1.0.
        score_scale: the composite and dimension scores run from 0 to this.
        epsilon: a standard deviation or a min-max range at or below it counts as constant.
        relative_error: of the approximate percentiles that place the band cut points.
        dimension_weighting: ``entropy`` (default: weights between dimensions from the data,
            by the entropy method) or ``ahp`` (fixed weights from ``pairwise``).
        pairwise: with ``ahp``, the comparison matrix over the dimensions, in their order
            (:mod:`cvm_spark.common.ahp`; consistency ratio below 0.10).
    """

    dimensions: list[LoyaltyDimension] = field(default_factory=_default_dimensions)
    bands: list[LoyaltyBand] = field(default_factory=_default_bands)
    score_scale: float = 100.0
    epsilon: float = 1e-12
    relative_error: float = 0.0001
    dimension_weighting: str = "entropy"
    pairwise: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(len(self.dimensions) > 0, "dimensions must not be empty")
        names = [d.name for d in self.dimensions]
        check(len(set(names)) == len(names), f"dimensions has duplicate names: {names}")
        check(len(self.bands) >= 2, "bands must list at least two bands")
        labels = [b.label for b in self.bands]
        check(len(set(labels)) == len(labels), f"bands has duplicate labels: {labels}")
        shares = [b.top_share for b in self.bands]
        check(all(a < b for a, b in itertools.pairwise(shares)),
              f"bands: top_share must increase from the first band, got {shares}")
        check(shares[-1] == 1.0, f"bands: the last band must have top_share 1.0, got "
              f"{shares[-1]}")
        check(self.score_scale > 0, f"score_scale must be > 0, got {self.score_scale}")
        check(0 <= self.epsilon < 1e-3, f"epsilon must be in [0, 0.001), got {self.epsilon}")
        check(0 < self.relative_error < 0.1, "relative_error must be in (0, 0.1)")
        check(self.dimension_weighting in DIMENSION_WEIGHTINGS,
              f"dimension_weighting must be one of {DIMENSION_WEIGHTINGS}, got "
              f"{self.dimension_weighting!r}")
        result = None
        if self.dimension_weighting == "ahp":
            result = ahp_weights(names, self.pairwise)
        else:
            check(not self.pairwise, "pairwise is only read with dimension_weighting: ahp")
        object.__setattr__(self, "_ahp", result)

    @property
    def ahp(self) -> AhpResult | None:
        """With ``dimension_weighting: ahp``, the AHP result (weights in dimension order)."""
        return self._ahp

    @property
    def feature_columns(self) -> list[str]:
        """Every features column the configuration reads."""
        cols = [c for d in self.dimensions for i in d.indicators for c in i.columns]
        return list(dict.fromkeys(cols))

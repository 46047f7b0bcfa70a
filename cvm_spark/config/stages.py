"""Settings of the feature and value stages: window features, RFM, value components and
company KPIs (YAML sections ``features``, ``rfm``, ``value`` and ``kpi``); the tiers'
settings are in :mod:`cvm_spark.config.segments`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from cvm_spark.common.ahp import AhpResult
from cvm_spark.config.checks import ahp_weights, check


@dataclass(frozen=True)
class FeaturesConfig:
    """Window features (spec section 2)."""

    windows_months: list[int] = field(default_factory=lambda: [1, 3, 6, 12])
    trend_months: int = 6
    volatility_months: int = 12
    active_months: int = 12
    purchase_directions: list[str] = field(default_factory=lambda: ["debit"])

    def __post_init__(self) -> None:
        check(len(self.windows_months) > 0, "windows_months must not be empty")
        check(len(self.purchase_directions) > 0, "purchase_directions must not be empty")
        for i, w in enumerate(self.windows_months):
            check(w >= 1, f"windows_months[{i}] must be >= 1 month, got {w}")
            check(w <= 120, f"windows_months[{i}] must be <= 120 months, got {w}")
        check(len(set(self.windows_months)) == len(self.windows_months),
              f"windows_months has duplicates: {self.windows_months}")
        check(2 <= self.trend_months <= 60, "trend_months must be in 2..60")
        check(2 <= self.volatility_months <= 60, "volatility_months must be in 2..60")
        check(1 <= self.active_months <= 62, "active_months must be in 1..62")

    @property
    def windows(self) -> list[int]:
        return sorted(self.windows_months)

    @property
    def lookback_months(self) -> int:
        """Months of monthly facts any feature looks at."""
        return max([*self.windows_months, self.trend_months, self.volatility_months,
                    self.active_months])


@dataclass(frozen=True)
class SegmentRule:
    """A named RFM segment: inclusive score ranges ``[low, high]`` for R, F and M."""

    name: str
    r: list[int]
    f: list[int]
    m: list[int]

    def __post_init__(self) -> None:
        check(bool(self.name.strip()), "name must not be blank")
        for key in ("r", "f", "m"):
            rng = getattr(self, key)
            check(len(rng) == 2 and rng[0] <= rng[1],
                  f"{key} must be [low, high] with low <= high, got {rng}")

    def matches(self, r: int, f: int, m: int) -> bool:
        return (self.r[0] <= r <= self.r[1] and self.f[0] <= f <= self.f[1]
                and self.m[0] <= m <= self.m[1])


@dataclass(frozen=True)
class RfmConfig:
    """RFM scoring (spec section 3). Segments are tried in order; the first match wins."""

    bins: int = 5
    window_months: int = 12
    relative_error: float = 0.001
    segments: list[SegmentRule] = field(default_factory=list)
    lowest_score: int = 1    # scores run lowest_score .. lowest_score + bins - 1 (telecom: 0)

    def __post_init__(self) -> None:
        check(2 <= self.bins <= 9, f"bins must be in 2..9, got {self.bins}")
        check(self.lowest_score in (0, 1), f"lowest_score must be 0 or 1, got "
                                           f"{self.lowest_score}")
        check(self.window_months >= 1, f"window_months must be >= 1, got {self.window_months}")
        check(0 < self.relative_error < 0.1, "relative_error must be in (0, 0.1)")
        check(len(self.segments) > 0, "segments must not be empty")
        lo_s, hi_s = self.lowest_score, self.highest_score
        for i, rule in enumerate(self.segments):
            for key in ("r", "f", "m"):
                lo, hi = getattr(rule, key)
                check(lo >= lo_s and hi <= hi_s,
                      f"segments[{i}].{key} {[lo, hi]} outside {lo_s}..{hi_s} (rfm.bins "
                      f"{self.bins}, lowest_score {lo_s})")
        scores = range(lo_s, hi_s + 1)
        uncovered = [(r, f, m) for r in scores for f in scores for m in scores
                     if not any(rule.matches(r, f, m) for rule in self.segments)]
        check(not uncovered, f"segments leave {len(uncovered)} score combination(s) "
              f"without a segment, e.g. r,f,m = {uncovered[:3]}")

    @property
    def highest_score(self) -> int:
        return self.lowest_score + self.bins - 1


def _weights_sum_to_one(weights: dict[str, float], name: str) -> None:
    for key, w in weights.items():
        check(0 <= w <= 1, f"{name}.{key} must be in 0..1, got {w}")
    total = sum(weights.values())
    check(abs(total - 1) < 1e-9, f"{name} must sum to 1, got {total:.6g}")


@dataclass(frozen=True)
class InfluenceWeights:
    """w1, w2, w3 of influence value = w1*enterprise + w2*family + w3*radiation."""

    enterprise: float = 0.4
    family: float = 0.4
    radiation: float = 0.2


CONTRIBUTION_PARTS = ("historical", "current", "influence", "future")
_CONTRIBUTION_DEFAULTS = {"historical": 0.20, "current": 0.55, "influence": 0.05,
                          "future": 0.20}
WEIGHT_METHODS = ("fixed", "ahp")


@dataclass(frozen=True)
class ContributionWeights:
    """Weights of the percentile-scaled components in contribution value.

    ``method: fixed`` (default): the four weights as typed (defaults .20 / .55 / .05 / .20).
    ``method: ahp``: derived from ``pairwise``, a 4 x 4 comparison matrix over
    ``historical, current, influence, future`` (in that order; :mod:`cvm_spark.common.ahp`),
    whose consistency ratio must be below 0.10; weights typed next to it must equal the
    derived ones (so a saved config reloads). :attr:`ahp` keeps the result (weights, CR).
    """

    historical: float | None = None
    current: float | None = None
    influence: float | None = None
    future: float | None = None
    method: str = "fixed"
    pairwise: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(self.method in WEIGHT_METHODS,
              f"method must be one of {WEIGHT_METHODS}, got {self.method!r}")
        result = None
        if self.method == "fixed":
            check(not self.pairwise, "pairwise is only read with method: ahp")
            derived = {k: _CONTRIBUTION_DEFAULTS[k] if getattr(self, k) is None
                       else getattr(self, k) for k in CONTRIBUTION_PARTS}
        else:
            result = ahp_weights(list(CONTRIBUTION_PARTS), self.pairwise)
            derived = dict(zip(CONTRIBUTION_PARTS, result.weights, strict=True))
            for k in CONTRIBUTION_PARTS:
                typed = getattr(self, k)
                check(typed is None or abs(typed - derived[k]) <= 1e-9,
                      f"{k} = {typed} differs from its AHP weight {derived[k]:.6g}: with "
                      f"method: ahp leave the weights out (they come from pairwise)")
        for k, w in derived.items():
            object.__setattr__(self, k, w)
        object.__setattr__(self, "_ahp", result)

    @property
    def ahp(self) -> AhpResult | None:
        """The AHP result with ``method: ahp``, else None."""
        return self._ahp

    def as_dict(self) -> dict[str, float]:
        """Part -> weight."""
        return {k: float(getattr(self, k)) for k in CONTRIBUTION_PARTS}


NO_EVIDENCE_RANKS = ("bottom", "tie_middle")


@dataclass(frozen=True)
class ValueConfig:
    """Current, historical, influence and contribution value (spec section 4)."""

    current_months: int = 12
    decay: float = 0.9
    backfill_months: int = 12
    product_groups: dict[str, list[str]] = field(default_factory=lambda: {
        "savings": ["demand_deposit", "time_deposit"], "loans": ["loan", "card"],
        "wealth": ["wealth"], "other": ["fee_other"]})
    radiation_min_transfers: int = 3
    influence_weights: InfluenceWeights = field(default_factory=InfluenceWeights)
    contribution_weights: ContributionWeights = field(default_factory=ContributionWeights)
    percentile_points: int = 1000
    # how a component value of 0 (no income, no spend, no relations: no evidence) ranks:
    # "bottom" = the lowest rank a 0 can take (#cuts < 0), "tie_middle" = the middle of the tie
    no_evidence_rank: str = "bottom"

    def __post_init__(self) -> None:
        check(1 <= self.current_months <= 120, "current_months must be in 1..120")
        check(self.no_evidence_rank in NO_EVIDENCE_RANKS,
              f"no_evidence_rank must be one of {NO_EVIDENCE_RANKS}, got "
              f"{self.no_evidence_rank!r}")
        check(0 < self.decay <= 1, f"decay must be in (0, 1], got {self.decay}")
        check(1 <= self.backfill_months <= 60, "backfill_months must be in 1..60")
        check(len(self.product_groups) > 0, "product_groups must not be empty")
        for group in self.product_groups:
            check(re.fullmatch(r"[a-z][a-z0-9_]*", group) is not None,
                  f"product_groups key {group!r} must be a lower-case identifier")
        check(self.radiation_min_transfers >= 1, "radiation_min_transfers must be >= 1")
        check(100 <= self.percentile_points <= 10000, "percentile_points must be in 100..10000")
        _weights_sum_to_one(dataclasses.asdict(self.influence_weights), "influence_weights")
        _weights_sum_to_one(self.contribution_weights.as_dict(), "contribution_weights")


@dataclass(frozen=True)
class KpiConfig:
    """Company-level KPIs of the ``kpi_summary`` table (spec section 9).

    Attributes:
        min_group_size: a figure computed from fewer accounts (or survey responses) than
            this is flagged ``small_group`` (shown, not hidden).
        survey_months: CSAT and NPS read the survey responses of this many months, up to
            the snapshot month end.
    """

    min_group_size: int = 30
    survey_months: int = 12

    def __post_init__(self) -> None:
        check(self.min_group_size >= 1, f"min_group_size must be >= 1, got "
                                        f"{self.min_group_size}")
        check(1 <= self.survey_months <= 120, f"survey_months must be in 1..120, got "
                                              f"{self.survey_months}")

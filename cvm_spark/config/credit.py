"""Settings of the credit scorecard, grades and roll-ups (YAML section ``credit``;
docs/quality.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from cvm_spark.config.checks import check

ROLLUP_RULES = ("worst", "mode")


@dataclass(frozen=True)
class ScoreBin:
    """One bin of a scorecard characteristic: values ``<= upper`` (None = no upper bound)."""

    upper: float | None = None
    points: int = 0


def check_bins(name: str, bins: list[ScoreBin]) -> None:
    check(len(bins) > 0, f"{name} must have at least one bin")
    check(bins[-1].upper is None,
          f"{name}: the last bin must have upper: null (no upper bound), got {bins[-1].upper}")
    uppers = [b.upper for b in bins[:-1]]
    for i, u in enumerate(uppers):
        check(u is not None, f"{name}[{i}].upper: only the last bin may have no upper bound")
    for i in range(1, len(uppers)):
        check(uppers[i] > uppers[i - 1],
              f"{name}[{i}].upper must be greater than the previous bin's, got {uppers}")


@dataclass(frozen=True)
class Scorecard:
    """Points per bin of each characteristic plus a base score.

    Defaults give scores from 20 (worst bin everywhere) to 100 (best bin everywhere).
    """

    base_score: int = 20
    max_dpd: list[ScoreBin] = field(default_factory=lambda: [
        ScoreBin(0, 35), ScoreBin(30, 20), ScoreBin(60, 10), ScoreBin(90, 5), ScoreBin(None, 0)])
    delinquent_months: list[ScoreBin] = field(default_factory=lambda: [
        ScoreBin(0, 20), ScoreBin(1, 15), ScoreBin(3, 8), ScoreBin(6, 3), ScoreBin(None, 0)])
    overdue_ratio: list[ScoreBin] = field(default_factory=lambda: [
        ScoreBin(0.0, 15), ScoreBin(0.1, 8), ScoreBin(0.3, 3), ScoreBin(None, 0)])
    utilisation: list[ScoreBin] = field(default_factory=lambda: [
        ScoreBin(0.3, 10), ScoreBin(0.6, 7), ScoreBin(0.9, 3), ScoreBin(None, 0)])

    def __post_init__(self) -> None:
        for name in ("max_dpd", "delinquent_months", "overdue_ratio", "utilisation"):
            check_bins(name, getattr(self, name))


@dataclass(frozen=True)
class GradeCut:
    """A grade and the lowest score that earns it (None: every lower score, the last grade)."""

    grade: str
    min_score: float | None = None


@dataclass(frozen=True)
class CreditConfig:
    """Credit scorecard, grades and roll-ups (spec section 5, credit).

    Attributes:
        scorecard: bins and points per characteristic, and the base score.
        grades: best grade first; each needs ``score >= min_score``; the last has
            ``min_score: null`` and takes every lower score.
        delinquency_months: window of ``delinquent_months`` and ``max_dpd`` (incl. the month).
        quarter_months, half_year_months: monthly grades combined by the roll-ups.
        rollup_rule: ``worst`` (the worst monthly grade) or ``mode`` (the most frequent
            monthly grade; a tie goes to the worse grade).
    """

    scorecard: Scorecard = field(default_factory=Scorecard)
    grades: list[GradeCut] = field(default_factory=lambda: [
        GradeCut("A", 85), GradeCut("B", 70), GradeCut("C", 55), GradeCut("D", 40),
        GradeCut("E", None)])
    delinquency_months: int = 12
    quarter_months: int = 3
    half_year_months: int = 6
    rollup_rule: str = "worst"

    def __post_init__(self) -> None:
        check(len(self.grades) >= 2, "grades must list at least two grades")
        labels = [g.grade for g in self.grades]
        check(len(set(labels)) == len(labels), f"grades has duplicate labels: {labels}")
        check(all(label.strip() for label in labels), "grades: a grade label is blank")
        check(self.grades[-1].min_score is None,
              "grades: the last grade must have min_score: null (every lower score)")
        cuts = [g.min_score for g in self.grades[:-1]]
        check(all(c is not None for c in cuts),
              "grades: only the last grade may have min_score: null")
        check(all(a > b for a, b in itertools.pairwise(cuts)),
              f"grades: min_score must decrease from the best grade down, got {cuts}")
        check(1 <= self.delinquency_months <= 60, "delinquency_months must be in 1..60")
        check(1 <= self.quarter_months <= 24, "quarter_months must be in 1..24")
        check(self.quarter_months <= self.half_year_months <= 36,
              "half_year_months must be in quarter_months..36")
        check(self.rollup_rule in ROLLUP_RULES,
              f"rollup_rule must be one of {ROLLUP_RULES}, got {self.rollup_rule!r}")

    @property
    def labels(self) -> list[str]:
        """Grade labels, best first (rank 0 = best)."""
        return [g.grade for g in self.grades]

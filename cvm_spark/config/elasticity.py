"""Settings of the value elasticity (YAML section ``elasticity``; docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cvm_spark.config.checks import check

METHODS = ("base", "arc")


@dataclass(frozen=True)
class ElasticityLabels:
    """Class labels written to ``elasticity_class``."""

    elastic: str = "elastic"
    unit: str = "unit"
    inelastic: str = "inelastic"
    undefined: str = "undefined"

    def __post_init__(self) -> None:
        labels = [self.elastic, self.unit, self.inelastic, self.undefined]
        check(all(label.strip() for label in labels), f"labels must not be blank: {labels}")
        check(len(set(labels)) == len(labels), f"labels must be distinct: {labels}")


@dataclass(frozen=True)
class ElasticityConfig:
    """Value elasticity (spec section 5, elasticity).

    Attributes:
        period_months: length of the current and of the previous period.
        method: ``base`` (relative to the previous period) or ``arc`` (midpoint).
        unit_tolerance: ``|E|`` within ``1 +- unit_tolerance`` is unit elastic.
        spend_change_tolerance: a relative spend change ``|dP / P|`` at or below this counts
            as "spend did not change" (E undefined); 0.0 = only exactly equal spend.
        labels: class labels.
    """

    period_months: int = 3
    method: str = "base"
    unit_tolerance: float = 0.05
    spend_change_tolerance: float = 0.0
    labels: ElasticityLabels = field(default_factory=ElasticityLabels)

    def __post_init__(self) -> None:
        check(1 <= self.period_months <= 24,
              f"period_months must be in 1..24, got {self.period_months}")
        check(self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}")
        check(0 <= self.unit_tolerance < 1,
              f"unit_tolerance must be in [0, 1), got {self.unit_tolerance}")
        check(0 <= self.spend_change_tolerance < 1,
              f"spend_change_tolerance must be in [0, 1), got {self.spend_change_tolerance}")

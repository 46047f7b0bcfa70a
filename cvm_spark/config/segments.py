"""Settings of the segment stage (YAML section ``tiers``): ABC classes, lifecycle stages,
value tiers, ARPU classes, risk customers, the 2 x 2 matrices and campaigns (docs/model.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from cvm_spark.config.checks import check
from cvm_spark.schemas.outputs import LIFECYCLE_STAGES

ABC_MEASURES = ("contribution_money", "contribution_value")
VALUE_LEVELS = ("high", "medium", "low")


@dataclass(frozen=True)
class AbcConfig:
    """Pareto classes: A up to ``a_share`` of the cumulative ``measure``, B up to ``b_share``.

    ``measure``: ``contribution_money`` (default: the contribution weights applied to the
    value components in currency, so class A is the few accounts that carry most of the
    money) or ``contribution_value`` (the 0..100 percentile composite).
    """

    a_share: float = 0.80
    b_share: float = 0.95
    points: int = 1000
    measure: str = "contribution_money"

    def __post_init__(self) -> None:
        check(self.measure in ABC_MEASURES,
              f"measure must be one of {ABC_MEASURES}, got {self.measure!r}")
        check(0 < self.a_share < self.b_share < 1,
              f"a_share and b_share must satisfy 0 < a_share < b_share < 1, got "
              f"{self.a_share}, {self.b_share}")
        check(10 <= self.points <= 10000, "points must be in 10..10000")


@dataclass(frozen=True)
class LifecycleConfig:
    """Lifecycle stage rules, tried in the order of the stages below (docs/model.md)."""

    dormant_months: int = 6
    new_months: int = 6
    churn_risk_days: int = 60
    churn_risk_trend: float = -0.10
    growing_trend: float = 0.05
    fluctuating_volatility: float = 0.5

    def __post_init__(self) -> None:
        check(self.dormant_months >= 1, "dormant_months must be >= 1")
        check(self.new_months >= 1, "new_months must be >= 1")
        check(self.churn_risk_days >= 1, "churn_risk_days must be >= 1")
        check(self.churn_risk_trend < 0 < self.growing_trend,
              "churn_risk_trend must be < 0 < growing_trend")
        check(self.fluctuating_volatility > 0, "fluctuating_volatility must be > 0")


@dataclass(frozen=True)
class TierRule:
    """A value tier: conditions (empty list / null / false = any) and how the bank serves it.

    ``min_value_pct``: the contribution value percentile must be at least this (the tier's
    share of accounts: 97 keeps the tier within the top 3 %); ``credit_grades`` may name
    ``tiers.no_credit_grade`` (``unknown``) to admit accounts without a grade;
    ``require_active``: accounts closed, or without a transaction and without positive income
    for ``tiers.dormancy_months`` months, are not eligible (the dormancy guard).
    """

    name: str
    value_levels: list[str]
    loyalty_bands: list[str]
    credit_grades: list[str]
    channel: str
    service_level: str
    label_en: str
    label_zh: str
    min_value_pct: float | None = None
    require_active: bool = False

    def __post_init__(self) -> None:
        check(self.min_value_pct is None or 0 < self.min_value_pct < 100,
              f"min_value_pct must be null or in (0, 100), got {self.min_value_pct}")

    @property
    def has_conditions(self) -> bool:
        return bool(self.value_levels or self.loyalty_bands or self.credit_grades
                    or self.min_value_pct is not None or self.require_active)


@dataclass(frozen=True)
class QuadrantConfig:
    """Labels and strategies of a 2 x 2 matrix, keyed ``<row>_<column>``."""

    labels: dict[str, str]
    strategies: dict[str, str]


@dataclass(frozen=True)
class CampaignCondition:
    """``column op value``; ops: < <= > >= == != in not_in is_null not_null."""

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        ops = ("<", "<=", ">", ">=", "==", "!=", "in", "not_in", "is_null", "not_null")
        check(self.op in ops, f"op must be one of {ops}, got {self.op!r}")
        if self.op in ("in", "not_in"):
            check(isinstance(self.value, list) and len(self.value) > 0,
                  f"value must be a non-empty list for op {self.op}")
        elif self.op in ("==", "!="):
            check(isinstance(self.value, (int, float, str, bool)),
                  f"value must be a number, string or true/false for op {self.op}")
        elif self.op not in ("is_null", "not_null"):
            check(isinstance(self.value, (int, float, str)) and not isinstance(self.value, bool),
                  f"value must be a number or string for op {self.op}")
        if self.column == "lifecycle_stage" and self.op in ("in", "not_in", "==", "!="):
            values = self.value if isinstance(self.value, list) else [self.value]
            unknown = [v for v in values if v not in LIFECYCLE_STAGES]
            check(not unknown, f"value names lifecycle stage(s) {unknown} that do not exist; "
                               f"the stages are {list(LIFECYCLE_STAGES)}")


@dataclass(frozen=True)
class CampaignRule:
    """A campaign: accounts meeting every condition are targeted, with the reason."""

    name: str
    reason: str
    conditions: list[CampaignCondition]

    def __post_init__(self) -> None:
        check(len(self.conditions) > 0, "conditions must not be empty")


@dataclass(frozen=True)
class ArpuClass:
    """An ARPU contribution class: accounts whose monthly ARPU is at least ``min_arpu``
    (null: any, the last class) and below the previous class's."""

    label: str
    min_arpu: float | None = None

    def __post_init__(self) -> None:
        check(bool(self.label.strip()), "label must not be blank")


@dataclass(frozen=True)
class RiskReason:
    """A reason an account is a risk customer: every condition holds (campaign language)."""

    name: str
    conditions: list[CampaignCondition]

    def __post_init__(self) -> None:
        check(bool(self.name.strip()) and "; " not in self.name,
              f"name must not be blank or contain '; ', got {self.name!r}")
        check(len(self.conditions) > 0, "conditions must not be empty")


@dataclass(frozen=True)
class RiskCustomersConfig:
    """Risk-customer identification (seed 001): ``risk_reasons`` lists every reason that
    holds for an account; an account of one of ``value_levels`` with a reason is a risk
    customer, and any reason puts an account on the high-risk side of value x risk."""

    value_levels: list[str] = field(default_factory=lambda: ["high"])
    reasons: list[RiskReason] = field(default_factory=list)

    def __post_init__(self) -> None:
        check(len(self.value_levels) > 0, "value_levels must not be empty")
        for level in self.value_levels:
            check(level in VALUE_LEVELS,
                  f"value_levels: {level!r} is not one of {list(VALUE_LEVELS)}")
        names = [r.name for r in self.reasons]
        check(len(set(names)) == len(names), f"reasons has duplicate names: {names}")


@dataclass(frozen=True)
class TiersConfig:
    """Classes, stages, tiers, matrices and campaigns (spec section 7)."""

    high_value_pct: float = 80.0
    medium_value_pct: float = 50.0
    risky_credit_grades: list[str] = field(default_factory=lambda: ["D", "E"])
    no_credit_grade: str = "unknown"
    dormancy_months: int = 6
    credit_grade_column: str = "credit_grade_3m"
    growth_trend: float = 0.0
    abc: AbcConfig = field(default_factory=AbcConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    tiers: list[TierRule] = field(default_factory=list)
    value_risk: QuadrantConfig | None = None
    value_growth: QuadrantConfig | None = None
    campaigns: list[CampaignRule] = field(default_factory=list)
    arpu_classes: list[ArpuClass] = field(default_factory=list)
    arpu_class_months: int = 3     # the classes read arpu_<N>m (a feature window)
    risk_customers: RiskCustomersConfig = field(default_factory=RiskCustomersConfig)

    def __post_init__(self) -> None:
        check(0 < self.medium_value_pct < self.high_value_pct < 100,
              "need 0 < medium_value_pct < high_value_pct < 100")
        check(len(self.tiers) > 0, "tiers must not be empty")
        last = self.tiers[-1]
        check(not last.has_conditions,
              f"tiers: the last tier ({last.name}) must have no conditions (it takes the rest)")
        check(bool(self.no_credit_grade.strip()), "no_credit_grade must not be blank")
        check(1 <= self.dormancy_months <= 120, "dormancy_months must be in 1..120")
        names = [t.name for t in self.tiers]
        check(len(set(names)) == len(names), f"tiers has duplicate names: {names}")
        for i, tier in enumerate(self.tiers):
            for level in tier.value_levels:
                check(level in VALUE_LEVELS,
                      f"tiers[{i}].value_levels: {level!r} is not high, medium or low")
        for key in ("value_risk", "value_growth"):
            quad = getattr(self, key)
            check(quad is not None, f"{key} is required")
            rows = ("high", "low")
            cols = ("high_risk", "low_risk") if key == "value_risk" else ("high_growth",
                                                                          "low_growth")
            want = {f"{r}_value_{c}" for r in rows for c in cols}
            for part in ("labels", "strategies"):
                got = set(getattr(quad, part))
                check(got == want, f"{key}.{part} must have exactly the keys {sorted(want)}, "
                      f"got {sorted(got)}")
        names = [c.name for c in self.campaigns]
        check(len(set(names)) == len(names), f"campaigns has duplicate names: {names}")
        self._check_arpu_classes()

    def _check_arpu_classes(self) -> None:
        classes = self.arpu_classes
        if not classes:
            return
        labels = [c.label for c in classes]
        check(len(set(labels)) == len(labels), f"arpu_classes has duplicate labels: {labels}")
        check(classes[-1].min_arpu is None,
              f"arpu_classes: the last class ({classes[-1].label}) must have min_arpu null "
              "(it takes the rest)")
        mins = [c.min_arpu for c in classes[:-1]]
        check(all(m is not None for m in mins),
              "arpu_classes: only the last class may have min_arpu null")
        check(all(a > b for a, b in itertools.pairwise(mins)),
              f"arpu_classes: min_arpu must fall from the first class to the last, got {mins}")

"""Settings of the future-value model (YAML section ``future_value``;
docs/future_value.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from cvm_spark.config.binding import to_dict
from cvm_spark.config.checks import check

METHODS = ("cluster_regression", "global_regression", "btyd_spend")
AUTO = "auto"
# Derived model columns computed from features-table columns (docs/future_value.md):
# inactive_share_<n>m = 1 - active_months_<n>m / n, tenure_under_<n>m = tenure_months < n.
DERIVED = {
    "inactive_share": (re.compile(r"inactive_share_(\d+)m"), "active_months_{}m"),
    "tenure_under": (re.compile(r"tenure_under_(\d+)m"), "tenure_months"),
}
INTERACTION = "_x_"
RATIO = "_over_"

CLUSTER_TRANSFORMS = ("signed_log1p", "none")
LOSSES = ("squaredError", "huber")
TARGETS = ("change", "income")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Income-based predictors (currency units). Counts and ratios (product_count, active months,
# tenure, volatility, frequency) were measured to hurt on held-out data: in a small
# high-value cluster they get large, unstable coefficients (docs/future_value.md).
# income_1m added with the interactions (issue 17: out-of-time skill, docs/future_value.md).
DEFAULT_FEATURES = [
    "income_1m", "income_3m", "income_6m", "income_12m", "arpu_3m", "arpu_12m",
    "income_trend_6m",
]
# Income-scaled behaviour: the same columns raw did not help (measured, docs/future_value.md).
DEFAULT_INTERACTIONS = [
    ["income_3m", "income_volatility_12m"], ["income_3m", "inactive_share_12m"],
    ["income_3m", "tenure_under_6m"],
]


def source_columns(name: str) -> list[str]:
    """The features-table columns a model column is computed from (itself when plain)."""
    for op in (INTERACTION, RATIO):
        if op in name:
            left, right = name.split(op, 1)
            return [*source_columns(left), *source_columns(right)]
    for pattern, source in DERIVED.values():
        m = pattern.fullmatch(name)
        if m:
            return [source.format(m.group(1))]
    return [name]


@dataclass(frozen=True)
class BacktestConfig:
    """Out-of-time back-test (``future_value.backtest``; docs/future_value.md).

    Attributes:
        origins: number of origins ``T_j = t - j * step`` (j = 1..origins); 0 = off.
        step_months: months between origins; 0 = the horizon H (must be >= H otherwise).
    """

    origins: int = 3
    step_months: int = 0

    def __post_init__(self) -> None:
        check(0 <= self.origins <= 12, f"backtest.origins must be in 0..12, got {self.origins}")
        check(self.step_months >= 0,
              f"backtest.step_months must be >= 0, got {self.step_months}")


@dataclass(frozen=True)
class FutureValueConfig:
    """Future-value model settings (YAML section ``future_value``; docs/future_value.md).

    Attributes:
        horizon_months: H, the months predicted (and the look-back of the training label).
        k: number of KMeans clusters.
        features: features-table columns the per-cluster regressions use, in original units;
            nulls (e.g. ``income_trend_6m`` of a one-month-old account) count as 0.
        cluster_features: features-table columns KMeans clusters on (nulls as 0).
        cluster_transform: ``signed_log1p`` (``sign(x) * ln(1 + |x|)`` before standardising)
            or ``none``.
        cluster_names: names of the clusters ranked by their members' mean label, highest
            first; exactly ``k`` names, or empty for ``cluster_rank_1 .. cluster_rank_k``.
        holdout_fraction: share of training accounts held out for the metrics.
        kmeans_max_iter: KMeans iterations.
        max_iter: LinearRegression iterations (iterative solvers: Huber, elastic net).
        reg_param: LinearRegression regularisation strength (0 = none).
        elastic_net: LinearRegression elastic-net mixing, 0 = ridge .. 1 = lasso
            (``squaredError`` only).
        loss: ``huber`` (robust to outliers) or ``squaredError`` (least squares).
        huber_epsilon: Huber's threshold in units of the fitted scale (> 1).
        target: ``change``: regress ``label - baseline`` and predict ``baseline + change``
            (needs ``income_<H>m``, i.e. H in ``features.windows_months``); ``income``:
            regress the label itself. Without regularisation both give the same model;
            with it, ``change`` shrinks towards the naive forecast instead of towards 0.
        weight_by_level: weight training rows by ``1 / (1 + baseline)^2`` so that relative
            errors count alike (income noise grows with the account's level).
        min_cluster_rows: clusters with fewer training rows use a regression pooled over all
            training rows instead of their own.
        floor_at_zero: predictions below 0 are reported as 0 (income cannot be negative).
    """

    horizon_months: int = 3
    k: int = 3
    features: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES))
    cluster_features: list[str] = field(
        default_factory=lambda: ["income_volatility_12m", "income_trend_6m_over_arpu_12m"])
    cluster_transform: str = "signed_log1p"
    cluster_names: list[str] = field(
        default_factory=lambda: ["high_value", "medium_value", "low_value"])
    holdout_fraction: float = 0.2
    kmeans_max_iter: int = 50
    max_iter: int = 100
    reg_param: float = 0.0
    elastic_net: float = 0.0
    loss: str = "squaredError"
    huber_epsilon: float = 1.35
    target: str = "change"
    weight_by_level: bool = True
    min_cluster_rows: int = 30
    floor_at_zero: bool = True
    interactions: list[list[str]] = field(
        default_factory=lambda: [list(p) for p in DEFAULT_INTERACTIONS])
    method: str = AUTO
    candidates: list[str] = field(
        default_factory=lambda: ["cluster_regression", "global_regression"])
    backtest: BacktestConfig = field(default_factory=BacktestConfig)

    def __post_init__(self) -> None:
        self._check_model()
        self._check_candidates()

    def _check_candidates(self) -> None:
        for i, pair in enumerate(self.interactions):
            check(len(pair) == 2, f"interactions[{i}] must be a pair [a, b], got {pair}")
            for col in pair:
                check(_IDENT.fullmatch(col) is not None and INTERACTION not in col,
                      f"interactions[{i}] must name plain columns, got {col!r}")
        names = self.interaction_names
        check(len(set(names)) == len(names), f"interactions has duplicates: {names}")
        check(not set(names) & set(self.features),
              f"interactions repeat a feature: {sorted(set(names) & set(self.features))}")
        check(len(self.candidates) > 0, "candidates must not be empty")
        for c in self.candidates:
            check(c in METHODS, f"candidates: unknown method {c!r} (one of {METHODS})")
        check(len(set(self.candidates)) == len(self.candidates),
              f"candidates has duplicates: {self.candidates}")
        check(self.method == AUTO or self.method in METHODS,
              f"method must be {AUTO!r} or one of {METHODS}, got {self.method!r}")
        check(self.method == AUTO or self.method in self.candidates,
              f"method {self.method!r} is not in candidates {self.candidates}")
        check(self.method != AUTO or self.backtest.origins > 0,
              "method 'auto' chooses by the back-test: set backtest.origins > 0 or name a "
              "method")
        check(self.backtest.step_months == 0 or self.backtest.step_months >= self.horizon_months,
              f"backtest.step_months must be 0 (= horizon) or >= horizon_months "
              f"({self.horizon_months}), got {self.backtest.step_months}")

    def _check_model(self) -> None:
        check(1 <= self.horizon_months <= 24,
              f"horizon_months must be in 1..24, got {self.horizon_months}")
        check(2 <= self.k <= 20, f"k must be in 2..20, got {self.k}")
        for name in ("features", "cluster_features"):
            cols = getattr(self, name)
            check(len(cols) > 0, f"{name} must not be empty")
            for i, col in enumerate(cols):
                check(_IDENT.fullmatch(col) is not None,
                      f"{name}[{i}] must be a plain column name, got {col!r}")
            check(len(set(cols)) == len(cols), f"{name} has duplicates: {cols}")
        check(self.cluster_transform in CLUSTER_TRANSFORMS,
              f"cluster_transform must be one of {CLUSTER_TRANSFORMS}, "
              f"got {self.cluster_transform!r}")
        check(not self.cluster_names or len(self.cluster_names) == self.k,
              f"cluster_names must have k = {self.k} names (highest value first) or be "
              f"empty for cluster_rank_1..cluster_rank_{self.k}, got {self.cluster_names}")
        check(all(n.strip() for n in self.cluster_names), "cluster_names must not be blank")
        check(len(set(self.cluster_names)) == len(self.cluster_names),
              f"cluster_names has duplicates: {self.cluster_names}")
        check(0 < self.holdout_fraction <= 0.5,
              f"holdout_fraction must be in (0, 0.5], got {self.holdout_fraction}")
        check(self.kmeans_max_iter >= 1,
              f"kmeans_max_iter must be >= 1, got {self.kmeans_max_iter}")
        check(self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}")
        check(self.reg_param >= 0, f"reg_param must be >= 0, got {self.reg_param}")
        check(0 <= self.elastic_net <= 1,
              f"elastic_net must be in 0..1, got {self.elastic_net}")
        check(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        check(self.loss != "huber" or self.elastic_net == 0,
              "loss huber supports only L2 regularisation: set elastic_net to 0")
        check(self.huber_epsilon > 1, f"huber_epsilon must be > 1, got {self.huber_epsilon}")
        check(self.target in TARGETS, f"target must be one of {TARGETS}, got {self.target!r}")
        check(self.min_cluster_rows >= 1,
              f"min_cluster_rows must be >= 1, got {self.min_cluster_rows}")

    @property
    def baseline_column(self) -> str:
        """The feature holding the last H months' income (the naive forecast)."""
        return f"income_{self.horizon_months}m"

    @property
    def interaction_names(self) -> list[str]:
        """Model column of each interaction: ``<a>_x_<b>`` = a * b."""
        return [f"{a}{INTERACTION}{b}" for a, b in self.interactions]

    @property
    def regression_features(self) -> list[str]:
        """The regressions' features: ``features`` then the interactions."""
        return [*self.features, *self.interaction_names]

    @property
    def model_columns(self) -> list[str]:
        """Regression features followed by the cluster features not already among them
        (derived ones computed from :attr:`input_columns`)."""
        reg = self.regression_features
        return [*reg, *[c for c in self.cluster_features if c not in reg]]

    @property
    def input_columns(self) -> list[str]:
        """The features-table columns the model columns are computed from."""
        return list(dict.fromkeys(s for c in self.model_columns for s in source_columns(c)))

    @property
    def step_months(self) -> int:
        """Months between back-test origins."""
        return self.backtest.step_months or self.horizon_months

    @property
    def backtest_offsets(self) -> list[int]:
        """Months back from the snapshot of each back-test origin ``T_j``."""
        return [j * self.step_months for j in range(1, self.backtest.origins + 1)]

    def names(self) -> list[str]:
        """Cluster names by rank (highest mean label first)."""
        return list(self.cluster_names) or [f"cluster_rank_{i + 1}" for i in range(self.k)]

    def fingerprint(self) -> str:
        """Stable hash of these settings (stored with a saved model)."""
        payload = json.dumps(to_dict(self), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

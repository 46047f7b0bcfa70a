"""Settings of the lifetime-value models (YAML section ``clv``; docs/clv.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm_spark.config.checks import check

DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class ClvConfig:
    """Lifetime-value settings (spec section 6; docs/clv.md lists every key).

    Attributes:
        lifetime_days: T of the simple CLV, expected remaining lifetime in days.
        period_days: days per BTYD time unit; recency and T (days) are divided by it before
            fitting and scoring (7 = weeks).
        horizon_periods: horizon of the expected purchases and of the discounted CLV, in
            periods (one discounting step per period).
        discount_rate_annual: yearly discount rate, converted to a per-period rate
            ``(1 + d) ** (period_days / 365.25) - 1``.
        penalizer: L2 coefficient on the parameters, as lifetimes' ``penalizer_coef``.
        max_iter: maximum BFGS iterations per fit.
        tolerance: BFGS gradient tolerance (lifetimes' ``tol``).
        accept_gradient: when BFGS stops because its line search can make no more progress
            at machine precision ("precision loss"), the fit counts as converged if every
            component of the objective's gradient (log-parameters) is at most this.
        monetary_bin: relative width of the log-bins that collapse monetary values for the
            Gamma-Gamma fit (0.001 = 0.1 %); 0 fits on exact values.
        series_tolerance: absolute bound on the truncation error of the 2F1 series.
        max_series_terms: most series terms allowed; more raises ClvFitError.
        max_collapsed_rows: most collapsed rows brought to the driver per fit.
    """

    lifetime_days: float = 1095.0
    period_days: float = 7.0
    horizon_periods: int = 52
    discount_rate_annual: float = 0.10
    penalizer: float = 0.0
    max_iter: int = 500
    tolerance: float = 1e-7
    accept_gradient: float = 1e-5
    monetary_bin: float = 0.001
    series_tolerance: float = 1e-12
    max_series_terms: int = 20_000
    max_collapsed_rows: int = 2_000_000

    def __post_init__(self) -> None:
        check(self.lifetime_days > 0, f"lifetime_days must be > 0, got {self.lifetime_days}")
        check(0 < self.period_days <= 366,
              f"period_days must be in (0, 366], got {self.period_days}")
        check(1 <= self.horizon_periods <= 10_000,
              f"horizon_periods must be in 1..10000, got {self.horizon_periods}")
        check(0 <= self.discount_rate_annual < 1,
              f"discount_rate_annual must be in [0, 1), got {self.discount_rate_annual}")
        check(self.penalizer >= 0, f"penalizer must be >= 0, got {self.penalizer}")
        check(self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}")
        check(0 < self.tolerance < 1, f"tolerance must be in (0, 1), got {self.tolerance}")
        check(self.tolerance <= self.accept_gradient < 1,
              f"accept_gradient must be in [tolerance, 1), got {self.accept_gradient}")
        check(0 <= self.monetary_bin <= 1,
              f"monetary_bin must be in [0, 1] (0 = exact values), got {self.monetary_bin}")
        check(0 < self.series_tolerance < 1e-3,
              f"series_tolerance must be in (0, 1e-3), got {self.series_tolerance}")
        check(self.max_series_terms >= 10,
              f"max_series_terms must be >= 10, got {self.max_series_terms}")
        check(self.max_collapsed_rows >= 1,
              f"max_collapsed_rows must be >= 1, got {self.max_collapsed_rows}")

    @property
    def discount_rate_period(self) -> float:
        """Per-period discount rate equivalent to ``discount_rate_annual``."""
        return (1.0 + self.discount_rate_annual) ** (self.period_days / DAYS_PER_YEAR) - 1.0

"""Customer lifetime value (spec section 6): simple CLV, BG/NBD and Gamma-Gamma at scale.

Design (formulas and conventions in docs/clv.md):

* **Simple CLV** ``(s / t) * T`` is a column expression over the BTYD summary columns of the
  features table (days).
* **Fitting** never brings account-level rows to the driver. The BTYD columns are collapsed
  in Spark to the distinct ``(frequency, recency, T)`` patterns with a count (and
  ``(frequency, monetary)`` patterns, optionally log-binned, for Gamma-Gamma); only that
  small table is collected, and the count-weighted log-likelihood is maximised with
  ``scipy.optimize.minimize`` (BFGS, analytic gradient, log-parameters). The likelihoods,
  the time rescaling and the penalizer are those of lifetimes' ``BetaGeoFitter`` and
  ``GammaGammaFitter``, so parameters agree with lifetimes.
* **Scoring** is per account in Spark with built-in functions only. The Gaussian
  hypergeometric function in the BG/NBD conditional expectation is a truncated power series
  evaluated with ``F.aggregate`` over ``F.sequence`` (term recurrence); the number of terms
  comes from a small table computed on the driver from the fitted parameters, indexed by
  ``z`` (a rigorous tail bound, see :func:`series_terms_table`). The series part of the
  expectation depends only on ``(frequency, T)``, so it is evaluated once per distinct pair
  (bounded by purchase counts x ages, not by the number of accounts) and joined back.
* A fit that did not converge is reported (``converged=False`` and metric rows) and the
  scoring entry points raise :class:`ClvFitError` unless ``allow_unconverged=True``.

Units: the features table holds recency and T in days; ``ClvConfig.period_days`` converts
them to BTYD periods (default weeks) before fitting and scoring. ``alpha`` is in periods.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.optimize import OptimizeResult, minimize
from scipy.special import betaln, gammaln, psi

from cvm_spark.config import _check
from cvm_spark.features import BTYD_COLUMNS
from cvm_spark.schemas import ACCOUNT_ID, SNAPSHOT_MONTH

log = logging.getLogger(__name__)

FREQUENCY, RECENCY, AGE, MONETARY = BTYD_COLUMNS
DAYS_PER_YEAR = 365.25
# Cells of the z grid that maps z = t / (alpha + T + t) to a number of series terms.
_Z_GRID = 256
MetricRow = tuple[str, str, str, float]


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
        _check(self.lifetime_days > 0, f"lifetime_days must be > 0, got {self.lifetime_days}")
        _check(0 < self.period_days <= 366,
               f"period_days must be in (0, 366], got {self.period_days}")
        _check(1 <= self.horizon_periods <= 10_000,
               f"horizon_periods must be in 1..10000, got {self.horizon_periods}")
        _check(0 <= self.discount_rate_annual < 1,
               f"discount_rate_annual must be in [0, 1), got {self.discount_rate_annual}")
        _check(self.penalizer >= 0, f"penalizer must be >= 0, got {self.penalizer}")
        _check(self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}")
        _check(0 < self.tolerance < 1, f"tolerance must be in (0, 1), got {self.tolerance}")
        _check(self.tolerance <= self.accept_gradient < 1,
               f"accept_gradient must be in [tolerance, 1), got {self.accept_gradient}")
        _check(0 <= self.monetary_bin <= 1,
               f"monetary_bin must be in [0, 1] (0 = exact values), got {self.monetary_bin}")
        _check(0 < self.series_tolerance < 1e-3,
               f"series_tolerance must be in (0, 1e-3), got {self.series_tolerance}")
        _check(self.max_series_terms >= 10,
               f"max_series_terms must be >= 10, got {self.max_series_terms}")
        _check(self.max_collapsed_rows >= 1,
               f"max_collapsed_rows must be >= 1, got {self.max_collapsed_rows}")

    @property
    def discount_rate_period(self) -> float:
        """Per-period discount rate equivalent to ``discount_rate_annual``."""
        return (1.0 + self.discount_rate_annual) ** (self.period_days / DAYS_PER_YEAR) - 1.0


class ClvFitError(RuntimeError):
    """A fit that cannot be used for scoring (not converged, no data, unusable parameters).

    ``metrics`` holds the model-metric rows of the failed run when they are known, so a job
    can still record them.
    """

    def __init__(self, message: str, metrics: list[MetricRow] | None = None) -> None:
        super().__init__(message)
        self.metrics = metrics or []


@dataclass(frozen=True)
class BgNbdFit:
    """Fitted BG/NBD parameters (``alpha`` in periods of ``period_days`` days).

    ``log_likelihood`` is the total count-weighted log-likelihood without the penalty, in
    period units; ``n_accounts`` the accounts fitted, ``n_rows`` the collapsed patterns.
    """

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_accounts: int
    n_rows: int
    converged: bool
    iterations: int
    message: str
    period_days: float = 1.0


@dataclass(frozen=True)
class GammaGammaFit:
    """Fitted Gamma-Gamma spend parameters (``v`` in the currency of ``btyd_monetary``)."""

    p: float
    q: float
    v: float
    log_likelihood: float
    n_accounts: int
    n_rows: int
    converged: bool
    iterations: int
    message: str

    @property
    def population_mean(self) -> float:
        """Mean spend per purchase in the population, ``p v / (q - 1)`` (needs q > 1)."""
        return self.p * self.v / (self.q - 1.0) if self.q > 1 else math.inf


# --------------------------------------------------------------------------- simple CLV


def simple_clv_column(cfg: ClvConfig) -> Column:
    """Simple CLV ``(s / t) * T`` from the BTYD columns (days).

    ``s`` = ``btyd_monetary`` (mean spend per repeat purchase day), ``t`` = ``btyd_recency /
    btyd_frequency`` (mean days between purchase days), ``T`` = ``cfg.lifetime_days``. Null
    when ``t`` is undefined (fewer than two purchase days, or never purchased).
    """
    x, tx = F.col(FREQUENCY), F.col(RECENCY)
    mean_gap = tx / x
    return F.when((x >= 1) & (tx > 0),
                  F.col(MONETARY) / mean_gap * F.lit(float(cfg.lifetime_days)))


def simple_clv(df: DataFrame, cfg: ClvConfig) -> DataFrame:
    """``account_id`` (+ ``snapshot_month`` if present) and ``clv_simple`` per account."""
    return df.select(*_key_columns(df), simple_clv_column(cfg).alias("clv_simple"))


def _key_columns(df: DataFrame) -> list[str]:
    return [c for c in (SNAPSHOT_MONTH, ACCOUNT_ID) if c in df.columns]


# --------------------------------------------------------------------------- collapse


def collapse_bgnbd(df: DataFrame) -> DataFrame:
    """Distinct ``(frequency, recency, age)`` patterns in days with their account count.

    Accounts with a null BTYD column (never purchased) are left out.
    """
    return (df.where(F.col(FREQUENCY).isNotNull() & F.col(RECENCY).isNotNull()
                     & F.col(AGE).isNotNull())
            .groupBy(F.col(FREQUENCY).alias("frequency"), F.col(RECENCY).alias("recency"),
                     F.col(AGE).alias("age"))
            .count())


def collapse_gamma_gamma(df: DataFrame, cfg: ClvConfig) -> DataFrame:
    """``(frequency, monetary, count)`` patterns of repeat buyers (frequency > 0, spend > 0).

    With ``cfg.monetary_bin > 0`` monetary values are grouped per frequency into log-bins
    ``floor(ln(m) / monetary_bin)`` and each bin is represented by its mean monetary value
    (the count-weighted mean of its accounts); with 0 the exact values are kept.
    """
    x, m = F.col(FREQUENCY), F.col(MONETARY)
    buyers = df.where(x.isNotNull() & m.isNotNull() & (x > 0) & (m > 0))
    if cfg.monetary_bin == 0:
        return buyers.groupBy(x.alias("frequency"), m.alias("monetary")).count()
    bin_id = F.floor(F.log(m) / F.lit(cfg.monetary_bin))
    return (buyers.groupBy(x.alias("frequency"), bin_id.alias("_bin"))
            .agg(F.avg(m).alias("monetary"), F.count(F.lit(1)).alias("count"))
            .select("frequency", "monetary", "count"))


def _collect_collapsed(collapsed: DataFrame, columns: Sequence[str], cfg: ClvConfig,
                       what: str) -> list[np.ndarray]:
    """Bring a collapsed table to the driver as float arrays (one per column)."""
    rows = collapsed.select(*columns).limit(cfg.max_collapsed_rows + 1).collect()
    if len(rows) > cfg.max_collapsed_rows:
        raise ClvFitError(f"{what}: the collapsed table has more than max_collapsed_rows = "
                          f"{cfg.max_collapsed_rows} rows; raise max_collapsed_rows"
                          + (" or monetary_bin" if what == "gamma_gamma" else ""))
    if not rows:
        raise ClvFitError(f"{what}: no accounts to fit")
    data = np.array([tuple(r) for r in rows], dtype=float)
    # Spark returns groups in any order; sort so that the fit is bit-for-bit reproducible.
    data = data[np.lexsort(data.T[::-1])]
    return [data[:, i] for i in range(len(columns))]


# --------------------------------------------------------------------------- BG/NBD fit


def _bgnbd_loglik(params: np.ndarray, x: np.ndarray, tx: np.ndarray, age: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pattern BG/NBD log-likelihood and its gradient w.r.t. (r, alpha, a, b).

    ln L = ln G(r+x) - ln G(r) + r ln(alpha) + ln B(a, b+x) - ln B(a, b)
           + ln( (alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x) )
    (Fader, Hardie and Lee 2005, eq. 6; the same expression as lifetimes' BetaGeoFitter).
    The last term is a log-sum-exp, so large x never overflows.
    """
    r, alpha, a, b = params
    pos = x > 0
    a3 = -(r + x) * np.log(alpha + age)
    a4 = np.full_like(x, -np.inf)
    a4[pos] = (np.log(a) - np.log(b + x[pos] - 1.0) - (r + x[pos]) * np.log(alpha + tx[pos]))
    lse = np.logaddexp(a3, a4)
    ll = (gammaln(r + x) - gammaln(r) + r * np.log(alpha)
          + betaln(a, b + x) - betaln(a, b) + lse)
    w3, w4 = np.exp(a3 - lse), np.exp(a4 - lse)   # shares of the two terms (w4 = 0 if x = 0)
    d_r = psi(r + x) - psi(r) + np.log(alpha) - w3 * np.log(alpha + age) - w4 * np.log(alpha + tx)
    d_alpha = r / alpha - (r + x) * (w3 / (alpha + age) + w4 / (alpha + tx))
    d_ab = psi(a + b) - psi(a + b + x)
    d_a = d_ab + w4 / a
    d_b = d_ab + psi(b + x) - psi(b) - w4 / np.maximum(b + x - 1.0, 1e-300) * pos
    return ll, np.stack([d_r, d_alpha, d_a, d_b])


def _gamma_gamma_loglik(params: np.ndarray, x: np.ndarray, m: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pattern Gamma-Gamma log-likelihood and gradient w.r.t. (p, q, v).

    ln L = ln G(px+q) - ln G(px) - ln G(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(xm+v)
    (Fader, Hardie and Lee 2005b; Hardie's note 025; lifetimes' GammaGammaFitter).
    """
    p, q, v = params
    px = p * x
    ln_xm_v = np.log(x * m + v)
    ll = (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
          + (px - 1.0) * np.log(m) + px * np.log(x) - (px + q) * ln_xm_v)
    d_p = x * (psi(px + q) - psi(px) + np.log(m) + np.log(x) - ln_xm_v)
    d_q = psi(px + q) - psi(q) + np.log(v) - ln_xm_v
    d_v = q / v - (px + q) / (x * m + v)
    return ll, np.stack([d_p, d_q, d_v])


_LogLik = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _Optimum:
    params: np.ndarray
    converged: bool
    iterations: int
    message: str


def _maximise(loglik: _LogLik, weights: np.ndarray, n_params: int, cfg: ClvConfig,
              what: str) -> _Optimum:
    """Maximise the count-weighted mean log-likelihood over log-parameters (BFGS).

    Objective (as lifetimes): ``-sum(w * ll) / sum(w) + penalizer * sum(params ** 2)``.
    """
    total = float(weights.sum())

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        params = np.exp(log_params)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ll, grad = loglik(params)
            value = (-float(np.dot(weights, ll)) / total
                     + cfg.penalizer * float(np.sum(params ** 2)))
            d_params = -(grad @ weights) / total + 2.0 * cfg.penalizer * params
        if not (np.isfinite(value) and np.all(np.isfinite(d_params))):
            # Outside the region where the likelihood is defined: let the line search back off.
            return math.inf, np.zeros_like(log_params)
        return value, d_params * params   # chain rule for the log-parameters

    res = minimize(objective, x0=np.full(n_params, 0.1), jac=True, method="BFGS",
                   tol=cfg.tolerance, options={"maxiter": cfg.max_iter})
    params = np.exp(res.x)
    success, message = _accepted(res, cfg)
    converged = success and bool(np.all(np.isfinite(params)))
    log.info("%s fit: converged=%s iterations=%d message=%s", what, converged, res.nit,
             message)
    return _Optimum(params, converged, int(res.nit), message)


_BFGS_PRECISION_LOSS = 2   # scipy's BFGS status: the line search stopped at machine precision


def _accepted(res: OptimizeResult, cfg: ClvConfig) -> tuple[bool, str]:
    """(converged, message) of a BFGS result.

    On many collapsed patterns (hundreds of thousands of accounts) the mean log-likelihood
    is flat to machine precision around its optimum before the gradient reaches
    ``cfg.tolerance``: BFGS then stops with "precision loss" at the optimum. Such a stop is
    accepted when every gradient component is at most ``cfg.accept_gradient`` (the
    parameters are then within about that, relatively, of the exact optimum); any other
    unsuccessful stop is not.
    """
    message = str(res.message)
    if res.success:
        return True, message
    jac = np.asarray(getattr(res, "jac", np.array([np.inf])), dtype=float)
    if res.status == _BFGS_PRECISION_LOSS and jac.size and np.all(np.isfinite(jac)):
        worst = float(np.max(np.abs(jac)))
        if worst <= cfg.accept_gradient:
            return True, (f"{message} Accepted: max |gradient| {worst:.3g} <= "
                          f"clv.accept_gradient {cfg.accept_gradient:g}.")
        return False, f"{message} Max |gradient| {worst:.3g} > clv.accept_gradient."
    return False, message


def fit_bgnbd_counts(frequency: np.ndarray, recency: np.ndarray, age: np.ndarray,
                     weights: np.ndarray, cfg: ClvConfig) -> BgNbdFit:
    """Fit BG/NBD on collapsed patterns already in periods (driver side, no Spark).

    Args:
        frequency, recency, age: per pattern, x (repeat purchase periods), t_x and T in
            periods of ``cfg.period_days`` days.
        weights: accounts per pattern.
        cfg: optimiser settings.

    Returns:
        The fit; ``converged`` is False when BFGS did not meet ``cfg.tolerance`` within
        ``cfg.max_iter`` iterations (the parameters are then the last iterate).

    Raises:
        ValueError: inputs break the BTYD convention (negative or non-integer frequency,
            recency > T, recency != 0 with frequency 0).
        ClvFitError: nothing to fit (no accounts or every T = 0).
    """
    x, tx, age, w = (np.asarray(v, dtype=float) for v in (frequency, recency, age, weights))
    if x.size == 0 or float(w.sum()) <= 0:
        raise ClvFitError("bgnbd: no accounts to fit")
    _check(bool(np.all((x >= 0) & (x == np.floor(x)))),
           "btyd_frequency must be a non-negative integer")
    _check(bool(np.all(tx >= 0)), "btyd_recency must be >= 0")
    _check(bool(np.all(tx <= age)), "btyd_recency must be <= btyd_t")
    _check(bool(np.all(tx[x == 0] == 0)), "btyd_recency must be 0 when btyd_frequency is 0")
    if float(age.max()) <= 0:
        raise ClvFitError("bgnbd: every account has T = 0; nothing to fit")
    # Rescale time so that max T = 1 (as lifetimes): the optimiser starts at the same point
    # and the penalizer acts on the same (scaled) alpha; r, a, b do not depend on the scale.
    scale = 1.0 / float(age.max())
    opt = _maximise(lambda params: _bgnbd_loglik(params, x, tx * scale, age * scale),
                    w, 4, cfg, "bgnbd")
    r, alpha_scaled, a, b = opt.params
    params = np.array([r, alpha_scaled / scale, a, b])
    ll = float(np.dot(w, _bgnbd_loglik(params, x, tx, age)[0]))
    return BgNbdFit(r=float(r), alpha=float(params[1]), a=float(a), b=float(b),
                    log_likelihood=ll, n_accounts=int(w.sum()), n_rows=int(x.size),
                    converged=opt.converged, iterations=opt.iterations, message=opt.message,
                    period_days=float(cfg.period_days))


def fit_gamma_gamma_counts(frequency: np.ndarray, monetary: np.ndarray, weights: np.ndarray,
                           cfg: ClvConfig) -> GammaGammaFit:
    """Fit Gamma-Gamma on collapsed ``(frequency > 0, monetary > 0)`` patterns (driver side).

    Raises:
        ValueError: a frequency <= 0 or a monetary value <= 0.
        ClvFitError: no patterns.
    """
    x, m, w = (np.asarray(v, dtype=float) for v in (frequency, monetary, weights))
    if x.size == 0 or float(w.sum()) <= 0:
        raise ClvFitError("gamma_gamma: no repeat buyers to fit")
    _check(bool(np.all(x > 0)), "btyd_frequency must be > 0 for the Gamma-Gamma fit")
    _check(bool(np.all(m > 0)), "btyd_monetary must be > 0 for the Gamma-Gamma fit")
    opt = _maximise(lambda params: _gamma_gamma_loglik(params, x, m), w, 3, cfg, "gamma_gamma")
    ll = float(np.dot(w, _gamma_gamma_loglik(opt.params, x, m)[0]))
    p, q, v = (float(t) for t in opt.params)
    return GammaGammaFit(p=p, q=q, v=v, log_likelihood=ll, n_accounts=int(w.sum()),
                         n_rows=int(x.size), converged=opt.converged,
                         iterations=opt.iterations, message=opt.message)


def fit_bgnbd(df: DataFrame, cfg: ClvConfig) -> BgNbdFit:
    """Fit BG/NBD on a DataFrame with the BTYD columns (days), one row per account.

    Collapses in Spark (:func:`collapse_bgnbd`), collects only the patterns, converts days
    to periods and fits (:func:`fit_bgnbd_counts`).
    """
    return _fit_bgnbd_patterns(df, cfg)[0]


def _fit_bgnbd_patterns(df: DataFrame, cfg: ClvConfig
                        ) -> tuple[BgNbdFit, tuple[np.ndarray, np.ndarray]]:
    """:func:`fit_bgnbd`, and the distinct valid ``(x, T in periods)`` of its patterns (the
    pairs :func:`add_clv` needs, so scoring collects nothing more)."""
    x, tx, age, w = _collect_collapsed(collapse_bgnbd(df),
                                       ["frequency", "recency", "age", "count"], cfg, "bgnbd")
    tx, age = tx / cfg.period_days, age / cfg.period_days
    valid = (x >= 0) & (tx >= 0) & (tx <= age) & ((x > 0) | (tx == 0))
    pairs = np.unique(np.stack([x[valid], age[valid]], axis=1), axis=0)
    return fit_bgnbd_counts(x, tx, age, w, cfg), (pairs[:, 0], pairs[:, 1])


def fit_gamma_gamma(df: DataFrame, cfg: ClvConfig) -> GammaGammaFit:
    """Fit Gamma-Gamma on the repeat buyers of a DataFrame with the BTYD columns.

    Collapses in Spark (:func:`collapse_gamma_gamma`), collects only the patterns and fits
    (:func:`fit_gamma_gamma_counts`).
    """
    x, m, w = _collect_collapsed(collapse_gamma_gamma(df, cfg),
                                 ["frequency", "monetary", "count"], cfg, "gamma_gamma")
    return fit_gamma_gamma_counts(x, m, w, cfg)


# --------------------------------------------------------------------------- 2F1 series


def hyp2f1_series(a: Column, b: Column, c: Column, z: Column, n_terms: Column) -> Column:
    """Gauss hypergeometric 2F1(a, b; c; z) truncated to ``n_terms`` (>= 2) terms, in Spark.

    ``sum_{n < N} t_n`` with ``t_0 = 1`` and the term recurrence ``t_{n+1} = t_n rho_n``,
    ``rho_n = (a+n)(b+n) z / ((c+n)(n+1))``, evaluated in nested (Horner) form
    ``1 + rho_0 (1 + rho_1 (1 + ... (1 + rho_{N-2})))`` by ``F.aggregate`` over
    ``F.sequence(N - 2, 0, -1)``: one double accumulator, no struct per term, and the small
    terms are added first. ``c + n`` must not be 0.
    """
    return F.aggregate(
        F.sequence(n_terms - 2, F.lit(0), F.lit(-1)),
        F.lit(1.0),
        lambda acc, n: 1.0 + (a + n) * (b + n) * z / ((c + n) * (n + 1)) * acc,
    )


def _terms_needed(big_a: float, big_b: float, big_c: float, z: np.ndarray, tol: float,
                  max_terms: int) -> np.ndarray:
    """Smallest N >= 2 per z with a proven bound ``sum_{n >= N} |t_n| <= tol`` (0 = not found).

    For n past the sign changes (a+n, b+n, c+n > 0) the term ratio is
    ``z g(n) h(n)`` with ``g = (a+n)/(c+n)`` and ``h = (b+n)/(n+1)`` monotone in n and
    tending to 1, so ``rho_n = z max(g(n), 1) max(h(n), 1)`` bounds every later ratio and,
    when ``rho_n < 1``, the tail from term n is at most ``|t_n| / (1 - rho_n)``.
    """
    start = max(1, math.floor(-big_a) + 1, math.floor(-big_c) + 1)
    term = np.ones_like(z)
    found = np.zeros(z.shape, dtype=int)
    for n in range(max_terms + 1):
        if n >= start:
            rho = z * max((big_a + n) / (big_c + n), 1.0) * max((big_b + n) / (n + 1), 1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                bound = np.where(rho < 1, np.abs(term) / (1.0 - rho), np.inf)
            newly = (found == 0) & (bound <= tol)
            found[newly] = max(n, 2)
            if np.all(found > 0):
                break
        term = term * (big_a + n) * (big_b + n) / ((big_c + n) * (n + 1)) * z
    return found


def series_terms_table(bg: BgNbdFit, cfg: ClvConfig) -> list[int]:
    """Number of 2F1 terms per z cell ``((j-1)/256, j/256]`` for the expected purchases.

    The series evaluated per account is the Euler-transformed one,
    ``2F1(a+b-1-r, a-1; a+b+x-1; z)``: its numerator parameters do not depend on the
    account, and ``|c + n|`` grows with x, so every term of an account with x >= 1 is at
    most the same term for x = 1, and every term shrinks with z. The table therefore bounds
    the series for x = 0 and x = 1 at the upper end of each cell, which covers every
    account with ``z`` in the cell; ``z <= H / (alpha + H)`` for every valid account
    (T >= 0), so the table stops at that cell.

    Raises:
        ClvFitError: more than ``cfg.max_series_terms`` terms would be needed (alpha is
            tiny against the horizon), or ``a + b - 1`` is a non-positive integer.
    """
    horizon = float(cfg.horizon_periods)
    z_max = horizon / (bg.alpha + horizon)
    cells = min(_Z_GRID, math.ceil(z_max * _Z_GRID))
    upper = np.minimum(np.arange(1, cells + 1) / _Z_GRID, z_max)
    big_a, big_b = bg.a + bg.b - 1.0 - bg.r, bg.a - 1.0
    c0 = bg.a + bg.b - 1.0
    if c0 <= 0 and c0 == math.floor(c0):
        raise ClvFitError(f"bgnbd: a + b - 1 = {c0} is a non-positive integer; the expected "
                          "purchases are undefined for accounts with frequency 0")
    need = np.zeros(cells, dtype=int)
    for big_c in (c0, c0 + 1.0):
        found = _terms_needed(big_a, big_b, big_c, upper, cfg.series_tolerance,
                              cfg.max_series_terms)
        if np.any(found == 0):
            raise ClvFitError(
                f"bgnbd: the 2F1 series needs more than max_series_terms = "
                f"{cfg.max_series_terms} terms for z up to {z_max:.4f} (alpha = "
                f"{bg.alpha:.4g} periods, horizon {cfg.horizon_periods}); raise "
                "max_series_terms or shorten horizon_periods")
        need = np.maximum(need, found)
    return [int(n) for n in need]


# --------------------------------------------------------------------------- scoring


def _check_usable(bg: BgNbdFit, gg: GammaGammaFit, cfg: ClvConfig,
                  allow_unconverged: bool) -> None:
    for name, fit in (("bgnbd", bg), ("gamma_gamma", gg)):
        if not fit.converged and not allow_unconverged:
            raise ClvFitError(f"{name}: the fit did not converge after {fit.iterations} "
                              f"iterations ({fit.message}); not used for scoring (pass "
                              "allow_unconverged=True to score anyway)")
    values = (bg.r, bg.alpha, bg.a, bg.b, gg.p, gg.q, gg.v)
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ClvFitError(f"parameters must be finite and positive, got {values}")
    if abs(bg.a - 1.0) < 1e-9:
        raise ClvFitError("bgnbd: a = 1 makes the conditional expectation 0/0")
    if gg.q <= 1:
        raise ClvFitError(f"gamma_gamma: q = {gg.q:.4g} <= 1, the mean spend is undefined")
    if bg.period_days != cfg.period_days:
        raise ValueError(f"period_days: the BG/NBD fit is in periods of {bg.period_days} "
                         f"days but the config says {cfg.period_days}")


def series_curves(x: np.ndarray, age: np.ndarray, bg: BgNbdFit, terms: list[int],
                  cfg: ClvConfig) -> tuple[np.ndarray, np.ndarray]:
    """``G(H)`` and the discounted increments of ``G(1..H)`` per ``(x, T)`` pattern (NumPy).

    The per-pattern part of the BG/NBD conditional expectation (see :func:`score_clv`):
    ``G(k) = c/(a-1) (1 - (1-z_k)^(a-1) 2F1(A, a-1; c; z_k))`` with ``z_k = k / (alpha + T +
    k)``, ``c = a + b + x - 1``, ``A = a + b - 1 - r``, the series truncated per z cell as
    :func:`series_terms_table` says and summed in the nested order of :func:`hyp2f1_series`
    (the same double operations in the same order as the Spark expression it replaces).

    Args:
        x: frequencies; age: T in periods (the same doubles the scoring computes).
        terms: :func:`series_terms_table` of ``bg``.

    Returns:
        ``(g_horizon, g_discounted)``, one value per pattern.
    """
    h = cfg.horizon_periods
    a, b, r, alpha = bg.a, bg.b, bg.r, bg.alpha
    big_a, big_b = a + b - 1.0 - r, a - 1.0
    k = np.arange(1, h + 1, dtype=float)[None, :]
    z = k / ((alpha + age)[:, None] + k)                    # (patterns, H)
    c = np.broadcast_to((a + b + x - 1.0)[:, None], z.shape)
    cell = np.clip(np.ceil(z * _Z_GRID).astype(int), 1, len(terms))
    n_terms = np.asarray(terms, dtype=int)[cell - 1]
    series = np.ones_like(z)
    for n in range(int(n_terms.max()) - 2, -1, -1):          # Horner, small terms first
        active = n_terms - 2 >= n
        step = 1.0 + (big_a + n) * (big_b + n) * z / ((c + n) * (n + 1)) * series
        series = np.where(active, step, series)
    path = c / (a - 1.0) * (1.0 - np.power(1.0 - z, a - 1.0) * series)
    per_period = 1.0 + cfg.discount_rate_period
    total = np.zeros(len(x))
    previous = np.zeros(len(x))
    for i in range(h):
        total = total + (path[:, i] - previous) / np.power(per_period, i + 1)
        previous = path[:, i]
    return path[:, h - 1], total


def _valid(x: Column, tx: Column, age: Column, m: Column) -> Column:
    return (x.isNotNull() & tx.isNotNull() & age.isNotNull() & m.isNotNull()
            & (x >= 0) & (tx >= 0) & (tx <= age) & ((x > 0) | (tx == 0)))


def pattern_pairs(df: DataFrame, cfg: ClvConfig) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(frequency, T in periods)`` of the accounts :func:`add_clv` scores (a
    bounded collect, like the fit's patterns)."""
    period = F.lit(float(cfg.period_days))
    x, tx = F.col(FREQUENCY).cast("double"), F.col(RECENCY).cast("double") / period
    age, m = F.col(AGE).cast("double") / period, F.col(MONETARY).cast("double")
    pairs = df.where(_valid(x, tx, age, m)).select(x.alias("x"), age.alias("age")).distinct()
    got = _collect_collapsed(pairs, ["x", "age"], cfg, "clv scoring")
    return got[0], got[1]


CLV_COLUMNS = ["clv_simple", "expected_purchases", "prob_alive", "expected_avg_value",
               "clv_discounted"]


def add_clv(df: DataFrame, bg: BgNbdFit, gg: GammaGammaFit, cfg: ClvConfig, *,
            pairs: tuple[np.ndarray, np.ndarray] | None = None,
            allow_unconverged: bool = False) -> DataFrame:
    """``df`` (with the BTYD columns, days) plus :data:`CLV_COLUMNS` (see :func:`score_clv`).

    Args:
        pairs: the distinct ``(frequency, T in periods)`` of ``df``'s valid rows, when known
            (e.g. from the fit's collapsed patterns); collected from ``df`` otherwise.
    """
    _check_usable(bg, gg, cfg, allow_unconverged)
    terms = series_terms_table(bg, cfg)
    period = F.lit(float(cfg.period_days))
    r, alpha, a, b = (F.lit(float(v)) for v in (bg.r, bg.alpha, bg.a, bg.b))
    p, q, v = (F.lit(float(t)) for t in (gg.p, gg.q, gg.v))
    x = F.col(FREQUENCY).cast("double")
    tx = F.col(RECENCY).cast("double") / period
    age = F.col(AGE).cast("double") / period
    m = F.col(MONETARY).cast("double")
    valid = _valid(x, tx, age, m)
    # ln of the odds "dead : alive" for x > 0 (Fader, Hardie and Lee, note 021).
    log_odds = (F.log(a / (b + F.greatest(x, F.lit(1.0)) - 1.0))
                + (r + x) * F.log((alpha + age) / (alpha + tx)))
    alive = F.when(x == 0, F.lit(1.0)).otherwise(1.0 / (1.0 + F.exp(log_odds)))
    individual = p * x / (p * x + q - 1.0)
    avg_value = (1.0 - individual) * (v * p / (q - 1.0)) + individual * m
    # G depends on (x, T) only, not on t_x or the account: it is computed once per distinct
    # (x, T) pattern on the driver (series_curves; the patterns are bounded by purchase
    # counts x ages, whatever the number of accounts) and joined back by broadcast. The
    # expected purchases and the discounted CLV are both linear in P(alive).
    xs, ages = pairs if pairs is not None else pattern_pairs(df, cfg)
    g_h, g_d = series_curves(np.asarray(xs, float), np.asarray(ages, float), bg, terms, cfg)
    curves = df.sparkSession.createDataFrame(
        [(float(i), float(j), float(gh), float(gd))
         for i, j, gh, gd in zip(xs, ages, g_h, g_d, strict=True)],
        "_x double, _age double, _g_horizon double, _g_discounted double")
    with_alive = df.select(
        "*", simple_clv_column(cfg).alias("clv_simple"),
        F.when(valid, x).alias("_x"), F.when(valid, age).alias("_age"),
        F.when(valid, alive).alias("prob_alive"),
        F.when(valid, avg_value).alias("expected_avg_value"))
    scored = with_alive.join(F.broadcast(curves), on=["_x", "_age"], how="left")
    return scored.select(
        *df.columns,
        F.col("clv_simple"),
        (F.col("prob_alive") * F.col("_g_horizon")).alias("expected_purchases"),
        F.col("prob_alive"),
        F.col("expected_avg_value"),
        (F.col("expected_avg_value") * F.col("prob_alive") * F.col("_g_discounted"))
        .alias("clv_discounted"),
    )


def score_clv(df: DataFrame, bg: BgNbdFit, gg: GammaGammaFit, cfg: ClvConfig, *,
              allow_unconverged: bool = False,
              pairs: tuple[np.ndarray, np.ndarray] | None = None) -> DataFrame:
    """Score every account in Spark with the fitted models (built-in functions only).

    Args:
        df: one row per account with ``account_id`` and the BTYD columns (days);
            ``snapshot_month`` is kept when present.
        bg, gg: fitted models (``bg.period_days`` must equal ``cfg.period_days``).
        cfg: horizon, discounting, units and series tolerance.
        allow_unconverged: score with a fit that did not converge (otherwise raise).
        pairs: see :func:`add_clv`.

    Returns:
        ``[snapshot_month,] account_id, clv_simple, expected_purchases, prob_alive,
        expected_avg_value, clv_discounted``. All model columns are null for accounts
        without a valid BTYD summary (never purchased: null columns; or inconsistent
        values: negative, recency > T, recency != 0 with frequency 0).

    Raises:
        ClvFitError: a fit did not converge (unless allowed) or its parameters cannot be
            used (see docs/clv.md).
    """
    keys = _key_columns(df)
    scored = add_clv(df.select(*keys, *BTYD_COLUMNS), bg, gg, cfg, pairs=pairs,
                     allow_unconverged=allow_unconverged)
    return scored.select(*keys, *CLV_COLUMNS)


def discounted_increments(path: Column, cfg: ClvConfig) -> Column:
    """``sum_k (E(k) - E(k-1)) / (1 + d)^k`` over k = 1..H, for ``path = [E(1) .. E(H)]``.

    ``d`` is the per-period discount rate and ``E(0) = 0``: the convention of lifetimes'
    ``customer_lifetime_value`` with one discounting step per period (``freq="M"``, which
    has a factor of 1, with ``time = H`` and the per-period rate).
    """
    per_period = F.lit(1.0 + cfg.discount_rate_period)
    init = F.struct(F.lit(0.0).alias("previous"), F.lit(0.0).alias("total"))
    return F.aggregate(
        F.sequence(F.lit(0), F.lit(cfg.horizon_periods - 1)),
        init,
        lambda acc, i: F.struct(
            F.get(path, i).alias("previous"),
            (acc["total"] + (F.get(path, i) - acc["previous"]) / F.pow(per_period, i + 1))
            .alias("total")),
        lambda acc: acc["total"],
    )


# --------------------------------------------------------------------------- entry point


def model_metrics(bg: BgNbdFit, gg: GammaGammaFit, cfg: ClvConfig) -> list[MetricRow]:
    """Model-metric rows ``(model, scope, metric, value)`` for the model_metrics table."""
    rows: list[MetricRow] = []
    for model, fit, names in (("bgnbd", bg, ("r", "alpha", "a", "b")),
                              ("gamma_gamma", gg, ("p", "q", "v"))):
        rows += [(model, "all", n, float(getattr(fit, n))) for n in names]
        rows += [
            (model, "all", "log_likelihood", float(fit.log_likelihood)),
            (model, "all", "converged", 1.0 if fit.converged else 0.0),
            (model, "all", "iterations", float(fit.iterations)),
            (model, "all", "n_accounts", float(fit.n_accounts)),
            (model, "all", "n_rows_collapsed", float(fit.n_rows)),
        ]
    rows += [
        ("clv", "all", "period_days", float(cfg.period_days)),
        ("clv", "all", "horizon_periods", float(cfg.horizon_periods)),
        ("clv", "all", "discount_rate_period", float(cfg.discount_rate_period)),
    ]
    return rows


@dataclass(frozen=True)
class ClvModel:
    """Fitted BG/NBD and Gamma-Gamma models, ready for :func:`add_clv`.

    Attributes:
        pairs: the distinct ``(frequency, T in periods)`` of the accounts fitted.
        metrics: model-metric rows (:func:`model_metrics` and ``series_terms_max``).
    """

    bg: BgNbdFit
    gg: GammaGammaFit
    pairs: tuple[np.ndarray, np.ndarray]
    metrics: list[MetricRow]


def fit_clv(df: DataFrame, cfg: ClvConfig, *, allow_unconverged: bool = False) -> ClvModel:
    """Fit BG/NBD and Gamma-Gamma on ``df`` (two collapses, each one aggregate).

    Raises:
        ClvFitError: a fit did not converge (unless ``allow_unconverged``) or cannot be
            used; its ``metrics`` attribute carries the metric rows for the run log.
    """
    bg, pairs = _fit_bgnbd_patterns(df, cfg)
    gg = fit_gamma_gamma(df, cfg)
    metrics = model_metrics(bg, gg, cfg)
    try:
        _check_usable(bg, gg, cfg, allow_unconverged)
        metrics.append(("clv", "all", "series_terms_max",
                        float(max(series_terms_table(bg, cfg)))))
    except ClvFitError as exc:
        raise ClvFitError(str(exc), metrics) from exc
    return ClvModel(bg, gg, pairs, metrics)


def fit_and_score(df: DataFrame, cfg: ClvConfig, *, allow_unconverged: bool = False
                  ) -> tuple[DataFrame, list[MetricRow]]:
    """Fit BG/NBD and Gamma-Gamma on ``df`` and score every account of it.

    ``df`` is read twice to collapse (once per model) and once more when the scores are
    written; materialise it upstream if it is expensive to recompute.

    Returns:
        The scores (:func:`score_clv`) and the model-metric rows (:func:`model_metrics`,
        plus ``("clv", "all", "series_terms_max", N)``).

    Raises:
        ClvFitError: a fit did not converge (unless ``allow_unconverged``) or cannot be
            used; its ``metrics`` attribute carries the metric rows for the run log.
    """
    model = fit_clv(df, cfg, allow_unconverged=allow_unconverged)
    scores = score_clv(df, model.bg, model.gg, cfg, allow_unconverged=allow_unconverged,
                       pairs=model.pairs)
    return scores, model.metrics

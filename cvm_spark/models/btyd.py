"""The buy-till-you-die likelihoods and their fits, in NumPy and SciPy only (no Spark).

As lifetimes does it (``BaseFitter._fit``: one optimiser, each fitter supplies its
likelihood): :func:`_maximise` runs BFGS on log-parameters with an analytic gradient for any
count-weighted log-likelihood, and :func:`fit_bgnbd_counts` / :func:`fit_gamma_gamma_counts`
supply the BG/NBD and Gamma-Gamma likelihoods of lifetimes' ``BetaGeoFitter`` and
``GammaGammaFitter`` (same time rescaling and penalizer, so the parameters agree). The
fitted parameters are frozen dataclasses (:class:`BgNbdFit`, :class:`GammaGammaFit`).

The truncation of the Gaussian hypergeometric series that the scoring evaluates in Spark
(:func:`series_terms_table`, with a rigorous tail bound) and its NumPy twin for the distinct
``(x, T)`` patterns (:func:`series_curves`) are here too. ``cvm_spark.models.clv`` does the
Spark side: collapsing accounts to patterns, collecting them and scoring every account.
Formulas: docs/clv.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeResult, minimize
from scipy.special import betaln, gammaln, psi

from cvm_spark.config import ClvConfig, check
from cvm_spark.schemas.outputs import MetricRow

log = logging.getLogger(__name__)


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
    check(bool(np.all((x >= 0) & (x == np.floor(x)))),
          "btyd_frequency must be a non-negative integer")
    check(bool(np.all(tx >= 0)), "btyd_recency must be >= 0")
    check(bool(np.all(tx <= age)), "btyd_recency must be <= btyd_t")
    check(bool(np.all(tx[x == 0] == 0)), "btyd_recency must be 0 when btyd_frequency is 0")
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
    check(bool(np.all(x > 0)), "btyd_frequency must be > 0 for the Gamma-Gamma fit")
    check(bool(np.all(m > 0)), "btyd_monetary must be > 0 for the Gamma-Gamma fit")
    opt = _maximise(lambda params: _gamma_gamma_loglik(params, x, m), w, 3, cfg, "gamma_gamma")
    ll = float(np.dot(w, _gamma_gamma_loglik(opt.params, x, m)[0]))
    p, q, v = (float(t) for t in opt.params)
    return GammaGammaFit(p=p, q=q, v=v, log_likelihood=ll, n_accounts=int(w.sum()),
                         n_rows=int(x.size), converged=opt.converged,
                         iterations=opt.iterations, message=opt.message)


# Cells of the z grid that maps z = t / (alpha + T + t) to a number of series terms.
Z_GRID = 256


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
    cells = min(Z_GRID, math.ceil(z_max * Z_GRID))
    upper = np.minimum(np.arange(1, cells + 1) / Z_GRID, z_max)
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


def check_usable(bg: BgNbdFit, gg: GammaGammaFit, cfg: ClvConfig,
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
    cell = np.clip(np.ceil(z * Z_GRID).astype(int), 1, len(terms))
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

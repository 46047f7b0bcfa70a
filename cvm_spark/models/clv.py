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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.config import ClvConfig
from cvm_spark.features.windows import BTYD_COLUMNS
from cvm_spark.models.btyd import (
    BgNbdFit,
    ClvFitError,
    GammaGammaFit,
    check_usable,
    fit_bgnbd_counts,
    fit_gamma_gamma_counts,
    series_curves,
    series_terms_table,
)
from cvm_spark.schemas.inputs import ACCOUNT_ID, SNAPSHOT_MONTH
from cvm_spark.schemas.outputs import MetricRow

log = logging.getLogger(__name__)

FREQUENCY, RECENCY, AGE, MONETARY = BTYD_COLUMNS


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


# --------------------------------------------------------------------------- scoring


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
    check_usable(bg, gg, cfg, allow_unconverged)
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
        check_usable(bg, gg, cfg, allow_unconverged)
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

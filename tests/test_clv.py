"""Lifetime value: parity with lifetimes on CDNOW, the collapse, non-convergence, simple CLV.

CDNOW (lifetimes' shipped summary, 2357 customers, recency and T in weeks) is fed to Spark
in days (weeks x 7) and fitted with ``period_days = 7``, so the unit conversion is exercised
and the parameters are directly comparable with lifetimes' (alpha in weeks).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual
from scipy.special import hyp2f1

from cvm_spark.config import ClvConfig
from cvm_spark.models.btyd import (
    BgNbdFit,
    ClvFitError,
    GammaGammaFit,
    fit_bgnbd_counts,
    fit_gamma_gamma_counts,
    series_terms_table,
)
from cvm_spark.models.clv import (
    collapse_gamma_gamma,
    fit_and_score,
    fit_bgnbd,
    fit_gamma_gamma,
    hyp2f1_series,
    score_clv,
    simple_clv,
)

lifetimes = pytest.importorskip("lifetimes")
pd = pytest.importorskip("pandas")

BTYD_SCHEMA = ("account_id string, btyd_frequency double, btyd_recency double, "
               "btyd_t double, btyd_monetary double")
CFG = ClvConfig(period_days=7.0, monetary_bin=0.0)   # horizon 52 weeks, 10 % a year


@pytest.fixture(scope="module")
def cdnow():
    from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

    return load_cdnow_summary_data_with_monetary_value()


@pytest.fixture(scope="module")
def cdnow_df(spark, cdnow):
    rows = [(str(i), float(f), float(r) * 7, float(t) * 7, float(m))
            for i, f, r, t, m in zip(cdnow.index, cdnow["frequency"], cdnow["recency"],
                                     cdnow["T"], cdnow["monetary_value"], strict=True)]
    df = spark.createDataFrame(rows, BTYD_SCHEMA).cache()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def reference(cdnow):
    """lifetimes' own fits (penalizer 0), the reference for parameters and scores."""
    bgf = lifetimes.BetaGeoFitter().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    buyers = cdnow[cdnow["frequency"] > 0]
    ggf = lifetimes.GammaGammaFitter().fit(buyers["frequency"], buyers["monetary_value"])
    return bgf, ggf


@pytest.fixture(scope="module")
def fitted(cdnow_df):
    scores, metrics = fit_and_score(cdnow_df, CFG)
    rows = scores.collect()
    return pd.DataFrame(rows, columns=scores.columns).set_index("account_id"), metrics


def _metric(metrics, model, name):
    (value,) = [v for m, s, n, v in metrics if (m, s, n) == (model, "all", name)]
    return value


def _bg_fit(params, period_days=7.0) -> BgNbdFit:
    return BgNbdFit(*(float(params[k]) for k in ("r", "alpha", "a", "b")), log_likelihood=0.0,
                    n_accounts=0, n_rows=0, converged=True, iterations=0, message="",
                    period_days=period_days)


def test_config_defaults_and_validation():
    cfg = ClvConfig()
    assert (cfg.lifetime_days, cfg.period_days, cfg.horizon_periods) == (1095, 7, 52)
    assert cfg.discount_rate_period == pytest.approx(1.1 ** (7 / 365.25) - 1, rel=1e-12)
    for field, value in [("lifetime_days", 0.0), ("period_days", 0.0), ("horizon_periods", 0),
                         ("discount_rate_annual", -0.1), ("penalizer", -1.0), ("max_iter", 0),
                         ("tolerance", 0.0), ("monetary_bin", -0.5),
                         ("series_tolerance", 0.1), ("max_series_terms", 1),
                         ("max_collapsed_rows", 0)]:
        with pytest.raises(ValueError, match=f"^{field} "):
            ClvConfig(**{field: value})


def test_simple_clv_hand_worked_rows(spark):
    df = spark.createDataFrame([
        # 5 purchase days: 4 repeat days over 100 days -> one every 25 days; 50 per purchase
        # -> (50 / 25) * 1095 = 2190
        (date(2024, 12, 1), "a", 4.0, 100.0, 200.0, 50.0),
        (date(2024, 12, 1), "one_day", 0.0, 0.0, 30.0, 0.0),   # t undefined
        (date(2024, 12, 1), "never", None, None, None, None),
    ], "snapshot_month date, " + BTYD_SCHEMA)
    expected = spark.createDataFrame(
        [(date(2024, 12, 1), "a", 2190.0), (date(2024, 12, 1), "one_day", None),
         (date(2024, 12, 1), "never", None)],
        "snapshot_month date, account_id string, clv_simple double")
    assertDataFrameEqual(simple_clv(df, ClvConfig()), expected, rtol=1e-12)


def test_bgnbd_parameters_match_lifetimes(cdnow, cdnow_df, reference, fitted):
    bgf, _ = reference
    _, metrics = fitted
    for name in ("r", "alpha", "a", "b"):
        assert _metric(metrics, "bgnbd", name) == pytest.approx(bgf.params_[name], rel=1e-6)
    # Total log-likelihood in weeks = lifetimes' objective (a mean) at its optimum x n.
    n = len(cdnow)
    ll = -bgf._negative_log_likelihood(
        np.log(bgf.params_.values), cdnow["frequency"].values, cdnow["recency"].values,
        cdnow["T"].values, np.ones(n), 0.0) * n
    assert _metric(metrics, "bgnbd", "log_likelihood") == pytest.approx(ll, rel=1e-9)
    assert _metric(metrics, "bgnbd", "converged") == 1.0
    assert _metric(metrics, "bgnbd", "n_accounts") == n
    # Many accounts share a pattern (e.g. one purchase, same age): the collapse is real.
    assert _metric(metrics, "bgnbd", "n_rows_collapsed") < 0.5 * n


def test_gamma_gamma_parameters_match_lifetimes(cdnow, reference, fitted):
    _, ggf = reference
    _, metrics = fitted
    for name in ("p", "q", "v"):
        assert _metric(metrics, "gamma_gamma", name) == pytest.approx(ggf.params_[name],
                                                                      rel=1e-6)
    assert _metric(metrics, "gamma_gamma", "n_accounts") == int((cdnow["frequency"] > 0).sum())
    assert _metric(metrics, "gamma_gamma", "converged") == 1.0


def test_scores_match_lifetimes(cdnow, reference, fitted):
    bgf, ggf = reference
    scores, _ = fitted
    scores = scores.loc[[str(i) for i in cdnow.index]]
    f, r, t, m = (cdnow[c] for c in ("frequency", "recency", "T", "monetary_value"))
    horizon, rate = CFG.horizon_periods, CFG.discount_rate_period
    expected = {
        "expected_purchases":
            bgf.conditional_expected_number_of_purchases_up_to_time(horizon, f, r, t),
        "prob_alive": bgf.conditional_probability_alive(f, r, t),
        "expected_avg_value": ggf.conditional_expected_average_profit(f, m),
        # one discounting step per period: freq="M" has factor 1, time = horizon in weeks
        "clv_discounted": ggf.customer_lifetime_value(bgf, f, r, t, m, time=horizon,
                                                      discount_rate=rate, freq="M"),
    }
    for column, ref in expected.items():
        np.testing.assert_allclose(scores[column].to_numpy(), np.asarray(ref, dtype=float),
                                   rtol=1e-6, atol=1e-9, err_msg=column)
    assert scores["clv_simple"].notna().sum() == int((f > 0).sum())


def test_null_and_one_day_accounts(spark, reference):
    bgf, ggf = reference
    bg = _bg_fit(bgf.params_)
    gg = GammaGammaFit(*(float(ggf.params_[k]) for k in "pqv"), log_likelihood=0.0,
                       n_accounts=0, n_rows=0, converged=True, iterations=0, message="")
    df = spark.createDataFrame([
        (date(2024, 12, 1), "one_day", 0.0, 0.0, 70.0, 0.0),
        (date(2024, 12, 1), "never", None, None, None, None),
        (date(2024, 12, 1), "broken", 2.0, 80.0, 70.0, 5.0),   # recency > T
    ], "snapshot_month date, " + BTYD_SCHEMA)
    out = {r.account_id: r for r in score_clv(df, bg, gg, CFG).collect()}
    assert list(score_clv(df, bg, gg, CFG).columns) == [
        "snapshot_month", "account_id", "clv_simple", "expected_purchases", "prob_alive",
        "expected_avg_value", "clv_discounted"]
    one = out["one_day"]
    assert one.prob_alive == 1.0 and one.clv_simple is None
    assert one.expected_avg_value == pytest.approx(gg.population_mean, rel=1e-12)
    ref = bgf.conditional_expected_number_of_purchases_up_to_time(52, 0, 0.0, 10.0)
    assert one.expected_purchases == pytest.approx(float(ref), rel=1e-9)
    for name in ("never", "broken"):
        row = out[name]
        assert (row.expected_purchases, row.prob_alive, row.clv_discounted) == (None,) * 3


def test_hyp2f1_series_matches_scipy(spark, cdnow):
    """The Spark series with the term table is within 1e-9 (relative) of scipy's 2F1.

    Checked over every CDNOW (x, T) at several horizons, including the largest z (T = 0),
    for the CDNOW fit and for a penalized fit with a + b < 1 (c < 0 for x = 0). The term
    table bounds the absolute error by ``series_tolerance`` (1e-12); with a + b < 1 the sum
    for x = 0 can be close to 0 (0.00027 here), so there the absolute bound is what holds.
    """
    fits = [_bg_fit({"r": 0.2426, "alpha": 4.4135, "a": 0.7929, "b": 2.4258}),
            _bg_fit({"r": 0.2429, "alpha": 4.4324, "a": 0.2856, "b": 0.6585})]
    pairs = cdnow[["frequency", "T"]].drop_duplicates().to_numpy()
    pairs = np.vstack([pairs, [[0.0, 0.0], [1.0, 0.0], [29.0, 0.0]]])
    rows = []
    for bg in fits:
        terms = series_terms_table(bg, CFG)
        for x, age in pairs:
            for k in (1, 13, 52):
                z = k / (bg.alpha + age + k)
                n = terms[min(max(int(np.ceil(z * 256)), 1), len(terms)) - 1]
                rows.append((bg.a + bg.b - 1 - bg.r, bg.a - 1, float(bg.a + bg.b + x - 1),
                             float(z), n))
    df = spark.createDataFrame(rows, "a double, b double, c double, z double, n int")
    got = np.array([r[0] for r in df.select(hyp2f1_series(
        F.col("a"), F.col("b"), F.col("c"), F.col("z"), F.col("n"))).collect()])
    ref = np.array([hyp2f1(a, b, c, z) for a, b, c, z, _ in rows])
    half = len(rows) // 2
    np.testing.assert_allclose(got[:half], ref[:half], rtol=1e-9, atol=0)
    np.testing.assert_allclose(got[half:], ref[half:], rtol=1e-9, atol=CFG.series_tolerance)
    assert max(n for *_, n in rows) < 400


def test_penalized_fit_with_a_plus_b_below_one(spark, cdnow, reference):
    """a + b < 1 (c < 0 for x = 0): lifetimes returns NaN there, the series does not.

    Checked against the closed form evaluated directly with scipy's 2F1 (no logarithms).
    """
    bg = _bg_fit({"r": 0.24294, "alpha": 4.43244, "a": 0.28564, "b": 0.65845})
    gg = GammaGammaFit(*(float(reference[1].params_[k]) for k in "pqv"), log_likelihood=0.0,
                       n_accounts=0, n_rows=0, converged=True, iterations=0, message="")
    cfg = ClvConfig(period_days=7.0, horizon_periods=104)
    sample = cdnow.iloc[:60]
    df = spark.createDataFrame(
        [(str(i), float(f), float(r) * 7, float(t) * 7, float(m))
         for i, f, r, t, m in sample.itertuples()], BTYD_SCHEMA)
    got = {r.account_id: r.expected_purchases
           for r in score_clv(df, bg, gg, cfg).select("account_id", "expected_purchases")
           .collect()}
    r, alpha, a, b, h = bg.r, bg.alpha, bg.a, bg.b, 104.0
    x, tx, t = (sample[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    direct = ((a + b + x - 1) / (a - 1)
              * (1 - hyp2f1(r + x, b + x, a + b + x - 1, h / (alpha + t + h))
                 * ((alpha + t) / (alpha + t + h)) ** (r + x))
              / (1 + (x > 0) * a / (b + np.maximum(x, 1) - 1)
                 * ((alpha + t) / (alpha + tx)) ** (r + x)))
    ours = np.array([got[str(i)] for i in sample.index])
    np.testing.assert_allclose(ours, direct, rtol=1e-9, atol=0)


def test_unconverged_fit_is_reported_and_refused(cdnow_df, reference):
    cfg = ClvConfig(period_days=7.0, monetary_bin=0.0, max_iter=1)
    with pytest.raises(ClvFitError, match="did not converge") as err:
        fit_and_score(cdnow_df, cfg)
    assert ("bgnbd", "all", "converged", 0.0) in err.value.metrics
    assert ("gamma_gamma", "all", "converged", 0.0) in err.value.metrics

    bg = fit_bgnbd(cdnow_df, cfg)
    assert not bg.converged and bg.iterations == 1 and "iterations" in bg.message
    gg = GammaGammaFit(*(float(reference[1].params_[k]) for k in "pqv"), log_likelihood=0.0,
                       n_accounts=0, n_rows=0, converged=True, iterations=0, message="")
    with pytest.raises(ClvFitError, match=r"^bgnbd: the fit did not converge"):
        score_clv(cdnow_df, bg, gg, cfg)
    scores = score_clv(cdnow_df, bg, gg, cfg, allow_unconverged=True)
    assert all(r.clv_discounted > 0 for r in scores.limit(5).collect())


def test_collapse_weights_equal_duplicated_accounts(spark, cdnow):
    """Accounts repeated 1-3 times fit exactly like the distinct rows weighted by count."""
    sample = cdnow.iloc[:300]
    copies = np.arange(len(sample)) % 3 + 1
    rows = [(f"{i}-{j}", float(f), float(r) * 7, float(t) * 7, float(m))
            for (i, f, r, t, m), c in zip(sample.itertuples(), copies, strict=True)
            for j in range(c)]
    df = spark.createDataFrame(rows, BTYD_SCHEMA)
    cfg = CFG
    bg = fit_bgnbd(df, cfg)
    weighted = fit_bgnbd_counts(sample["frequency"].values, sample["recency"].values,
                                sample["T"].values, copies, cfg)
    ref = lifetimes.BetaGeoFitter().fit(sample["frequency"], sample["recency"], sample["T"],
                                        weights=copies)
    assert bg.n_accounts == len(rows) and bg.n_rows < len(sample)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(bg, name) == pytest.approx(getattr(weighted, name), rel=1e-8)
        assert getattr(bg, name) == pytest.approx(ref.params_[name], rel=1e-6)

    buyers = sample["frequency"] > 0
    gg = fit_gamma_gamma(df, cfg)
    gg_weighted = fit_gamma_gamma_counts(sample["frequency"][buyers].values,
                                         sample["monetary_value"][buyers].values,
                                         copies[buyers.values], cfg)
    assert gg.n_accounts == int(copies[buyers.values].sum())
    for name in ("p", "q", "v"):
        assert getattr(gg, name) == pytest.approx(getattr(gg_weighted, name), rel=1e-8)


def test_monetary_bins_reduce_rows_and_keep_parameters(cdnow_df, fitted):
    _, metrics = fitted
    binned_cfg = ClvConfig(period_days=7.0, monetary_bin=0.05)
    binned = fit_gamma_gamma(cdnow_df, binned_cfg)
    assert binned.n_rows < _metric(metrics, "gamma_gamma", "n_rows_collapsed")
    assert collapse_gamma_gamma(cdnow_df, binned_cfg).count() == binned.n_rows
    assert binned.n_accounts == _metric(metrics, "gamma_gamma", "n_accounts")
    for name in ("p", "q", "v"):
        assert getattr(binned, name) == pytest.approx(
            _metric(metrics, "gamma_gamma", name), rel=2e-2)


def test_penalizer_matches_lifetimes(cdnow):
    cfg = ClvConfig(period_days=1.0, penalizer=0.01)
    ours = fit_bgnbd_counts(cdnow["frequency"].values, cdnow["recency"].values,
                            cdnow["T"].values, np.ones(len(cdnow)), cfg)
    ref = lifetimes.BetaGeoFitter(penalizer_coef=0.01).fit(cdnow["frequency"],
                                                           cdnow["recency"], cdnow["T"])
    for name in ("r", "alpha", "a", "b"):
        assert getattr(ours, name) == pytest.approx(ref.params_[name], rel=1e-6)


def test_unusable_parameters_are_refused(spark):
    bg = _bg_fit({"r": 0.24, "alpha": 0.01, "a": 0.79, "b": 2.4})
    with pytest.raises(ClvFitError, match="max_series_terms"):
        series_terms_table(bg, ClvConfig(max_series_terms=100))
    gg = GammaGammaFit(p=6.0, q=0.9, v=15.0, log_likelihood=0.0, n_accounts=1, n_rows=1,
                       converged=True, iterations=1, message="")
    df = spark.createDataFrame([], BTYD_SCHEMA)
    with pytest.raises(ClvFitError, match=r"q = 0\.9"):
        score_clv(df, bg, gg, ClvConfig())
    with pytest.raises(ValueError, match=r"^period_days"):
        score_clv(df, _bg_fit({"r": 1, "alpha": 1, "a": 2, "b": 2}, period_days=1.0),
                  GammaGammaFit(6.0, 3.0, 15.0, 0.0, 1, 1, True, 1, ""), ClvConfig())
    with pytest.raises(ClvFitError, match="no accounts"):
        fit_bgnbd(df, ClvConfig())


@pytest.mark.parametrize(("status", "jac", "accepted"), [
    (2, [3e-8, -1e-9, 2e-7, 0.0], True),      # precision loss at the optimum
    (2, [3e-8, -4e-3, 0.0, 0.0], False),      # precision loss far from it
    (2, [np.nan, 0.0, 0.0, 0.0], False),      # undefined gradient
    (1, [1e-9, 0.0, 0.0, 0.0], False),        # iteration limit: never accepted
])
def test_a_bfgs_stop_at_machine_precision_is_accepted_only_near_zero_gradient(status, jac,
                                                                                 accepted):
    from scipy.optimize import OptimizeResult

    from cvm_spark.config import ClvConfig
    from cvm_spark.models.btyd import _accepted

    res = OptimizeResult(success=False, status=status, jac=np.array(jac),
                         message="Desired error not necessarily achieved due to precision loss.")
    ok, message = _accepted(res, ClvConfig(accept_gradient=1e-5))
    assert ok is accepted
    assert message.startswith("Desired error")
    assert ("Accepted" in message) is accepted


def test_accept_gradient_is_validated():
    from cvm_spark.config import ClvConfig

    with pytest.raises(ValueError, match="accept_gradient"):
        ClvConfig(tolerance=1e-7, accept_gradient=1e-9)

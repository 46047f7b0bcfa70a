"""Loyalty: entropy weights worked by hand, PCA weights against numpy, bands on 20 accounts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.testing import assertDataFrameEqual

from cvm_spark.config import LoyaltyBand, LoyaltyConfig, LoyaltyDimension, LoyaltyIndicator
from cvm_spark.models.loyalty import entropy_weights, loyalty_scores


def test_entropy_weights_worked_by_hand(spark):
    """m = 4 accounts, 3 dimensions; ln m = ln 4.

    a = [1, 1, 1, 1]: S = 4, f = 1/4 each, sum f ln f = ln(1/4) = -ln 4, so H_a = 1, 1 - H_a = 0.
    b = [2, 0, 0, 0]: S = 2, f = [1, 0, 0, 0], sum f ln f = 1 ln 1 + 3 * (0 ln 0) = 0, so
        H_b = 0, 1 - H_b = 1.
    c = [3, 1, 0, 0]: S = 4, f = [3/4, 1/4, 0, 0],
        sum f ln f = 3/4 ln 3/4 + 1/4 ln 1/4 = 3/4 ln 3 - ln 4,
        H_c = (ln 4 - 3/4 ln 3) / ln 4 = 1 - 3 ln 3 / (8 ln 2) = 0.4056390622...,
        1 - H_c = 3 ln 3 / (8 ln 2) = 0.5943609377...
    sum (1 - H) = 1.5943609377..., so w_a = 0, w_b = 1 / 1.59436... = 0.6272105495...,
    w_c = 0.59436... / 1.59436... = 0.3727894504...
    """
    scores = spark.createDataFrame(
        [(1.0, 2.0, 3.0), (1.0, 0.0, 1.0), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0)], "a double, "
        "b double, c double")
    d_c = 3 * math.log(3) / (8 * math.log(2))
    weights = entropy_weights(scores, ["a", "b", "c"])
    assert weights == pytest.approx({"a": 0.0, "b": 1 / (1 + d_c), "c": d_c / (1 + d_c)},
                                    abs=1e-9)
    assert weights["b"] == pytest.approx(0.6272105495750588, abs=1e-9)
    assert weights["c"] == pytest.approx(0.37278945042494105, abs=1e-9)


def test_entropy_weights_reject_negative_scores(spark):
    scores = spark.createDataFrame([(1.0,), (-0.5,)], "a double")
    with pytest.raises(ValueError, match=r"^a: the entropy method needs non-negative"):
        entropy_weights(scores, ["a"])


LINES = ["demand_deposit", "time_deposit", "loan", "wealth", "card", "fee_other"]
FEATURES = {
    "tenure_months": [12, 60, 3, 24, 100, 7],
    "active_months_12m": [10, 12, 2, 6, 11, 0],
    "frequency_12m": [40, 90, 3, 20, 60, 0],
    # a few large tickets (a2, a3) do not follow activity: monetary gets a smaller weight
    "monetary_12m": [300.0, 900.0, 800.0, 100.0, 200.0, 0.0],
    "product_count": [2, 4, 1, 1, 3, 0],
    "avg_balance_demand_deposit_12m": [1000.0, 5000.0, 200.0, 800.0, None, 0.0],
    "avg_balance_time_deposit_12m": [0.0, 20000.0, 0.0, 0.0, 10000.0, 0.0],
    "avg_balance_loan_12m": [0.0, 0.0, 0.0, 5000.0, 0.0, 0.0],
    "avg_balance_wealth_12m": [0.0] * 6,
    "avg_balance_card_12m": [0.0] * 6,
    "avg_balance_fee_other_12m": [0.0] * 6,
    "income_12m": [120.0, 800.0, 5.0, 300.0, 400.0, 0.0],
    "income_volatility_12m": [0.2, 0.1, 1.5, 0.6, None, None],
}
INT_COLUMNS = {"tenure_months", "active_months_12m", "frequency_12m", "product_count"}


def _reference_weights(columns: list[list[float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """numpy: standardise (population std, nulls -> 0 afterwards), SVD, |first loadings|."""
    x = np.array([[np.nan if v is None else v for v in col] for col in columns]).T
    z = np.nan_to_num((x - np.nanmean(x, axis=0)) / np.nanstd(x, axis=0), nan=0.0)
    z = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    loadings = np.abs(vt[0])
    return loadings / loadings.sum(), z


def test_pca_weights_match_numpy_svd_with_default_config(spark):
    ids = [f"a{i}" for i in range(6)]
    schema = ", ".join(["account_id string"] + [
        f"{c} {'int' if c in INT_COLUMNS else 'double'}" for c in FEATURES])
    rows = [(acc, *[FEATURES[c][i] for c in FEATURES]) for i, acc in enumerate(ids)]
    features = spark.createDataFrame(rows, schema)

    scores, metrics = loyalty_scores(features, LoyaltyConfig(), seed=1)
    got = {(scope, metric): value for _, scope, metric, value in metrics}

    total_balance = [sum(FEATURES[f"avg_balance_{pl}_12m"][i] or 0.0 for pl in LINES)
                     for i in range(6)]
    activity, z_act = _reference_weights([FEATURES["active_months_12m"],
                                          FEATURES["frequency_12m"], FEATURES["monetary_12m"]])
    depth, _ = _reference_weights([FEATURES["product_count"], total_balance,
                                   FEATURES["income_12m"]])
    assert activity == pytest.approx([0.3747, 0.3924, 0.2329], abs=1e-4)  # not trivially 1/3
    for name, w in zip(["active_months_12m", "frequency_12m", "monetary_12m"], activity,
                       strict=True):
        assert got[("indicator:activity", name)] == pytest.approx(w, abs=1e-9), name
    for name, w in zip(["product_count", "total_balance_12m", "income_12m"], depth,
                       strict=True):
        assert got[("indicator:depth", name)] == pytest.approx(w, abs=1e-9), name
    assert got[("indicator:tenure", "tenure_months")] == 1.0
    assert got[("indicator:stability", "income_volatility_12m")] == 1.0
    dims = [got[("dimension", d)] for d in ("tenure", "activity", "depth", "stability")]
    assert sum(dims) == pytest.approx(1.0, abs=1e-12)
    assert all(w >= 0 for w in dims)

    # the activity dimension score: weighted sum of the z's, min-max scaled, times 100
    raw = z_act @ activity
    expected = 100 * (raw - raw.min()) / (raw.max() - raw.min())
    actual = {r.account_id: r for r in scores.collect()}
    for i, acc in enumerate(ids):
        assert actual[acc].loyalty_activity == pytest.approx(expected[i], abs=1e-9), acc
        assert 0 <= actual[acc].loyalty_score <= 100
    assert scores.columns == ["account_id", "loyalty_tenure", "loyalty_activity",
                              "loyalty_depth", "loyalty_stability", "loyalty_score",
                              "loyalty_band"]


def test_bands_by_rank_on_20_accounts(spark):
    """One dimension, one indicator, inverted: volatility i/10 for account i = 1..20, so
    account 1 is the most stable. Min-max: score = 100 * (20 - i) / 19. Top 10% (2) high,
    next 50% (10) fairly_high, next 30% (6) average, bottom 10% (2) low."""
    cfg = LoyaltyConfig(dimensions=[LoyaltyDimension(
        "stability", [LoyaltyIndicator("income_volatility_12m", direction=-1)])])
    features = spark.createDataFrame([(f"{i:02d}", i / 10) for i in range(1, 21)],
                                     "account_id string, income_volatility_12m double")
    scores, metrics = loyalty_scores(features, cfg, seed=1)

    def band(i: int) -> str:
        return ("high" if i <= 2 else "fairly_high" if i <= 12 else "average" if i <= 18
                else "low")

    expected = spark.createDataFrame(
        [(f"{i:02d}", 100 * (20 - i) / 19, 100 * (20 - i) / 19, band(i)) for i in range(1, 21)],
        scores.schema)
    assertDataFrameEqual(scores, expected, rtol=1e-9)
    counts = {r.loyalty_band: r["count"] for r in scores.groupBy("loyalty_band").count()
              .collect()}
    assert counts == {"high": 2, "fairly_high": 10, "average": 6, "low": 2}
    # cut points: the 90th, 40th and 10th percentiles are the 18th, 8th and 2nd smallest
    # scores, i.e. accounts 3, 13 and 19
    assert metrics[:2] == [("loyalty", "dimension", "stability", 1.0),
                           ("loyalty", "indicator:stability", "income_volatility_12m", 1.0)]
    assert [m[:3] for m in metrics[2:]] == [("loyalty", "band_cut", "high"),
                                            ("loyalty", "band_cut", "fairly_high"),
                                            ("loyalty", "band_cut", "average")]
    # scores are ranked rounded to 6 decimals (cvm_spark.common.cuts.rank_value), so the cuts
    # are too
    assert [m[3] for m in metrics[2:]] == pytest.approx(
        [round(100 * 17 / 19, 6), round(100 * 7 / 19, 6), round(100 * 1 / 19, 6)], rel=1e-12)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"^bands: the last band must have top_share 1.0"):
        LoyaltyConfig(bands=[LoyaltyBand("high", 0.1), LoyaltyBand("low", 0.9)])
    with pytest.raises(ValueError, match=r"^direction must be 1 or -1"):
        LoyaltyIndicator("tenure_months", direction=2)
    with pytest.raises(ValueError, match=r"^name must not be one of"):
        LoyaltyDimension("score", [LoyaltyIndicator("tenure_months")])


def test_missing_features_column_is_named(spark):
    features = spark.createDataFrame([("a", 1)], "account_id string, tenure_months int")
    with pytest.raises(ValueError, match="active_months_12m"):
        loyalty_scores(features, LoyaltyConfig())

"""RFM scores on hand-written feature rows: ties at cut points, inactive accounts, all-zero."""

from __future__ import annotations

from datetime import date

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from cvm_spark.features.rfm import cut_points, score_rfm

SCHEMA = ("snapshot_month date, account_id string, recency_days int, frequency_12m long, "
          "monetary_12m double, btyd_frequency double, btyd_recency double, btyd_t double, "
          "btyd_monetary double")
S = date(2024, 12, 1)


def _features(spark, rows):
    return spark.createDataFrame(
        [(S, a, r, f, m, None, None, None, None) for a, r, f, m in rows], SCHEMA)


def test_scores_codes_and_segments(spark, base_config):
    features = _features(spark, [
        # recency 0..40 -> R cuts [0, 10, 20, 30]; frequency 1,1,1,1,5 -> F cuts [1, 1, 1, 1]
        # (four accounts tie at the cut point and share score 1); monetary 10..50 -> M cuts
        # [10, 20, 30, 40]
        ("a", 0, 5, 50.0),
        ("b", 10, 1, 40.0),
        ("c", 20, 1, 30.0),
        ("d", 30, 1, 20.0),
        ("e", 40, 1, 10.0),
        ("never", None, 0, 0.0),          # never active: 1, 1, 1
    ])
    actual = score_rfm(features, base_config.rfm).select(
        "account_id", "r_score", "f_score", "m_score", "rfm_code", "rfm_score", "segment")
    expected = spark.createDataFrame([
        ("a", 5, 5, 5, "555", 15, "Champions"),
        ("b", 4, 1, 4, "414", 9, "Promising"),
        ("c", 3, 1, 3, "313", 7, "About to sleep"),
        ("d", 2, 1, 2, "212", 5, "Hibernating"),
        ("e", 1, 1, 1, "111", 3, "Lost"),
        ("never", 1, 1, 1, "111", 3, "Lost"),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_cut_points_use_active_accounts_only(spark, base_config):
    features = _features(spark, [("a", 1, 2, 10.0), ("b", 2, 4, 20.0), ("z", None, 0, 0.0)])
    cuts = cut_points(features, base_config.rfm).first()
    assert cuts.f_cuts == [2, 2, 4, 4]
    assert cuts.m_cuts == [10.0, 10.0, 20.0, 20.0]
    assert cuts.r_cuts == [1, 1, 2, 2]


def test_all_zero_population_scores_one(spark, base_config):
    features = _features(spark, [(f"z{i}", None, 0, 0.0) for i in range(4)])
    out = score_rfm(features, base_config.rfm)
    assert out.where((F.col("rfm_code") != "111") | (F.col("segment") != "Lost")).count() == 0
    assert out.count() == 4


def test_all_equal_active_population_shares_one_score(spark, base_config):
    features = _features(spark, [(f"q{i}", 5, 3, 7.0) for i in range(6)])
    codes = {r.rfm_code for r in score_rfm(features, base_config.rfm).collect()}
    # every cut point equals the common value, which falls in the lowest F/M bin and the
    # highest R bin (no cut point is below it)
    assert codes == {"511"}


def test_four_bin_variant(spark, base_config):
    from cvm_spark.config import load_config_dict, to_dict

    data = to_dict(base_config)
    data["rfm"]["bins"] = 4
    data["rfm"]["segments"] = [{"name": "Top", "r": [3, 4], "f": [3, 4], "m": [1, 4]},
                               {"name": "Rest", "r": [1, 4], "f": [1, 4], "m": [1, 4]}]
    cfg = load_config_dict(data)
    features = _features(spark, [(f"x{i}", i, i + 1, float(i)) for i in range(8)])
    scores = score_rfm(features, cfg.rfm).select("r_score", "f_score", "m_score").collect()
    assert {v for row in scores for v in row} == {1, 2, 3, 4}


def test_telecom_scores_zero_to_three_with_the_seed_codes(spark, telecom_config):
    """conf/telecom.yaml: 4 levels scored 0..3 (codes such as '033'), 8 value segments."""
    features = _features(spark, [
        # two accounts at each level: recency 0, 10, 20, 30 -> R cuts [0, 10, 20]; frequency
        # 1..4 -> F cuts [1, 2, 3]; monetary 10..40 -> M cuts [10, 20, 30]
        ("a1", 0, 4, 40.0),
        ("a2", 0, 1, 10.0),
        ("b1", 10, 3, 30.0),
        ("b2", 10, 3, 30.0),
        ("c1", 20, 2, 20.0),
        ("c2", 20, 2, 20.0),
        ("d", 30, 1, 10.0),
        ("e", 30, 4, 40.0),
        ("never", None, 0, 0.0),          # never active: 0, 0, 0
    ])
    actual = score_rfm(features, telecom_config.rfm).select(
        "account_id", "r_score", "f_score", "m_score", "rfm_code", "rfm_score", "segment")
    expected = spark.createDataFrame([
        ("a1", 3, 3, 3, "333", 9, "Important value"),
        ("a2", 3, 0, 0, "300", 3, "General development"),
        ("b1", 2, 2, 2, "222", 6, "Important value"),
        ("b2", 2, 2, 2, "222", 6, "Important value"),
        ("c1", 1, 1, 1, "111", 3, "General win-back"),
        ("c2", 1, 1, 1, "111", 3, "General win-back"),
        ("d", 0, 0, 0, "000", 0, "General win-back"),
        ("e", 0, 3, 3, "033", 6, "Important retention"),
        ("never", 0, 0, 0, "000", 0, "General win-back"),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_segments_must_cover_the_scores_from_the_lowest(base_config):
    import pytest

    from cvm_spark.config import ConfigError, load_config_dict, to_dict

    data = to_dict(base_config)
    data["rfm"].update(bins=4, lowest_score=0)     # the bank's 1..5 table does not fit 0..3
    with pytest.raises(ConfigError, match=r"rfm\.segments\[0\]\.r \[4, 5\] outside 0\.\.3"):
        load_config_dict(data)

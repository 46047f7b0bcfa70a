"""AHP weights (seed 001, 层次分析法): the eigenvector arithmetic against hand-worked and
textbook matrices, the consistency check in the config, and where the weights are used."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvm_spark.common.ahp import RANDOM_INDEX, ahp, judgement, pairwise_matrix
from cvm_spark.config import (
    ConfigError,
    LoyaltyConfig,
    LoyaltyDimension,
    LoyaltyIndicator,
    load_config,
    load_config_dict,
    to_dict,
)
from cvm_spark.models.loyalty import fit_loyalty
from cvm_spark.models.weights import contribution_weight_metrics

CONF = Path(__file__).resolve().parents[1] / "conf" / "cvm.yaml"

# Saaty's textbook 3 x 3 (e.g. Saaty 1980; the usual first worked example): A is moderately
# more important than B (3) and strongly more than C (5), B moderately more than C (3).
TEXTBOOK_3 = [[1, 3, 5], ["1/3", 1, 3], ["1/5", "1/3", 1]]
# A common 4 x 4 tutorial matrix.
TEXTBOOK_4 = [[1, 5, 3, 7], ["1/5", 1, "1/3", 3], ["1/3", 3, 1, 5], ["1/7", "1/3", "1/5", 1]]
# Over historical, current, influence, future: consistent with weights .2 / .5 / .1 / .2
# (a_ij = w_i / w_j), so its weights are those exactly and CR = 0.
CONSISTENT_4 = [[1, "2/5", 2, 1], ["5/2", 1, 5, "5/2"], ["1/2", "1/5", 1, "1/2"],
                [1, "2/5", 2, 1]]


def test_the_textbook_3x3():
    """Worked by hand: the row geometric means (15^(1/3), 1, 15^(-1/3)) = (2.466, 1, 0.405)
    give w ~ (0.637, 0.258, 0.105) (the eigenvector, to 3 decimals); A w = 3.0385 w, so
    CI = 0.0385 / 2 = 0.0193 and CR = 0.0193 / 0.58 = 0.033."""
    r = ahp(pairwise_matrix(TEXTBOOK_3))
    assert r.weights == pytest.approx((0.6370, 0.2583, 0.1047), abs=1e-4)
    assert r.lambda_max == pytest.approx(3.0385, abs=1e-4)
    assert r.consistency_index == pytest.approx(0.0193, abs=1e-4)
    assert r.consistency_ratio == pytest.approx(0.0332, abs=1e-4)
    assert r.consistent
    # it is an eigenvector: (A w)_i = lambda w_i for every row
    m = pairwise_matrix(TEXTBOOK_3)
    for row, wi in zip(m, r.weights, strict=True):
        assert sum(a * w for a, w in zip(row, r.weights, strict=True)) == pytest.approx(
            r.lambda_max * wi, rel=1e-12)


def test_the_textbook_4x4_and_numpy():
    """Weights (0.565, 0.118, 0.262, 0.055), lambda_max 4.117, CR = 0.039 / 0.90 = 0.043;
    numpy's eigen-decomposition agrees to 1e-12."""
    np = pytest.importorskip("numpy")
    m = pairwise_matrix(TEXTBOOK_4)
    r = ahp(m)
    assert r.weights == pytest.approx((0.5650, 0.1175, 0.2622, 0.0553), abs=1e-4)
    assert r.lambda_max == pytest.approx(4.1170, abs=1e-4)
    assert r.consistency_ratio == pytest.approx((4.116982 - 4) / 3 / 0.90, abs=1e-6)
    values, vectors = np.linalg.eig(np.array(m))
    k = int(np.argmax(values.real))
    v = np.abs(vectors[:, k].real)
    assert r.weights == pytest.approx(tuple(v / v.sum()), abs=1e-12)
    assert r.lambda_max == pytest.approx(float(values.real[k]), abs=1e-12)


def test_a_consistent_matrix_gives_its_weights_and_cr_zero():
    r = ahp(pairwise_matrix(CONSISTENT_4))
    assert r.weights == pytest.approx((0.2, 0.5, 0.1, 0.2), abs=1e-12)
    assert r.lambda_max == pytest.approx(4.0, abs=1e-12)
    assert r.consistency_ratio == pytest.approx(0.0, abs=1e-12)
    assert r.worst_pair is None


def test_judgements_and_malformed_matrices():
    assert judgement("1/3") == pytest.approx(1 / 3) and judgement(" 9 ") == 9.0
    assert judgement(0.5) == 0.5
    for bad in ("abc", "1/0", 0, -2, True, None, float("nan")):
        with pytest.raises(ValueError, match="judgement must be a positive number"):
            judgement(bad)
    with pytest.raises(ValueError, match=r"pairwise\[1\]\[0\] = 3 must be the reciprocal"):
        pairwise_matrix([[1, 3], [3, 1]])
    with pytest.raises(ValueError, match=r"pairwise\[1\]\[1\] must be 1"):
        pairwise_matrix([[1, 3], ["1/3", 2]])
    with pytest.raises(ValueError, match="square matrix"):
        pairwise_matrix([[1, 3], ["1/3"]])
    with pytest.raises(ValueError, match=f"1..{len(RANDOM_INDEX)} rows"):
        pairwise_matrix([[1] * 11 for _ in range(11)])
    # a rounded reciprocal is accepted and replaced by the exact one
    m = pairwise_matrix([[1, 3], [0.33, 1]])
    assert m[1][0] == 1 / 3


def _with(override: dict):
    return load_config(CONF, override)


def test_contribution_weights_from_ahp_in_the_config():
    cfg = _with({"value.contribution_weights": {"method": "ahp", "pairwise": CONSISTENT_4}})
    w = cfg.value.contribution_weights
    assert (w.historical, w.current, w.influence, w.future) == pytest.approx(
        (0.2, 0.5, 0.1, 0.2), abs=1e-12)
    # a saved config reloads (the derived weights equal the ones computed again)
    assert load_config_dict(to_dict(cfg)) == cfg
    rows = {(m, s, k): v for m, s, k, v in contribution_weight_metrics(cfg.value)}
    assert rows[("contribution", "weight", "current")] == pytest.approx(0.5, abs=1e-12)
    assert rows[("contribution", "ahp", "consistency_ratio")] == pytest.approx(0.0, abs=1e-12)
    assert set(rows) == {("contribution", "weight", p) for p in
                         ("historical", "current", "influence", "future")} | {
        ("contribution", "ahp", m) for m in ("consistency_ratio", "consistency_index",
                                             "lambda_max")}
    # fixed weights record nothing (they are in the config as typed)
    assert contribution_weight_metrics(load_config(CONF).value) == []


def test_inconsistent_judgements_are_a_config_error_naming_cr_and_pair():
    # CONSISTENT_4 with historical vs future turned from 1 to 9
    bad = [list(r) for r in CONSISTENT_4]
    bad[0][3], bad[3][0] = 9, "1/9"
    with pytest.raises(ConfigError, match=(
            r"value\.contribution_weights\.pairwise: consistency ratio 0\.\d+ is not below "
            r"0\.1 .* the most inconsistent judgement is historical vs future "
            r"\(pairwise\[0\]\[3\] = 9, while the other judgements imply")):
        _with({"value.contribution_weights": {"method": "ahp", "pairwise": bad}})


@pytest.mark.parametrize(("override", "message"), [
    ({"method": "ahp", "pairwise": CONSISTENT_4, "current": 0.55},
     r"current = 0\.55 differs from its AHP weight 0\.5: with method: ahp leave the weights"),
    ({"method": "ahp"}, r"pairwise must be a 4 x 4 matrix over \['historical'"),
    ({"pairwise": CONSISTENT_4}, r"pairwise is only read with method: ahp"),
    ({"method": "topsis"}, r"method must be one of \('fixed', 'ahp'\)"),
])
def test_contribution_weight_settings_are_checked(override, message):
    with pytest.raises(ConfigError, match=r"value\.contribution_weights\." + message):
        _with({"value.contribution_weights": override})


def test_loyalty_between_dimensions_by_ahp(spark):
    """Two dimensions weighted 3 : 1 by AHP (0.75 / 0.25) instead of by entropy: the score is
    100 * (0.75 s_tenure + 0.25 s_activity) of the min-max scaled dimension scores."""
    dims = [LoyaltyDimension("tenure", [LoyaltyIndicator("tenure_months")]),
            LoyaltyDimension("activity", [LoyaltyIndicator("frequency_12m")])]
    cfg = LoyaltyConfig(dimensions=dims, dimension_weighting="ahp",
                        pairwise=[[1, 3], ["1/3", 1]])
    assert cfg.ahp is not None and cfg.ahp.weights == pytest.approx((0.75, 0.25))
    features = spark.createDataFrame(
        [("a", 10, 0.0), ("b", 20, 5.0), ("c", 30, 20.0)],
        "account_id string, tenure_months int, frequency_12m double")
    model = fit_loyalty(features, cfg)
    assert model.dimension_weights == pytest.approx({"tenure": 0.75, "activity": 0.25})
    m = {(s, k): v for _, s, k, v in model.metrics}
    assert m[("dimension", "tenure")] == pytest.approx(0.75)
    assert m[("ahp", "consistency_ratio")] == 0.0
    from cvm_spark.models.loyalty import add_loyalty

    got = {r.account_id: r.loyalty_score for r in add_loyalty(features, model)
           .select("account_id", "loyalty_score").collect()}
    # tenure scaled (0, .5, 1), activity (0, .25, 1)
    assert got == pytest.approx({"a": 0.0, "b": 100 * (0.75 * 0.5 + 0.25 * 0.25),
                                 "c": 100.0})
    with pytest.raises(ValueError, match="pairwise is only read with dimension_weighting: ahp"):
        LoyaltyConfig(dimensions=dims, pairwise=[[1, 3], ["1/3", 1]])
    with pytest.raises(ValueError, match=r"pairwise must be a 2 x 2 matrix over \['tenure'"):
        LoyaltyConfig(dimensions=dims, dimension_weighting="ahp", pairwise=[[1]])


def test_contribution_value_uses_the_ahp_weights(spark):
    from cvm_spark.models.value import contribution_value

    cfg = _with({"value.contribution_weights": {"method": "ahp", "pairwise": CONSISTENT_4}})
    df = spark.createDataFrame([(10.0, 20.0, 30.0, 40.0)],
                               "historical_value_pct double, current_value_pct double, "
                               "influence_value_pct double, future_value_pct double")
    got = df.select(contribution_value(cfg.value).alias("cv")).first().cv
    assert got == pytest.approx(0.2 * 10 + 0.5 * 20 + 0.1 * 30 + 0.2 * 40, abs=1e-9)

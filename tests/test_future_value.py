"""Future value (cvm_spark/models/future_value/): KMeans + one regression per cluster.

The model tests use one generated bank: 1,500 accounts x 15 months ending December 2024
(generator seed 7, no bad rows, so the generated tables are used as they are). Training
features are as of September 2024 (t-3); the label is the income of October..December.
The accounts table carries the generator's ground truth ``planted_group`` (high / medium /
low value), which the clusters are compared with by membership, never by KMeans id.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import date

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from cvm_generate import PLANTED_GROUP, generate_tables
from cvm_spark.config import (
    BacktestConfig,
    ClvConfig,
    FeaturesConfig,
    FutureValueConfig,
    GeneratorConfig,
    ValidationConfig,
)
from cvm_spark.features.windows import compute_features
from cvm_spark.models.future_value import (
    FutureValueModelNotFound,
    build_training_set,
    fit_future_value,
    load_future_value,
    model_dir,
    run_future_value,
    save_future_value,
    score,
)
from cvm_spark.schemas.inputs import ACCOUNTS, MONTHLY_PRODUCT, TRANSACTIONS

SNAPSHOT = date(2024, 12, 1)
SEED = 42
# the seed's method and features (no interactions, no back-test): the measured results of
# docs/future_value.md; the back-test has tests of its own (below, test_fv_backtest.py)
CFG = FutureValueConfig(interactions=[], features=["income_3m", "income_6m", "income_12m",
                                                  "arpu_3m", "arpu_12m", "income_trend_6m"],
                        cluster_features=["arpu_3m", "arpu_12m"],
                        method="cluster_regression", backtest=BacktestConfig(origins=0))
IN_USE = [("future_value", "method:cluster_regression", "in_use", 1.0)]
FEATURES = FeaturesConfig()
VALIDATION = ValidationConfig()
LINES = VALIDATION.product_lines
# Cluster names (ranked by mean label) and the planted group each should mostly hold.
EXPECTED_GROUP = {"high_value": "high", "medium_value": "medium", "low_value": "low"}


def _metrics(rows):
    return {(scope, metric): value for _, scope, metric, value in rows}


def _same_metrics(a, b) -> bool:
    return len(a) == len(b) and all(
        x[:3] == y[:3] and (x[3] == y[3] or (math.isnan(x[3]) and math.isnan(y[3])))
        for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------------------------
# Configuration (no Spark)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"horizon_months": 0}, "horizon_months"),
    ({"k": 1}, "k"),
    ({"k": 4}, "cluster_names"),  # three default names for four clusters
    ({"features": []}, "features"),
    ({"features": ["income_3m", "income 12m"]}, "features[1]"),
    ({"cluster_features": ["arpu_12m", "arpu_12m"]}, "cluster_features"),
    ({"cluster_transform": "log"}, "cluster_transform"),
    ({"cluster_names": ["a", "a", "b"]}, "cluster_names"),
    ({"holdout_fraction": 0.0}, "holdout_fraction"),
    ({"reg_param": -1.0}, "reg_param"),
    ({"loss": "huber", "elastic_net": 0.5}, "loss"),
    ({"loss": "absolute"}, "loss"),
    ({"target": "profit"}, "target"),
    ({"min_cluster_rows": 0}, "min_cluster_rows"),
])
def test_config_rejects_impossible_values(kwargs, field):
    with pytest.raises(ValueError) as err:
        FutureValueConfig(**kwargs)
    assert str(err.value).startswith(f"{field} "), str(err.value)


def test_config_names_and_fingerprint():
    assert CFG.names() == ["high_value", "medium_value", "low_value"]
    four = FutureValueConfig(k=4, cluster_names=[])
    assert four.names() == [f"cluster_rank_{i}" for i in (1, 2, 3, 4)]
    assert dataclasses.replace(FutureValueConfig(), interactions=[], features=CFG.features,
                               cluster_features=CFG.cluster_features,
                               method="cluster_regression",
                               backtest=BacktestConfig(origins=0)).fingerprint() == \
        CFG.fingerprint()
    assert FutureValueConfig().fingerprint() != CFG.fingerprint()
    assert four.fingerprint() != CFG.fingerprint()
    assert CFG.baseline_column == "income_3m"
    assert CFG.input_columns[:len(CFG.features)] == CFG.features


# --------------------------------------------------------------------------------------------
# Training set on hand-written rows
# --------------------------------------------------------------------------------------------

SMALL_FEATURES = FeaturesConfig(windows_months=[1, 3, 12], trend_months=3, volatility_months=3,
                                active_months=3)
SMALL_CFG = FutureValueConfig(interactions=[], features=["income_3m", "income_12m"],
                              cluster_features=["arpu_12m"])


@pytest.fixture(scope="module")
def small_inputs(spark):
    accounts = spark.createDataFrame([
        (a, o, c, "individual", "north", 1980, "branch", None) for a, o, c in [
            ("A", date(2020, 1, 15), None),              # open throughout
            ("B", date(2024, 10, 5), None),              # opened after t-H: not trained on
            ("C", date(2015, 1, 1), date(2024, 8, 20)),  # closed before t-H ends: not trained
            ("D", date(2023, 1, 1), None),               # no monthly facts: label 0
            ("E", date(2019, 6, 1), date(2024, 11, 10)),  # closes inside the label window
        ]], ACCOUNTS.required_schema)
    income = {
        "A": {6: 1.0, 7: 2.0, 8: 4.0, 9: 8.0, 10: 16.0, 11: 32.0, 12: 64.0},
        "B": {10: 5.0, 11: 5.0, 12: 5.0},
        "C": {6: 3.0, 7: 3.0, 8: 3.0},
        "E": {8: 10.0, 9: 20.0, 10: 30.0, 11: 40.0},
    }
    monthly = spark.createDataFrame(
        [(a, date(2024, m, 1), "demand_deposit", 100.0, v, 0.5)
         for a, months in income.items() for m, v in months.items()]
        + [("A", date(2024, 11, 1), "loan", 50.0, 0.5, 0.0)],  # second line, same month
        MONTHLY_PRODUCT.schema)
    transactions = spark.createDataFrame([], TRANSACTIONS.schema)
    return accounts, transactions, monthly


def test_training_set_windows(spark, small_inputs):
    training = build_training_set(*small_inputs, SNAPSHOT, SMALL_FEATURES, LINES, SMALL_CFG)
    # t = Dec 2024, H = 3: features as of Sep 2024; label = Oct + Nov + Dec;
    # baseline = income_3m as of Sep = Jul + Aug + Sep.
    expected = spark.createDataFrame([
        ("A", 14.0, 15.0, 15.0 / 12, 16.0 + 32.5 + 64.0, 14.0),
        ("D", 0.0, 0.0, 0.0, 0.0, 0.0),
        ("E", 30.0, 30.0, 30.0 / 12, 70.0, 30.0),
    ], "account_id string, income_3m double, income_12m double, arpu_12m double, "
       "label double, baseline double")
    assertDataFrameEqual(training, expected)


def test_training_set_baseline_without_a_feature_window(spark, small_inputs):
    # H = 2 is not a feature window: the baseline is summed from monthly facts directly.
    cfg = FutureValueConfig(horizon_months=2, interactions=[], features=["income_3m"],
                            cluster_features=["income_12m"], target="income")
    training = build_training_set(*small_inputs, SNAPSHOT, SMALL_FEATURES, LINES, cfg)
    # features as of Oct 2024; label = Nov + Dec; baseline = Sep + Oct.
    got = {r.account_id: (r.label, r.baseline) for r in training.collect()}
    assert got == {"A": (32.5 + 64.0, 8.0 + 16.0), "B": (10.0, 5.0), "D": (0.0, 0.0),
                   "E": (40.0, 20.0 + 30.0)}
    with pytest.raises(ValueError, match=r"features\.windows_months"):
        build_training_set(*small_inputs, SNAPSHOT, SMALL_FEATURES, LINES,
                           FutureValueConfig(horizon_months=2, interactions=[],
                                             features=["income_3m"],
                                             cluster_features=["income_12m"]))


def test_unknown_feature_is_named(small_inputs):
    cfg = FutureValueConfig(interactions=[], features=["income_3m", "income_99m"],
                            cluster_features=["arpu_12m"])
    with pytest.raises(ValueError, match="income_99m"):
        build_training_set(*small_inputs, SNAPSHOT, SMALL_FEATURES, LINES, cfg)


# --------------------------------------------------------------------------------------------
# The model on a generated bank
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank(spark):
    gen = GeneratorConfig(accounts=1500, months=15, seed=7, bad_row_share=0.0)
    tables = generate_tables(spark, gen, SNAPSHOT, VALIDATION)
    out = {name: tables[name].persist()
           for name in ("accounts", "transactions", "monthly_product")}
    yield out
    for df in out.values():
        df.unpersist()


def _inputs(bank):
    return bank["accounts"], bank["transactions"], bank["monthly_product"]


@pytest.fixture(scope="module")
def features_now(bank):
    df = compute_features(*_inputs(bank), SNAPSHOT, FEATURES, LINES).persist()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def training(bank):
    df = build_training_set(*_inputs(bank), SNAPSHOT, FEATURES, LINES, CFG).persist()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def fitted(training):
    return fit_future_value(training, CFG, SEED)


@pytest.fixture(scope="module")
def scores(fitted, features_now):
    df = score(fitted, features_now).persist()
    yield df
    df.unpersist()


@pytest.fixture(scope="module")
def model_root(fitted, tmp_path_factory):
    """A model root holding ``fitted``, saved for SNAPSHOT."""
    root = str(tmp_path_factory.mktemp("models"))
    assert save_future_value(fitted, root, SNAPSHOT) == model_dir(root, SNAPSHOT)
    return root


def _contingency(scores, accounts) -> dict[tuple[str, str], int]:
    """(cluster name, planted group) -> accounts; at most k x 3 rows reach the driver."""
    rows = (scores.where(F.col("fv_cluster").isNotNull())
            .join(accounts.select("account_id", PLANTED_GROUP), on="account_id", how="inner")
            .groupBy("fv_cluster", PLANTED_GROUP).count().collect())
    return {(r.fv_cluster, r[PLANTED_GROUP]): r["count"] for r in rows}


def _adjusted_rand_index(table: dict[tuple[str, str], int]) -> float:
    def pairs(n: float) -> float:
        return n * (n - 1) / 2

    rows: dict[str, int] = {}
    cols: dict[str, int] = {}
    for (a, b), n in table.items():
        rows[a] = rows.get(a, 0) + n
        cols[b] = cols.get(b, 0) + n
    index = sum(pairs(n) for n in table.values())
    row_pairs, col_pairs = sum(map(pairs, rows.values())), sum(map(pairs, cols.values()))
    expected = row_pairs * col_pairs / pairs(sum(table.values()))
    return (index - expected) / ((row_pairs + col_pairs) / 2 - expected)


def test_clusters_recover_the_planted_value_groups(scores, bank):
    table = _contingency(scores, bank["accounts"])
    total = sum(table.values())
    names = {a for a, _ in table}
    assert names == set(EXPECTED_GROUP)
    majority = {name: max((n, g) for (a, g), n in table.items() if a == name)
                for name in names}
    purity = sum(n for n, _ in majority.values()) / total
    ari = _adjusted_rand_index(table)
    print(f"contingency {sorted(table.items())}; purity {purity:.3f}; ARI {ari:.3f}")
    assert purity > 0.8
    assert ari > 0.55
    # each named cluster's majority planted group matches the name's value order
    assert {name: g for name, (_, g) in majority.items()} == EXPECTED_GROUP
    sizes = {name: sum(n for (a, _), n in table.items() if a == name) for name in names}
    assert sizes["high_value"] < sizes["medium_value"] < sizes["low_value"]


def test_names_follow_centroid_statistics(fitted, training):
    m = _metrics(fitted.metrics)
    order = ["cluster:high_value", "cluster:medium_value", "cluster:low_value"]
    for metric in ("mean_label", "centroid:arpu_3m", "centroid:arpu_12m"):
        values = [m[(scope, metric)] for scope in order]
        assert values == sorted(values, reverse=True), (metric, values)
    assert sum(m[(s, "size")] for s in order) == training.count()
    assert sum(m[(s, "holdout_rows")] for s in order) == m[("overall", "holdout_rows")]
    share = m[("overall", "holdout_rows")] / training.count()
    assert 0.15 < share < 0.25  # holdout_fraction 0.2 by hash of (seed, account)
    assert all(m[(s, "pooled")] == 0.0 for s in order)


def test_per_cluster_regression_beats_the_naive_baseline(fitted):
    m = _metrics(fitted.metrics)
    report = {scope: (round(m[(scope, "rmse")], 2), round(m[(scope, "baseline_rmse")], 2))
              for scope, metric in m if metric == "rmse"}
    print(f"hold-out rmse (model, baseline): {report}")
    assert m[("overall", "rmse")] < m[("overall", "baseline_rmse")]
    assert m[("overall", "mae")] < m[("overall", "baseline_mae")]
    assert m[("overall", "r2")] > m[("overall", "baseline_r2")]
    # Per cluster only where the hold-out is large enough to mean something: the high-value
    # cluster has ~12 held-out accounts here, and a few volatile ones decide its RMSE
    # (docs/future_value.md, "Measured results").
    for scope in ("cluster:medium_value", "cluster:low_value"):
        assert m[(scope, "rmse")] < m[(scope, "baseline_rmse")], scope


def test_scores_every_account_once(scores, features_now):
    row = (features_now.select("account_id", "is_closed")
           .join(scores, on="account_id", how="full_outer")
           .agg(F.count(F.lit(1)).alias("rows"),
                F.count_distinct("account_id").alias("accounts"),
                F.count_if(F.col("is_closed").isNull() | F.col("future_value").isNull())
                .alias("unmatched"),
                F.count_if(F.col("is_closed") & (F.col("fv_cluster").isNotNull()
                                                 | (F.col("future_value") != 0)))
                .alias("closed_scored"),
                F.count_if(~F.col("is_closed") & F.col("fv_cluster").isNull())
                .alias("open_unclustered"),
                F.count_if(F.col("future_value") < 0).alias("negative"))
           .first())
    assert row.rows == row.accounts > 1000
    assert (row.unmatched, row.closed_scored, row.open_unclustered, row.negative) == (0, 0, 0, 0)


def test_one_expression_matches_the_fitted_regressions(fitted, features_now, scores):
    """The scored value is baseline + intercept + coefficients . features of the account's
    cluster, floored at 0, computed here in Python from the fitted parameters."""
    cfg = fitted.config
    sample = features_now.where(~F.col("is_closed")).orderBy("account_id").limit(40)
    prepared = sample.select("account_id", *[F.coalesce(F.col(c).cast("double"), F.lit(0.0))
                                             .alias(c) for c in cfg.input_columns])
    by_id = {r.cluster_id: r for r in fitted.regressions}
    expected = {}
    for r in fitted.pipeline.transform(prepared).collect():
        reg = by_id[r["_fv_cluster_id"]]
        change = reg.intercept + sum(c * r[f] for f, c in zip(cfg.features, reg.coefficients,
                                                              strict=True))
        expected[r.account_id] = max(r[cfg.baseline_column] + change, 0.0)
    got = {r.account_id: r.future_value for r in
           scores.join(sample.select("account_id"), on="account_id", how="inner").collect()}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


def test_saved_model_scores_identically(spark, fitted, features_now, scores, model_root):
    assert model_dir(model_root, SNAPSHOT).endswith("/future_value/2024-12")
    loaded = load_future_value(spark, model_root, SNAPSHOT)
    assert loaded.names == fitted.names
    assert loaded.config == fitted.config and loaded.seed == SEED
    assert _same_metrics(loaded.metrics, fitted.metrics)
    assertDataFrameEqual(score(loaded, features_now), scores, rtol=0.0, atol=0.0)


def test_same_input_and_seed_give_identical_scores(bank, features_now, scores, fitted,
                                                   model_root):
    # retrain from the raw tables into a root that already holds the model (overwrite)
    again, metrics = run_future_value(*_inputs(bank), features_now, SNAPSHOT, FEATURES, LINES,
                                      CFG, seed=SEED, model_root=model_root, retrain=True)
    assertDataFrameEqual(again, scores, rtol=0.0, atol=0.0)
    assert _same_metrics(metrics, fitted.metrics + IN_USE)
    # ... and the next run can reuse what this one saved
    reused, reused_metrics = run_future_value(*_inputs(bank), features_now, SNAPSHOT, FEATURES,
                                              LINES, CFG, seed=SEED, model_root=model_root,
                                              retrain=False)
    assertDataFrameEqual(reused, scores, rtol=0.0, atol=0.0)
    assert _same_metrics(reused_metrics, metrics)


def test_reuse_needs_a_saved_model_with_the_same_settings(spark, bank, features_now,
                                                          model_root, tmp_path):
    with pytest.raises(FutureValueModelNotFound, match=r"2024-11.*retrain"):
        run_future_value(*_inputs(bank), features_now, date(2024, 11, 1), FEATURES, LINES,
                         CFG, seed=SEED, model_root=str(tmp_path), retrain=False)
    # a save that stopped before its last stage leaves nothing loadable
    import shutil
    from pathlib import Path

    saved = Path(save_future_value(load_future_value(spark, model_root, SNAPSHOT),
                                   str(tmp_path), SNAPSHOT))
    assert load_future_value(spark, str(tmp_path), SNAPSHOT).names
    last = max((saved / "stages").iterdir(), key=lambda d: int(d.name.split("_")[0]))
    shutil.rmtree(last)
    with pytest.raises(FutureValueModelNotFound, match=r"no complete .* 2024-12"):
        load_future_value(spark, str(tmp_path), SNAPSHOT)
    other = dataclasses.replace(CFG, k=4, cluster_names=[])
    with pytest.raises(ValueError, match=r"other settings.*\['k', 'cluster_names'\]"):
        run_future_value(*_inputs(bank), features_now, SNAPSHOT, FEATURES, LINES, other,
                         seed=SEED, model_root=model_root, retrain=False)


def test_backtest_with_btyd_spend_on_bank_data(bank, features_now, tmp_path):
    """Every origin x candidate (and the naive forecast) is back-tested, also btyd_spend on
    bank data (it forecasts transaction spend there), and auto records the best mean skill."""
    cfg = FutureValueConfig(candidates=["global_regression", "btyd_spend"],
                            backtest=BacktestConfig(origins=2))
    _, rows = run_future_value(*_inputs(bank), features_now, SNAPSHOT, FEATURES, LINES, cfg,
                               SEED, str(tmp_path), clv_cfg=ClvConfig())
    m = _metrics(rows)
    for origin in ("2024-09", "2024-06"):
        for method in ("global_regression", "btyd_spend", "naive"):
            for metric in ("accounts", "rmse", "mae", "mse_skill", "bias"):
                assert (f"{origin}/{method}/overall", metric) in m, (origin, method, metric)
        assert m[(f"{origin}/btyd_spend/overall", "accounts")] == \
            m[(f"{origin}/global_regression/overall", "accounts")] > 1000
    means = {c: m[(f"mean/{c}/overall", "mse_skill")] for c in cfg.candidates}
    best = max(cfg.candidates, key=lambda c: means[c])
    assert m[(f"chosen:{best}", "mean_mse_skill")] == means[best]
    assert (f"method:{best}", "in_use") in m

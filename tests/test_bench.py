"""The benchmark's references stay equal to our definitions (scripts/bench_reference.py).

On a tiny generated bank: the DuckDB feature SQL gives the same values as
compute_features for every account (with the comparison function the benchmark uses, which
must also be able to fail), and the lifetimes and scikit-learn runners read the exported
data in the right units.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench
duckdb = pytest.importorskip("duckdb")

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module   # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref():
    return _load("bench_reference")


@pytest.fixture(scope="module")
def bench():
    return _load("bench")


@pytest.fixture(scope="module")
def tiny(make_bank, spark, bench):
    """600 accounts x 15 months, generated, validated and copied to Parquet as the bench does."""
    cfg = make_bank(600, 15, name="bench", generator={"bad_row_share": 0.01})
    root = Path(cfg.inputs.root).parent
    counts = bench.export_inputs(spark, cfg, root / "inputs")
    assert all(n > 0 for n in counts.values()), counts
    return cfg, root


@pytest.fixture(scope="module")
def features_pair(spark, tiny, ref, bench):
    """Our features and DuckDB's, both written to Parquet from the same copy."""
    from cvm_spark.features.windows import compute_features

    cfg, root = tiny
    t = bench.read_copy(spark, root / "inputs")
    ours = root / "features_spark"
    compute_features(t["accounts"], t["transactions"], t["monthly_product"], cfg.snapshot,
                     cfg.features, list(cfg.validation.product_lines)) \
        .write.mode("overwrite").parquet(str(ours))
    theirs = root / "features_duckdb.parquet"
    result = ref.run_duckdb_features({n: str(root / "inputs" / n) for n in ref.INPUTS},
                                     str(theirs), cfg.snapshot, cfg.features,
                                     list(cfg.validation.product_lines), threads=2)
    assert result["rows"] > 0
    return ours, theirs


def test_duckdb_features_equal_compute_features(features_pair, ref):
    ours, theirs = features_pair
    cmp = ref.compare_features(str(ours), str(theirs), sample=100_000)
    detail = "\n".join(str(e) for e in cmp.examples)
    assert cmp.ok, f"{cmp.summary()}\n{detail}"
    # every account was compared, on every column of compute_features
    assert cmp.sampled_accounts == cmp.rows_ours > 500
    assert cmp.compared_values == cmp.sampled_accounts * (len(
        duckdb.sql(f"DESCRIBE SELECT * FROM {ref.parquet_source(str(ours))}").fetchall()) - 1)
    # the sample covers the cases the definitions distinguish
    cases = duckdb.connect().execute(f"""SELECT count(*) FILTER (WHERE is_closed),
        count(*) FILTER (WHERE last_txn_date IS NULL),
        count(*) FILTER (WHERE btyd_frequency IS NULL AND last_txn_date IS NOT NULL),
        count(*) FILTER (WHERE months_open_12m < 12 AND NOT is_closed),
        count(*) FILTER (WHERE income_trend_6m IS NOT NULL)
        FROM {ref.parquet_source(str(ours))}""").fetchone()
    assert cases[0] > 0 and cases[3] > 0 and cases[4] > 0, cases


def test_feature_comparison_fails_on_a_difference(features_pair, ref, tmp_path):
    ours, theirs = features_pair
    src = ref.parquet_source(str(theirs))
    changed, dropped = tmp_path / "changed.parquet", tmp_path / "dropped.parquet"
    # one value of one account off by 1 %, and a column missing
    duckdb.sql(f"""COPY (SELECT * REPLACE (CASE WHEN account_id = (SELECT min(account_id)
                   FROM {src} WHERE income_3m > 0) THEN income_3m * 1.01 ELSE income_3m END
                   AS income_3m) FROM {src}) TO '{changed}' (FORMAT parquet)""")
    duckdb.sql(f"COPY (SELECT * EXCLUDE (btyd_t) FROM {src}) TO '{dropped}' (FORMAT parquet)")
    cmp = ref.compare_features(str(ours), str(changed), sample=100_000)
    assert not cmp.ok
    assert cmp.mismatching_values == 1 and cmp.mismatching_columns == {"income_3m": 1}
    cmp = ref.compare_features(str(ours), str(dropped), sample=100_000)
    assert not cmp.ok and cmp.columns_missing_in_reference == ["btyd_t"]
    # the sample is seeded: the same accounts on every call, another set for another seed
    a = ref.compare_features(str(ours), str(theirs), sample=50, seed=1)
    b = ref.compare_features(str(ours), str(theirs), sample=50, seed=1)
    assert a.sampled_accounts == 50 and a.to_dict() == b.to_dict()


def test_lifetimes_runner_agrees_with_our_fit(spark, tiny, features_pair, ref):
    pytest.importorskip("lifetimes")
    from cvm_spark.models.clv import fit_bgnbd

    cfg, _ = tiny
    ours, _ = features_pair
    out = ref.run_lifetimes(str(ours), cfg.clv)
    fit = fit_bgnbd(spark.read.parquet(str(ours)), cfg.clv)
    assert out["fit_rows"] == fit.n_accounts
    for name in ("r", "alpha", "a", "b"):
        assert out["bgnbd"][name] == pytest.approx(getattr(fit, name), rel=1e-3), name
    assert 0 < out["mean_prob_alive"] <= 1 and out["mean_expected_purchases"] > 0


def test_sklearn_runner_on_the_training_matrix(spark, tiny, ref):
    pytest.importorskip("sklearn")
    from cvm_spark.models.future_value import build_training_set, holdout_flag

    cfg, root = tiny
    fv = cfg.future_value
    t = {n: spark.read.parquet(str(root / "inputs" / n)) for n in ref.INPUTS}
    matrix = root / "fv_matrix"
    training = build_training_set(t["accounts"], t["transactions"], t["monthly_product"],
                                  cfg.snapshot, cfg.features,
                                  list(cfg.validation.product_lines), fv)
    training.select("*", holdout_flag(cfg.run_seed, fv.holdout_fraction).alias("holdout")) \
        .write.mode("overwrite").parquet(str(matrix))
    rows = spark.read.parquet(str(matrix))
    out = ref.run_sklearn_future_value(str(matrix), fv, cfg.run_seed)
    assert out["rows"] == rows.count()
    assert out["holdout_rows"] == rows.where("holdout").count() > 0
    assert len(out["clusters_by_rank"]) == fv.k
    assert sum(c["size"] for c in out["clusters_by_rank"]) == out["rows"]
    labels = [c["mean_label"] for c in out["clusters_by_rank"]]
    assert labels == sorted(labels, reverse=True)
    assert math.isfinite(out["rmse"]) and math.isfinite(out["baseline_rmse"])

"""End-to-end: generate a small bank, run the main job, check the tables it leaves."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from cvm_spark.common.months import add_months
from cvm_spark.storage.delta import table_path

pytestmark = pytest.mark.e2e

# e2e_config and e2e_runs (the shared warehouse, also used by test_report.py) are in
# conftest.py.


@pytest.fixture(scope="module")
def summary(e2e_runs):
    return e2e_runs.first()   # the run that generated the data


def first_month(spark, cfg, table):
    """The rows of the first run's snapshot month: other tests (test_crash_safety.py,
    test_concurrency.py) may already have run other months into the shared warehouse."""
    return spark.read.format("delta").load(table_path(cfg.output, table)).where(
        F.col("snapshot_month") == F.lit(cfg.snapshot))


def test_every_row_read_is_accepted_or_quarantined(spark, e2e_config, summary):
    quarantine = first_month(spark, e2e_config, "quarantine")
    per_table = {r.source_table: r["count"] for r in
                 quarantine.groupBy("source_table").count().collect()}
    for name, read in summary.rows_read.items():
        bad = sum(summary.rows_quarantined[name].values())
        assert per_table.get(name, 0) == bad, name
        assert read > bad, name
    # the generator plants bad rows of every kind; the main kinds must show up
    reasons = {r.reason for r in quarantine.select("reason").distinct().collect()}
    assert {"null_key", "non_positive_amount", "non_finite_value", "date_out_of_window",
            "unknown_product_line", "orphan_account", "duplicate_event"} <= reasons


def test_rfm_and_features_cover_the_accounts(spark, e2e_config, summary):
    features = first_month(spark, e2e_config, "features")
    rfm = first_month(spark, e2e_config, "rfm")
    n = features.count()
    assert n == rfm.count() == summary.rows_written["rfm"] == sum(summary.segments.values())
    assert n > 300
    assert rfm.where(F.col("segment").isNull()).count() == 0
    assert rfm.select("r_score").distinct().count() == 5
    assert features.select("account_id").distinct().count() == n
    assert len(summary.segments) >= 5


def test_model_tables_cover_every_account(spark, e2e_config, summary):
    n = summary.rows_written["features"]
    for table in ("value_scores", "tiers"):
        df = first_month(spark, e2e_config, table)
        assert df.count() == n, table
        assert df.select("account_id").distinct().count() == n, table
    tiers = first_month(spark, e2e_config, "tiers")
    assert tiers.where(F.col("tier").isNull() | F.col("tier_reason").isNull()
                       | F.col("lifecycle_stage").isNull()).count() == 0
    assert {r.abc_class for r in tiers.select("abc_class").distinct().collect()} == \
        {"A", "B", "C"}
    assert sum(summary.tiers.values()) == n
    metrics = first_month(spark, e2e_config, "model_metrics")
    models = {r.model for r in metrics.select("model").distinct().collect()}
    assert {"future_value", "bgnbd", "gamma_gamma", "loyalty", "clv", "contribution",
            "future_value_backtest"} <= models
    # the out-of-time back-test: every origin x method (and the naive forecast), overall and
    # per cluster, and one chosen method with its reason
    fv = e2e_config.future_value
    backtest = {(r.scope, r.metric): r.value for r in metrics
                .where(F.col("model") == "future_value_backtest").collect()}
    for offset in fv.backtest_offsets:
        origin = f"{add_months(e2e_config.snapshot, -offset):%Y-%m}"
        for method in (*fv.candidates, "naive"):
            for metric in ("accounts", "rmse", "mae", "mse_skill", "bias"):
                assert (f"{origin}/{method}/overall", metric) in backtest, (origin, method)
            assert any(s.startswith(f"{origin}/{method}/cluster:") for s, _ in backtest)
    chosen = {s for s, m in backtest if s.startswith("chosen:")}
    assert len(chosen) == 1 and ((next(iter(chosen)), "mean_mse_skill") in backtest)
    in_use = [r.scope for r in metrics.where((F.col("model") == "future_value")
                                             & (F.col("metric") == "in_use")).collect()]
    assert in_use == [next(iter(chosen)).replace("chosen:", "method:")]
    # the AHP contribution weights of the config, and their consistency
    ahp = {(r.scope, r.metric): r.value for r in metrics.where(F.col("model") == "contribution")
           .collect()}
    weights = e2e_config.value.contribution_weights
    assert {m: v for (s, m), v in ahp.items() if s == "weight"} == pytest.approx(
        weights.as_dict(), rel=1e-12)
    assert ahp[("ahp", "consistency_ratio")] == pytest.approx(
        weights.ahp.consistency_ratio, rel=1e-12) and ahp[("ahp", "consistency_ratio")] < 0.1
    summary_rows = first_month(spark, e2e_config, "tier_summary").agg(F.sum("accounts")).first()[0]
    assert summary_rows == n
    text = summary.render()
    assert "tier" in text and "model metrics" in text


def test_rerun_is_identical_and_leaves_one_copy(spark, e2e_config, e2e_runs, summary):
    tables = ("rfm", "value_scores", "tiers", "campaign_targets", "tier_summary")

    def snapshot_rows(table):
        df = spark.read.format("delta").load(table_path(e2e_config.output, table))
        return sorted(df.collect())

    before = {t: snapshot_rows(t) for t in tables}
    again = e2e_runs.run()
    for table in tables:
        assert snapshot_rows(table) == before[table], table
    # run_log is appended, one row per table and stage: the generating run has one stage more
    assert {k: v for k, v in again.rows_written.items() if k != "run_log"} == \
        {k: v for k, v in summary.rows_written.items() if k != "run_log"}


def test_summary_renders(summary):
    text = summary.render()
    assert "accounts scored" in text and "quarantine" in text and "rfm" in text
    # company KPIs: kpi_summary's overall row, observed while the table was written
    assert summary.kpis["accounts"] == summary.rows_written["rfm"]
    assert summary.kpis["responses"] > 0 and -100 <= summary.kpis["nps"] <= 100
    assert (f"company KPIs (kpi_summary, all accounts):\n  CAC {summary.kpis['cac']:,.0f}, "
            f"CLV {summary.kpis['clv']:,.0f}") in text
    assert f"NPS {summary.kpis['nps']:+.1f}" in text


def test_other_snapshot_keeps_the_first(spark, e2e_config, e2e_runs, summary):
    e2e_runs.latest("2024-11")
    rfm = spark.read.format("delta").load(table_path(e2e_config.output, "rfm"))
    months = {r.snapshot_month.isoformat(): r["count"]
              for r in rfm.groupBy("snapshot_month").count().collect()}
    assert set(months) == {"2024-11-01", "2024-12-01"}
    assert months["2024-12-01"] == summary.rows_written["rfm"]

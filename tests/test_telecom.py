"""End-to-end on the telecom operator profile: ``cvm run --config conf/telecom.yaml
--generate`` on a small generated operator, then the values the seed's methods should give
(RFM codes 0..3, ARPU classes, risk customers and their retention campaign, value by service
group, the report's sections)."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
from pathlib import Path

import pytest
from banks import KeepOpen
from pyspark.sql import functions as F

from cvm_spark.storage.delta import table_path

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "telecom.yaml"


@pytest.fixture(scope="module")
def operator(spark, tmp_path_factory):
    """The telecom run through the CLI, as a user starts it: (config, printed output, report
    path)."""
    from cvm_spark import cli
    from cvm_spark.config import load_config

    root = tmp_path_factory.mktemp("telecom")
    sets = {"inputs.root": root / "data", "output.warehouse": root / "wh",
            "generator.months": 14, "generator.bad_row_share": 0.005}
    argv = ["run", "--config", str(CONF), "--generate", "--accounts", "600",
            "--report", str(root / "report.html")]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(cli, "_session", lambda *a, **k: KeepOpen(spark))
        code = cli.main(argv)
    assert code == 0, out.getvalue()
    cfg = load_config(CONF, {k: str(v) if isinstance(v, Path) else v for k, v in sets.items()})
    return cfg, out.getvalue(), root / "report.html"


def _table(spark, cfg, name):
    return spark.read.format("delta").load(table_path(cfg.output, name)).where(
        F.col("snapshot_month") == F.lit(cfg.snapshot))


def test_the_run_prints_its_summary(operator):
    _, printed, report = operator
    assert f"report:      {report.resolve()}" in printed  # cvm run ends with the report
    assert "start with:  select tier, sum(accounts)" in printed
    assert "accounts scored:" in printed
    assert re.search(r"Important value\s+[\d,]+", printed)
    assert "company KPIs (kpi_summary" in printed
    assert re.search(r"kpi_summary\s+[\d,]+ rows", printed)


def test_rfm_scores_zero_to_three_and_their_segments(spark, operator):
    cfg, _, _ = operator
    rows = (_table(spark, cfg, "rfm").groupBy("r_score", "f_score", "m_score", "rfm_code",
                                              "segment").count().collect())
    assert {r.r_score for r in rows} == {0, 1, 2, 3}
    for r in rows:
        assert r.rfm_code == f"{r.r_score}{r.f_score}{r.m_score}"
        want = next(rule.name for rule in cfg.rfm.segments
                    if rule.matches(r.r_score, r.f_score, r.m_score))
        assert r.segment == want, r
    assert {r.segment for r in rows} >= {"Important value", "General win-back"}


def test_arpu_classes_follow_the_cut_points_and_the_planted_groups(spark, operator):
    cfg, _, _ = operator
    tiers = _table(spark, cfg, "tiers").select("account_id", "arpu_class")
    arpu = _table(spark, cfg, "features").select("account_id", "arpu_3m")
    accounts = spark.read.parquet(str(Path(cfg.inputs.root) / "accounts")).select(
        "account_id", "planted_group")
    joined = tiers.join(arpu, "account_id").join(accounts, "account_id")
    expected = (F.when(F.col("arpu_3m").isNull(), None)
                .when(F.col("arpu_3m") >= 150, "high").when(F.col("arpu_3m") >= 50, "medium")
                .otherwise("low"))
    assert joined.where(~F.col("arpu_class").eqNullSafe(expected)).count() == 0
    # the generator plants ARPU around 250 / 90 / 30: most open subscribers of a group land
    # in its class
    share = {r.planted_group: r.hit for r in joined.where(F.col("arpu_class").isNotNull())
             .groupBy("planted_group")
             .agg(F.avg((F.col("arpu_class") == F.col("planted_group")).cast("double"))
                  .alias("hit")).collect()}
    assert all(hit >= 0.6 for hit in share.values()), share


def test_risk_customers_hold_their_reasons_and_get_the_retention_campaign(spark, operator):
    cfg, _, _ = operator
    tiers = _table(spark, cfg, "tiers")
    scores = _table(spark, cfg, "value_scores").select(
        "account_id", "overdue_amount", "bad_debt", "payment_method")
    t = tiers.join(scores, "account_id")
    reasons = F.coalesce(F.col("risk_reasons"), F.lit(""))
    # every listed reason holds
    assert t.where(reasons.contains("arrears") & ~(F.col("overdue_amount") > 0)).count() == 0
    assert t.where(reasons.contains("bad_debt") & ~F.col("bad_debt")).count() == 0
    assert t.where(reasons.contains("churn_prone_payment")
                   & ~F.col("payment_method").isin("cash", "voucher")).count() == 0
    # and every reason that holds is listed
    assert t.where((F.col("overdue_amount") > 0) & ~reasons.contains("arrears")).count() == 0
    assert t.where(F.col("payment_method").isin("cash", "voucher")
                   & ~reasons.contains("churn_prone_payment")).count() == 0
    risky = t.where(F.col("risk_customer"))
    assert risky.count() > 0
    assert risky.where((F.col("value_level") != "high") | F.col("risk_reasons").isNull()
                       | (F.col("value_risk_quadrant") != "high_value_high_risk")).count() == 0
    assert t.where(~F.col("risk_customer") & (F.col("value_level") == "high")
                   & F.col("risk_reasons").isNotNull()).count() == 0
    retention = _table(spark, cfg, "campaign_targets").where(F.col("campaign") == "retention")
    assert sorted(r.account_id for r in retention.collect()) == \
        sorted(r.account_id for r in risky.collect())
    one = retention.join(risky.select("account_id", "risk_reasons"), "account_id").first()
    assert f"risk_reasons={one.risk_reasons})" in one.reason


def test_value_by_service_group_adds_up(spark, operator):
    cfg, _, _ = operator
    groups = list(cfg.value.product_groups)
    assert groups == ["calls", "data", "value_added", "devices"]
    v = _table(spark, cfg, "value_scores")
    split = sum((F.coalesce(F.col(f"future_value_{g}"), F.lit(0.0)) for g in groups),
                F.lit(0.0))
    assert v.where(F.col("future_value_calls").isNotNull()
                   & (F.abs(split - F.col("future_value")) > 1e-6 * (1 + F.abs("future_value")))
                   ).count() == 0
    classes = {r[0] for r in v.select("elasticity_class_data").distinct().collect()}
    assert classes <= {"elastic", "unit", "inelastic", "undefined"}
    metrics = {(r.model, r.metric): r.value for r in _table(spark, cfg, "model_metrics")
               .where(F.col("scope") == "all").collect()}
    assert metrics[("clv", "usable")] == 1.0          # converges with clv.penalizer 0.001


def test_the_report_has_the_telecom_sections(operator):
    _, _, report = operator
    page = report.read_text(encoding="utf-8")
    for text in ("ARPU classes", "Risk customers", "流失风险", "R score (rows, 3 = most recent)"):
        assert text in page, text


def test_the_cards_form_a_pyramid(spark, operator):
    """Each card holds fewer subscribers than the card below, platinum at most 5 %, and the
    money per subscriber falls from card to card (docs/model.md, "Tier shape")."""
    cfg, _, _ = operator
    rows = {r.tier: r for r in _table(spark, cfg, "tiers").groupBy("tier").agg(
        F.count(F.lit(1)).alias("n"), F.avg("contribution_money").alias("mean")).collect()}
    order = [t.name for t in cfg.tiers.tiers]
    counts = [rows[t].n if t in rows else 0 for t in order]
    assert all(a < b for a, b in itertools.pairwise(counts)), counts
    assert 0 < counts[0] <= 0.05 * sum(counts), counts
    means = [rows[t].mean for t in order]
    assert all(a > b for a, b in itertools.pairwise(means)), means

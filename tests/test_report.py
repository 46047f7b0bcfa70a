"""Run log, HTML report and stage progress lines.

The end-to-end tests use the shared warehouse of conftest.py (``e2e_runs``): two consecutive
snapshots, 2024-11 and 2024-12, of a small generated bank. Expected values are computed
here with plain Spark joins and counts, independently of cvm_spark.serve.report.
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from banks import KeepOpen
from pyspark.sql import functions as F

from cvm_spark import __version__
from cvm_spark.pipeline.run_log import CodeVersion, detect_code_version, write_run_log
from cvm_spark.pipeline.runner import _stage
from cvm_spark.pipeline.summary import RunSummary
from cvm_spark.serve.report import render_html, write_report
from cvm_spark.serve.report_data import (
    GONE_ACCOUNT,
    NEW_ACCOUNT,
    ReportData,
    ReportError,
    collect_report_data,
)
from cvm_spark.storage.delta import table_path

CURRENT, PREVIOUS = "2024-12", "2024-11"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
CELL = re.compile(r'data-from="([^"]*)" data-to="([^"]*)">([\d,]+)<')


@pytest.fixture(scope="module")
def two_snapshots(e2e_runs):
    """Both snapshots run (each at most once per session unless a test re-runs one)."""
    e2e_runs.latest(CURRENT)
    e2e_runs.latest(PREVIOUS)
    return e2e_runs


@pytest.fixture(scope="module")
def report_html(spark, two_snapshots, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    path = write_report(spark, two_snapshots.cfg, out)
    assert path == out
    return out.read_text(encoding="utf-8")


def _tiers(spark, cfg, month: str):
    return (spark.read.format("delta").load(table_path(cfg.output, "tiers"))
            .where(F.col("snapshot_month") == F.lit(f"{month}-01").cast("date")))


def _run_log(spark, cfg, month: str):
    return (spark.read.format("delta").load(table_path(cfg.output, "run_log"))
            .where(F.col("snapshot_month") == F.lit(f"{month}-01").cast("date")))


# ------------------------------------------------------------------------------------------
# run_log on the shared warehouse
# ------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("month", [CURRENT, PREVIOUS])
def test_run_log_has_one_entry_per_run_with_the_summary_counts(spark, two_snapshots, month):
    cfg = two_snapshots.cfg
    runs = two_snapshots.runs[month]          # every run of this month so far, in order
    log_rows = _run_log(spark, cfg, month).collect()
    assert sorted({r.run_seq for r in log_rows}) == list(range(1, len(runs) + 1))
    for seq, summary in enumerate(runs, start=1):
        rows = [r for r in log_rows if r.run_seq == seq]
        assert len(rows) == summary.rows_written["run_log"]
        assert {r.run_id for r in rows} == {summary.run_id}
        assert {r.config_fingerprint for r in rows} == {cfg.with_snapshot(month).fingerprint()}
        assert {(r.code_version, r.git_commit) for r in rows} == \
            {(__version__, two_snapshots.CODE_COMMIT)}
        assert len({r.run_started_at for r in rows}) == 1
        by_kind = {(r.item_kind, r.item_name): r for r in rows}
        inputs = {n: (r.rows_in, r.rows_quarantined, r.rows_out, r.stage)
                  for (k, n), r in by_kind.items() if k == "input"}
        assert inputs == {
            name: (read, sum(summary.rows_quarantined[name].values()),
                   read - sum(summary.rows_quarantined[name].values()), "validate")
            for name, read in summary.rows_read.items()}
        outputs = {n: r.rows_out for (k, n), r in by_kind.items() if k == "output"}
        assert outputs == {t: n for t, n in summary.rows_written.items() if t != "run_log"}
        assert by_kind[("output", "tiers")].stage == "write_tiers"
        assert by_kind[("output", "features")].stage == "features"
        stages = {n: r.stage_seconds for (k, n), r in by_kind.items() if k == "stage"}
        assert stages == pytest.approx(summary.stage_seconds)
    # the start time is stored as the instant given (read back as UTC epoch seconds)
    epochs = {r.seq: r.t for r in _run_log(spark, cfg, month).groupBy(
        F.col("run_seq").alias("seq")).agg(F.max(F.unix_timestamp("run_started_at"))
                                          .alias("t")).collect()}
    assert epochs == {i + 1: int(s.timestamp())
                      for i, s in enumerate(two_snapshots.started[month])}


@pytest.mark.e2e
def test_run_log_is_registered_with_comments(spark, two_snapshots):
    db = two_snapshots.cfg.output.database
    comments = {r.col_name: r.comment for r in spark.sql(f"describe table {db}.run_log")
                .collect() if r.col_name and not r.col_name.startswith("#")}
    assert {"run_seq", "rows_in", "rows_quarantined", "rows_out", "stage_seconds",
            "config_fingerprint", "git_commit"} <= set(comments)
    assert all(comments.values())


# ------------------------------------------------------------------------------------------
# run_log history (small, no pipeline run)
# ------------------------------------------------------------------------------------------


def _fake_summary(run_id: str, month: str) -> RunSummary:
    return RunSummary(run_id=run_id, snapshot_month=month,
                      rows_read={"accounts": 10}, rows_quarantined={"accounts": {"null_key": 2}},
                      rows_written={"features": 8}, stage_seconds={"validate": 1.5},
                      table_stages={"input:accounts": "validate", "output:features": "x"})


def test_rerun_appends_to_the_run_log_and_keeps_other_snapshots(spark, base_config, tmp_path):
    output = replace(base_config.output, warehouse=str(tmp_path / "wh"), database="cvm_rl")
    dec = replace(base_config, output=output).with_snapshot("2024-12")
    nov = dec.with_snapshot("2024-11")
    t0 = datetime(2025, 1, 1, 8, 0, tzinfo=timezone.utc)
    assert write_run_log(spark, dec, _fake_summary("r1", "2024-12"), started_at=t0) == 3
    write_run_log(spark, nov, _fake_summary("n1", "2024-11"))
    write_run_log(spark, dec, _fake_summary("r2", "2024-12"),
                  code=CodeVersion("9.9", "abc"), started_at=t0)
    table = spark.read.format("delta").load(table_path(output, "run_log"))
    got = sorted((r.snapshot_month.isoformat(), r.run_seq, r.run_id, r.code_version,
                  r.git_commit, r.item_kind, r.item_name, r.stage, r.rows_in,
                  r.rows_quarantined, r.rows_out, r.stage_seconds) for r in table.collect())
    expected = []
    for month, seq, run_id, version, commit in (("2024-11-01", 1, "n1", __version__, None),
                                                ("2024-12-01", 1, "r1", __version__, None),
                                                ("2024-12-01", 2, "r2", "9.9", "abc")):
        head = (month, seq, run_id, version, commit)
        expected += [(*head, "input", "accounts", "validate", 10, 2, 8, None),
                     (*head, "output", "features", "x", None, None, 8, None),
                     (*head, "stage", "validate", "validate", None, None, None, 1.5)]
    assert got == sorted(expected)
    assert table.where(F.col("run_started_at").isNotNull()).count() == 6


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_report_renders_with_embedded_images(report_html):
    for section in ("Tier distribution", "Lifecycle funnel", "RFM heat map",
                    "Future-value clusters", "Future-value back-test (out of time)",
                    "Future-value in-time hold-out", "Tier migration",
                    'id="run-inputs"', 'id="run-stages"', 'id="tier-migration"'):
        assert section in report_html, section
    images = IMG.findall(report_html)
    assert len(images) == 7  # tiers, funnel, RFM, centroids, out-of-time, hold-out, migration
    for png in images:
        assert base64.b64decode(png).startswith(PNG_MAGIC)
    # self-contained: no external resources
    assert not re.search(r'(src|href)="(?!data:)', report_html)


@pytest.mark.e2e
def test_migration_matrix_matches_a_spark_count(spark, two_snapshots, report_html):
    cfg = two_snapshots.cfg
    prev = _tiers(spark, cfg, PREVIOUS).select("account_id", F.col("tier").alias("p"))
    cur = _tiers(spark, cfg, CURRENT).select("account_id", F.col("tier").alias("c"))
    expected = {(r.p, r.c): r["count"] for r in
                prev.join(cur, on="account_id", how="inner").groupBy("p", "c").count().collect()}
    for r in prev.join(cur, on="account_id", how="left_anti").groupBy("p").count().collect():
        expected[(r.p, GONE_ACCOUNT)] = r["count"]
    for r in cur.join(prev, on="account_id", how="left_anti").groupBy("c").count().collect():
        expected[(NEW_ACCOUNT, r.c)] = r["count"]
    cells = {(f, t): int(n.replace(",", "")) for f, t, n in CELL.findall(report_html)}
    shown = {k: v for k, v in cells.items() if v}
    assert shown == expected
    assert sum(cells.values()) == prev.join(cur, on="account_id", how="full").count()
    # both snapshots exist, so some accounts were scored in both
    assert sum(n for (f, t), n in expected.items()
               if NEW_ACCOUNT not in (f, t) and GONE_ACCOUNT not in (f, t)) > 300


@pytest.mark.e2e
def test_report_tables_match_the_tiers_and_run_log(spark, two_snapshots, report_html):
    cfg = two_snapshots.cfg
    tiers = _tiers(spark, cfg, CURRENT)
    for r in tiers.groupBy("tier").count().collect():
        assert re.search(rf"<td class=\"l\">{r.tier}</td><td class=\"\">{r['count']:,}</td>",
                         report_html), r.tier
    latest = two_snapshots.runs[CURRENT][-1]
    assert f"{latest.rows_read['transactions']:,}" in report_html
    runs_logged = len(two_snapshots.runs[CURRENT])
    assert re.search(rf"runs logged for the snapshot</td><td class=\"l\">{runs_logged}<",
                     report_html)
    # ABC classes: accounts and money per class, as a Spark aggregate of the tiers counts them
    money = {r.abc_class: (r.n, r.m) for r in tiers.groupBy("abc_class").agg(
        F.count(F.lit(1)).alias("n"), F.sum("contribution_money").alias("m")).collect()}
    assert set(money) == {"A", "B", "C"}
    for cls, (n, m) in money.items():
        assert re.search(rf"<td class=\"l\">{cls}</td><td class=\"\">{n:,}</td><td "
                         rf"class=\"\">[0-9.]+%</td><td class=\"\">{m:,.0f}</td>", report_html), cls
    # class A: fewer accounts than C, more money
    assert money["A"][0] < money["C"][0] and money["A"][1] > money["C"][1]
    # acquisition KPIs: the overall row as kpi_summary has it
    kpis = {r.kpi: r for r in spark.read.format("delta")
            .load(table_path(cfg.output, "kpi_summary"))
            .where((F.col("snapshot_month") == F.lit(f"{CURRENT}-01").cast("date"))
                   & (F.col("dimension") == "all")).collect()}
    assert kpis["accounts"].value == tiers.count() and not kpis["cac"].small_group
    assert re.search(rf"<td class=\"l\">all</td><td class=\"l\">all</td><td class=\"\">"
                     rf"{kpis['accounts'].value:,.0f}</td><td class=\"\">"
                     rf"{kpis['cac'].value:,.0f}</td><td class=\"\">{kpis['clv'].value:,.0f}"
                     rf"</td>", report_html)
    # satisfaction from the generated surveys: the overall row as kpi_summary has it
    assert kpis["responses"].value > 0 and -100 <= kpis["nps"].value <= 100
    assert re.search(rf"<td class=\"l\">all</td><td class=\"l\">all</td><td class=\"\">"
                     rf"{kpis['responses'].value:,.0f}</td><td class=\"\">"
                     rf"{kpis['csat'].value:,.2f}\*?</td><td class=\"\">"
                     rf"{kpis['nps'].value:,.2f}\*?</td>", report_html)


@pytest.mark.e2e
def test_report_shows_no_account_ids(spark, two_snapshots, report_html):
    text = IMG.sub("", report_html)           # base64 could contain anything
    ids = {r.account_id for r in _tiers(spark, two_snapshots.cfg, CURRENT)
           .select("account_id").collect()}   # a test-side check on 400 rows
    assert ids and not [i for i in ids if i in text]
    assert not re.search(r"\bA\d{5,}\b", text)
    for attribute in ("region", "customer_type", "acquisition_channel", "open_date"):
        assert attribute not in text


@pytest.mark.e2e
def test_first_snapshot_has_no_migration_and_missing_snapshot_is_an_error(spark,
                                                                          two_snapshots):
    cfg = two_snapshots.cfg
    first = collect_report_data(spark, cfg, date(2024, 11, 1))
    assert first.previous is None and first.migration == []
    assert sum(n for _, n in first.tiers) == two_snapshots.runs[PREVIOUS][-1].rows_written[
        "tiers"]
    with pytest.raises(ReportError, match="2023-01-01"):
        collect_report_data(spark, cfg, date(2023, 1, 1))


def test_render_without_run_log_metrics_or_previous_snapshot_is_stable():
    data = ReportData(snapshot=date(2024, 12, 1), tiers=[("gold", 2), ("copper", 5)],
                      lifecycle=[("new", 3), ("stable", 4)], tier_order=["gold", "copper"],
                      rfm=[(1, 1, 4, 10.0), (2, 2, 3, None)])
    page = render_html(data)
    assert page == render_html(data)           # same aggregates, same bytes (PNG metadata off)
    assert "No run_log rows" in page and "no migration to show" in page
    assert "No future-value clusters" in page and "No future-value metrics" in page
    assert len(IMG.findall(page)) == 3          # tiers, funnel, RFM
    data.previous = date(2024, 11, 1)
    data.migration = [("gold", "gold", 1), ("copper", "gold", 1), ("copper", "copper", 4),
                      (NEW_ACCOUNT, "copper", 1), ("gold", GONE_ACCOUNT, 2)]
    page = render_html(data)
    assert {(f, t): int(n) for f, t, n in CELL.findall(page) if n != "0"} == \
        {(f, t): n for f, t, n in data.migration}
    assert "5 accounts kept their tier, 1 moved up, 0 moved down" in page
    assert "<td>stable</td><td>稳定</td>" in re.sub(r' class="[a-z]*"', "", page)
    assert 'id="risk"' not in page and 'id="arpu"' not in page   # not configured: no section
    data.arpu = [("high", 2), ("low", 5)]
    data.risk = [("arrears", 3, 1), ("falling_arpu", 2, 2)]
    page = render_html(data)
    assert 'id="arpu"' in page and 'id="risk"' in page
    assert "<td>arrears</td><td>3</td><td>1</td>" in re.sub(r' class="[a-z]*"', "", page)
    # the tier table: accounts and money, each with its share, and money per account
    data.tier_money = {"gold": 600.0, "copper": 400.0}
    plain = re.sub(r' class="[a-z]*"', "", render_html(data))
    assert "<td>gold</td><td>2</td><td>28.6%</td><td>600</td><td>60.0%</td><td>300</td>" in plain
    assert "<td>copper</td><td>5</td><td>71.4%</td><td>400</td><td>40.0%</td><td>80</td>" in plain


@pytest.mark.e2e
def test_cli_report(spark, two_snapshots, tmp_path, monkeypatch, capsys):
    from cvm_spark import cli

    monkeypatch.setattr(cli, "_session", lambda *a, **k: KeepOpen(spark))
    out = tmp_path / "r.html"
    common = ["--config", str(Path(__file__).parents[1] / "conf" / "cvm.yaml"),
              "--set", f"output.warehouse={two_snapshots.cfg.output.warehouse}",
              "--set", f"output.database={two_snapshots.cfg.output.database}"]
    assert cli.main(["report", *common, "--snapshot", CURRENT, "--out", str(out)]) == 0
    assert "Tier migration" in out.read_text(encoding="utf-8")
    assert cli.main(["report", *common, "--snapshot", "2023-01",
                     "--out", str(tmp_path / "none.html")]) == 4
    assert "report error" in capsys.readouterr().err
    assert not (tmp_path / "none.html").exists()


def test_cli_report_help(capsys):
    from cvm_spark import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "--snapshot" in text and "--config" in text


# ------------------------------------------------------------------------------------------
# Progress lines and code version
# ------------------------------------------------------------------------------------------


def test_stage_progress_line_has_counts_and_time(spark, caplog):
    summary = RunSummary(run_id="r", snapshot_month="2024-12")
    with caplog.at_level(logging.INFO, logger="cvm_spark.pipeline.runner"):
        with _stage(spark, summary, "validate"):
            summary.rows_read["accounts"] = 1200
            summary.rows_quarantined["accounts"] = {"null_key": 3, "accepted": 0}
        with _stage(spark, summary, "rfm"):
            summary.rows_written["rfm"] = 1197
    done = [r.getMessage() for r in caplog.records if ": done in " in r.getMessage()]
    assert re.fullmatch(r"stage validate: done in \d+\.\ds \(\d+\.\ds of stages so far\); "
                        r"read accounts 1,200 \(3 quarantined\)", done[0])
    assert re.fullmatch(r"stage rfm: done in \d+\.\ds \(\d+\.\ds of stages so far\); "
                        r"wrote rfm 1,197", done[1])
    assert summary.table_stages == {"input:accounts": "validate", "output:rfm": "rfm"}
    assert set(summary.stage_seconds) == {"validate", "rfm"}


def test_code_version_without_git_or_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("CVM_GIT_COMMIT", raising=False)
    (tmp_path / "__init__.py").write_text("")
    assert detect_code_version(tmp_path) == CodeVersion(__version__, None)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))      # no git binary at all
    assert detect_code_version() == CodeVersion(__version__, None)
    assert detect_code_version(tmp_path / "missing") == CodeVersion(__version__, None)
    monkeypatch.setenv("CVM_GIT_COMMIT", "feedbeef")
    assert detect_code_version(tmp_path) == CodeVersion(__version__, "feedbeef")


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_code_version_in_a_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("CVM_GIT_COMMIT", raising=False)
    pkg = tmp_path / "cvm_spark"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t",
                               "-c", "user.email=t@t", *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    assert detect_code_version(pkg).git_commit is None       # not tracked yet
    git("add", ".")
    git("commit", "-qm", "c")
    head = git("rev-parse", "HEAD")
    assert detect_code_version(pkg) == CodeVersion(__version__, head)
    (pkg / "__init__.py").write_text("x = 2\n")
    assert detect_code_version(pkg).git_commit == f"{head}-dirty"


def test_printed_summary_shows_the_back_test_as_a_table():
    """The run's printed summary turns the back-test rows into one line per method (MSE
    skill in % per origin and the mean) and says which method is in use and why; the
    per-cluster rows stay in model_metrics only."""
    from cvm_spark.pipeline.summary import RunSummary

    bt = "future_value_backtest"
    metrics = [
        (bt, "2024-06/naive/overall", "mse_skill", 0.0),
        (bt, "2024-06/global_regression/overall", "mse_skill", 0.132),
        (bt, "2024-09/global_regression/overall", "mse_skill", 0.053),
        (bt, "2024-06/cluster_regression/overall", "mse_skill", 0.145),
        (bt, "2024-09/cluster_regression/overall", "mse_skill", float("nan")),
        (bt, "2024-09/cluster_regression/cluster:high_value", "mse_skill", 0.5),
        (bt, "mean/cluster_regression/overall", "mse_skill", 0.145),
        (bt, "mean/global_regression/overall", "mse_skill", 0.0925),
        (bt, "2024-06/global_regression/overall", "rmse", 150.0),
        (bt, "chosen:cluster_regression", "mean_mse_skill", 0.145),
        ("future_value", "method:cluster_regression", "in_use", 1.0),
        ("future_value", "overall", "rmse", 128.7),
    ]
    text = RunSummary("r", "2024-12", metrics=metrics).render()
    table = text[text.index("future value, out-of-time back-test"):].splitlines()
    assert table[1].split() == ["method", "2024-06", "2024-09", "mean"]
    assert table[2].split() == ["cluster_regression", "14.5", "n/a", "14.5"]
    assert table[3].split() == ["global_regression", "13.2", "5.3", "9.2"]
    assert table[4] == "  in use: cluster_regression (auto: best mean skill)"
    assert "future_value overall" in text and "128.7" in text
    assert "cluster:high_value" not in text and "150" not in text

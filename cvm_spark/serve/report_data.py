"""What the run report shows, read from the Delta tables of a snapshot (and the one before
it): :class:`ReportData`, gathered by :func:`collect_report_data` with small aggregates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_spark.config import CvmConfig, OutputConfig
from cvm_spark.schemas.inputs import SNAPSHOT_MONTH
from cvm_spark.schemas.outputs import LIFECYCLE_STAGES
from cvm_spark.storage.delta import read_table, table_path
from cvm_spark.storage.privacy import account_column

# Migration matrix labels for accounts present in only one of the two snapshots.
NEW_ACCOUNT = "(not scored before)"
GONE_ACCOUNT = "(not scored now)"
FV_MODEL = "future_value"
FV_BACKTEST = "future_value_backtest"
OOT_METRICS = ("accounts", "rmse", "mae", "mse_skill", "bias")
BACKTEST_METRICS = ("holdout_rows", "rmse", "baseline_rmse", "mae", "baseline_mae", "r2",
                    "baseline_r2")


class ReportError(RuntimeError):
    """The warehouse has nothing to report for the snapshot."""


@dataclass
class ReportData:
    """The small aggregates a report is drawn from (all collected from Spark aggregates)."""

    snapshot: date
    previous: date | None = None
    run: dict[str, Any] | None = None            # run-level fields of the latest run
    run_items: list[dict[str, Any]] = field(default_factory=list)  # its run_log rows
    runs_logged: int = 0
    tiers: list[tuple[str, int]] = field(default_factory=list)
    # tier -> contribution money (currency; absent in a table written before it existed)
    tier_money: dict[str, float] = field(default_factory=dict)
    lifecycle: list[tuple[str, int]] = field(default_factory=list)
    rfm: list[tuple[int, int, int, float | None]] = field(default_factory=list)
    centroids: dict[str, dict[str, float]] = field(default_factory=dict)
    backtest: dict[str, dict[str, float]] = field(default_factory=dict)
    # out-of-time back-test: scope ``<origin>/<method>/<overall|cluster:x>`` (and ``mean/..``,
    # ``chosen:<method>``) -> metric -> value
    oot: dict[str, dict[str, float]] = field(default_factory=dict)
    migration: list[tuple[str, str, int]] = field(default_factory=list)
    tier_order: list[str] = field(default_factory=list)
    # ABC class -> (accounts, contribution money; None in a table written before it existed)
    abc: list[tuple[str, int, float | None]] = field(default_factory=list)
    # ARPU class -> accounts; risk reason -> (accounts with it, risk customers among them)
    arpu: list[tuple[str, int]] = field(default_factory=list)
    risk: list[tuple[str, int, int]] = field(default_factory=list)
    # kpi_summary rows without a period: (dimension, group, kpi) -> (value, base, small)
    kpis: dict[tuple[str, str, str], tuple[float | None, int, bool]] = field(
        default_factory=dict)


def _exists(spark: SparkSession, output: OutputConfig, table: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, table_path(output, table))


def _snapshot_rows(spark: SparkSession, output: OutputConfig, table: str,
                   snapshot: date) -> DataFrame | None:
    if not _exists(spark, output, table):
        return None
    return read_table(spark, output, table).where(F.col(SNAPSHOT_MONTH) == F.lit(snapshot))


def previous_snapshot(spark: SparkSession, output: OutputConfig, snapshot: date) -> date | None:
    """The latest snapshot before ``snapshot`` that has tiers, or None."""
    if not _exists(spark, output, "tiers"):
        return None
    return (read_table(spark, output, "tiers")
            .where(F.col(SNAPSHOT_MONTH) < F.lit(snapshot))
            .agg(F.max(SNAPSHOT_MONTH)).first()[0])


def tier_migration(previous: DataFrame, current: DataFrame) -> DataFrame:
    """Accounts per (previous tier, current tier) between two snapshots of ``tiers``.

    A full outer join on ``account_id`` (``account_key`` in a pseudonymised warehouse):
    accounts scored in only one snapshot are counted under :data:`NEW_ACCOUNT` (previous
    side) or :data:`GONE_ACCOUNT` (current side).

    Returns:
        ``prev_tier``, ``tier``, ``accounts`` (one row per pair that occurs).
    """
    account = account_column(current)
    prev = previous.select(account, F.col("tier").alias("prev_tier"))
    cur = current.select(account, "tier")
    joined = prev.join(cur, on=account, how="full")
    return (joined.select(F.coalesce("prev_tier", F.lit(NEW_ACCOUNT)).alias("prev_tier"),
                          F.coalesce("tier", F.lit(GONE_ACCOUNT)).alias("tier"))
            .groupBy("prev_tier", "tier").agg(F.count(F.lit(1)).alias("accounts")))


def abc_classes(tiers: DataFrame) -> list[tuple[str, int, float | None]]:
    """(ABC class, accounts, contribution money) of the snapshot's tiers, A first (one
    aggregate, three rows)."""
    money = (F.sum("contribution_money") if "contribution_money" in tiers.columns
             else F.lit(None).cast("double"))
    return sorted((r["abc_class"], int(r["n"]), r["money"]) for r in tiers.groupBy("abc_class")
                  .agg(F.count(F.lit(1)).alias("n"), money.alias("money")).collect())


def arpu_and_risk(tiers: DataFrame) -> tuple[list[tuple[str, int]], list[tuple[str, int, int]]]:
    """(ARPU class, accounts) and (risk reason, accounts, risk customers) of the snapshot's
    tiers (two aggregates of a few rows; empty for a table written before the columns)."""
    if "arpu_class" not in tiers.columns:
        return [], []
    arpu = sorted((r["arpu_class"], int(r["n"])) for r in tiers.where(
        F.col("arpu_class").isNotNull()).groupBy("arpu_class")
        .agg(F.count(F.lit(1)).alias("n")).collect())
    reasons = tiers.where(F.col("risk_reasons").isNotNull()).select(
        F.explode(F.split("risk_reasons", "; ")).alias("reason"), "risk_customer")
    risk = sorted((r["reason"], int(r["n"]), int(r["customers"])) for r in reasons
                  .groupBy("reason").agg(F.count(F.lit(1)).alias("n"),
                                         F.count_if("risk_customer").alias("customers"))
                  .collect())
    return arpu, risk


def _run_section(spark: SparkSession, output: OutputConfig, data: ReportData) -> None:
    runs = _snapshot_rows(spark, output, "run_log", data.snapshot)
    if runs is None:
        return
    seqs = runs.agg(F.max("run_seq").alias("last"),
                    F.countDistinct("run_seq").alias("n")).first()
    if seqs["last"] is None:
        return
    data.runs_logged = int(seqs["n"])
    # one run's rows: a few dozen (one per table and stage)
    # (the start time as epoch microseconds: collected timestamps would be in local time)
    items = [r.asDict() for r in runs.where(F.col("run_seq") == seqs["last"])
             .select(*[c for c in runs.columns if c not in (SNAPSHOT_MONTH, "run_started_at")],
                     F.unix_micros("run_started_at").alias("run_started_at")).collect()]
    head = ("run_id", "run_seq", "run_started_at", "config_fingerprint", "code_version",
            "git_commit")
    data.run = {k: items[0][k] for k in head}
    micros = data.run["run_started_at"]
    data.run["run_started_at"] = (None if micros is None else
                                  datetime.fromtimestamp(micros / 1e6, timezone.utc).isoformat())
    data.run_items = [{k: v for k, v in i.items() if k not in head} for i in items]


def _metrics(spark: SparkSession, output: OutputConfig, data: ReportData) -> None:
    metrics = _snapshot_rows(spark, output, "model_metrics", data.snapshot)
    if metrics is None:
        return
    for r in (metrics.where(F.col("model") == FV_BACKTEST)   # ~8 per origin, method, cluster
              .select("scope", "metric", "value").collect()):
        data.oot.setdefault(r["scope"], {})[r["metric"]] = r["value"]
    rows = (metrics.where(F.col("model") == FV_MODEL)
            .where(F.col("metric").startswith("centroid:")
                   | F.col("metric").isin("size", "mean_label", *BACKTEST_METRICS))
            .select("scope", "metric", "value").collect())   # ~10 per cluster
    for r in rows:
        scope, metric, value = r["scope"], r["metric"], r["value"]
        if scope.startswith("cluster:") and (metric.startswith("centroid:")
                                             or metric in ("size", "mean_label")):
            data.centroids.setdefault(scope.removeprefix("cluster:"), {})[metric] = value
        if metric in BACKTEST_METRICS:
            data.backtest.setdefault(scope.removeprefix("cluster:"), {})[metric] = value


def collect_report_data(spark: SparkSession, cfg: CvmConfig,
                        snapshot: date | None = None) -> ReportData:
    """Aggregate everything the report shows for ``snapshot`` (default ``cfg.snapshot``).

    Raises:
        ReportError: the warehouse has no tiers for the snapshot (the job has not run).
    """
    snapshot = snapshot or cfg.snapshot
    output = cfg.output
    tiers = _snapshot_rows(spark, output, "tiers", snapshot)
    # tiers x lifecycle stages: a few dozen rows, both distributions from one aggregate
    money = (F.sum("contribution_money") if tiers is not None
             and "contribution_money" in tiers.columns else F.lit(None).cast("double"))
    cells = [] if tiers is None else [
        (r["tier"], r["lifecycle_stage"], int(r["n"]), r["m"]) for r in
        tiers.groupBy("tier", "lifecycle_stage").agg(F.count(F.lit(1)).alias("n"),
                                                     money.alias("m")).collect()]
    if not cells:
        raise ReportError(f"no tiers for snapshot {snapshot.isoformat()} in "
                          f"{table_path(output, 'tiers')}; run `cvm run` for it first")
    assert tiers is not None
    data = ReportData(snapshot=snapshot)
    counts: dict[str, int] = {}
    stages: dict[str, int] = {}
    for tier, stage, n, m in cells:
        counts[tier] = counts.get(tier, 0) + n
        stages[stage] = stages.get(stage, 0) + n
        if m is not None:
            data.tier_money[tier] = data.tier_money.get(tier, 0.0) + m
    configured = [t.name for t in cfg.tiers.tiers]
    data.tier_order = configured + sorted(set(counts) - set(configured), key=str)
    data.tiers = [(t, counts[t]) for t in data.tier_order if t in counts]
    # funnel order of the lifecycle stages; unknown stages go last
    order = list(LIFECYCLE_STAGES) + sorted(set(stages) - set(LIFECYCLE_STAGES), key=str)
    data.lifecycle = [(s, stages.get(s, 0)) for s in order]   # known stages even when 0
    rfm = _snapshot_rows(spark, output, "rfm", snapshot)
    if rfm is not None:
        data.rfm = sorted(
            (int(r["r_score"]), int(r["f_score"]), int(r["n"]), r["mean_monetary"])
            for r in rfm.groupBy("r_score", "f_score").agg(
                F.count(F.lit(1)).alias("n"), F.avg("monetary").alias("mean_monetary"))
            .collect())
    data.abc = abc_classes(tiers)
    data.arpu, data.risk = arpu_and_risk(tiers)
    kpis = _snapshot_rows(spark, output, "kpi_summary", snapshot)
    if kpis is not None:   # a few dozen rows: channels and tiers x 5 KPIs
        data.kpis = {(r["dimension"], r["group_name"], r["kpi"]):
                     (r["value"], int(r["base"] or 0), bool(r["small_group"]))
                     for r in kpis.where(F.col("period_month").isNull()).collect()}
    _metrics(spark, output, data)
    _run_section(spark, output, data)
    data.previous = previous_snapshot(spark, output, snapshot)
    if data.previous is not None:
        prev = read_table(spark, output, "tiers").where(
            F.col(SNAPSHOT_MONTH) == F.lit(data.previous))
        data.migration = sorted(
            (r["prev_tier"], r["tier"], int(r["accounts"]))
            for r in tier_migration(prev, tiers).collect())   # at most (tiers + 1)^2 rows
    return data

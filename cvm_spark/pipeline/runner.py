"""The snapshot pipeline: (generate) -> validate -> features -> RFM -> Delta tables.

Everything that decides *what* to write runs before the first write: config validation
happens before Spark starts, input schema checks happen while the plan is built, and inputs
that cannot make the snapshot (a required table without accepted rows, or none in the
snapshot month) stop the run at the end of the validate stage. Row-level problems never stop
the run; they go to the quarantine table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_spark.common.months import months_between
from cvm_spark.common.session import sized_shuffles
from cvm_spark.config import MODELS_DIR, CvmConfig
from cvm_spark.contract.validate import check_snapshot_data, read_inputs, validate_inputs
from cvm_spark.features.rfm import fit_rfm, score_rfm
from cvm_spark.features.windows import BTYD_COLUMNS
from cvm_spark.pipeline.facts import build_account_facts, features_of
from cvm_spark.pipeline.profiling import tag_stage
from cvm_spark.pipeline.run_log import CodeVersion, write_run_log
from cvm_spark.pipeline.summary import RunSummary
from cvm_spark.storage.delta import register_tables, table_path, write_observed
from cvm_spark.storage.locking import snapshot_lock
from cvm_spark.storage.privacy import (
    PseudonymKey,
    check_warehouse,
    pseudonymise,
    redact_plans,
    run_key,
    table_properties,
)
from cvm_spark.storage.tables import check_output_schema
from cvm_spark.storage.workarea import WorkArea

log = logging.getLogger(__name__)

# model metrics shown in the printed summary (all of them are in the model_metrics table)
SUMMARY_METRICS = ("rmse", "baseline_rmse", "mae", "r2", "r", "alpha", "a", "b", "p", "q", "v",
                   "log_likelihood", "converged")
# written by the model steps, in this order
MODEL_TABLES = ("model_metrics", "value_scores", "tiers", "campaign_targets", "tier_summary")
# the tables written through _write (run_log has its own writer and no account data)
PIPELINE_TABLES = ("quarantine", "features", "rfm", *MODEL_TABLES)


@contextmanager
def _stage(spark: SparkSession, summary: RunSummary, name: str) -> Iterator[None]:
    """Time a stage, note which tables it read or wrote, log a progress line with counts.

    The Spark jobs of the stage are tagged with its name and the run id
    (:func:`cvm_spark.pipeline.profiling.tag_stage`), so an event log can be profiled per stage.
    """
    log.info("stage %s: start", name)
    start = time.monotonic()
    read, written = dict(summary.rows_read), dict(summary.rows_written)
    try:
        with tag_stage(spark, name, summary.run_id):
            yield
    except BaseException:
        log.error("stage %s: failed after %.1fs", name, time.monotonic() - start)
        raise
    summary.stage_seconds[name] = time.monotonic() - start
    log.info("stage %s: done in %.1fs (%.1fs of stages so far); %s", name,
             summary.stage_seconds[name], sum(summary.stage_seconds.values()),
             _stage_counts(summary, name, read, written))


def _stage_counts(summary: RunSummary, stage: str, read_before: dict[str, int],
                  written_before: dict[str, int]) -> str:
    """Row counts a stage added to the summary, as text; records the table -> stage map."""
    parts = []
    for name, n in summary.rows_read.items():
        if read_before.get(name) != n:
            summary.table_stages[f"input:{name}"] = stage
            bad = sum(summary.rows_quarantined.get(name, {}).values())
            parts.append(f"{name} {n:,} ({bad:,} quarantined)")
    read = "read " + ", ".join(parts) if parts else ""
    parts = []
    for name, n in summary.rows_written.items():
        if written_before.get(name) != n:
            summary.table_stages[f"output:{name}"] = stage
            parts.append(f"{name} {n:,}")
    wrote = "wrote " + ", ".join(parts) if parts else ""
    return "; ".join(p for p in (read, wrote) if p) or "no rows counted"


def default_run_id(cfg: CvmConfig) -> str:
    """A deterministic run id: snapshot month and config fingerprint."""
    return f"{cfg.snapshot_month}-{cfg.fingerprint()}"


def model_root(cfg: CvmConfig) -> str:
    """Where fitted models are saved: ``<warehouse>/_models`` (versioned by snapshot)."""
    return cfg.output.location(MODELS_DIR)


def run_snapshot(spark: SparkSession, cfg: CvmConfig, run_id: str | None = None,
                 generate: Callable[[SparkSession, CvmConfig], Any] | None = None,
                 retrain: bool = True,
                 on_stage: Callable[[str, RunSummary], Any] | None = None,
                 code_version: CodeVersion | None = None,
                 started_at: datetime | None = None, break_lock: bool = False,
                 pseudonym_key: PseudonymKey | None = None) -> RunSummary:
    """Run the pipeline for ``cfg.snapshot_month`` and write its Delta tables.

    The run holds the snapshot month's lock (:func:`cvm_spark.storage.locking.snapshot_lock`) from
    its start until its run_log rows are written, so two runs of one month never interleave
    their writes; runs of different months run side by side.

    Args:
        spark: the session (created by the caller).
        cfg: validated configuration.
        run_id: recorded in the quarantine table; defaults to :func:`default_run_id`.
        generate: called first, inside the lock, to write the inputs, timed as the
            ``generate`` stage: ``cvm run --generate`` passes
            :func:`cvm_generate.write_sample` (the runner never imports the generator).
        retrain: fit the future-value models; False reuses the ones saved for the snapshot.
        on_stage: called after each stage (used by tests to inject faults).
        code_version: recorded in run_log (the caller detects it: no git call in here).
        started_at: the run's start time, recorded in run_log as metadata (from the caller).
        break_lock: take over the month's lock even when its holder cannot be shown to be
            dead (``cvm run --break-lock``; only after making sure that run is not running).
        pseudonym_key: with ``cfg.privacy.pseudonymise``, the key (``cvm run`` reads it
            before Spark starts); read from the environment or key file when not given.

    Returns:
        A :class:`RunSummary`.

    Raises:
        SnapshotLockedError: another run of the month holds the lock; nothing was read or
            written.
        PseudonymKeyError: pseudonymisation is on and there is no usable key.
        WarehouseModeError: the warehouse was written in the other privacy mode or with
            another key (raised before anything is written).
    """
    key = run_key(cfg.privacy, pseudonym_key)
    run_id = run_id or default_run_id(cfg)
    with snapshot_lock(cfg.output, cfg.snapshot, run_id, spark=spark,
                       app_id=_application_id(spark), started_at=started_at,
                       break_lock=break_lock):
        return _run_locked(spark, cfg, run_id, generate, retrain, on_stage, code_version,
                           started_at, key)


def _application_id(spark: SparkSession) -> str | None:
    try:
        return spark.sparkContext.applicationId
    except AttributeError:  # Spark Connect has no SparkContext: the lock just omits the id
        return None


def _run_locked(spark: SparkSession, cfg: CvmConfig, run_id: str,
                generate: Callable[[SparkSession, CvmConfig], Any] | None,
                retrain: bool, on_stage: Callable[[str, RunSummary], Any] | None,
                code_version: CodeVersion | None, started_at: datetime | None,
                key: PseudonymKey | None) -> RunSummary:
    """The body of :func:`run_snapshot`, run while the snapshot's lock is held."""
    snapshot = cfg.snapshot
    summary = RunSummary(run_id=run_id, snapshot_month=snapshot.isoformat())

    def done(stage: str) -> None:
        if on_stage is not None:
            on_stage(stage, summary)

    if generate is not None:
        with _stage(spark, summary, "generate"):
            generate(spark, cfg)
        done("generate")

    register_tables(spark, cfg.output)
    check_warehouse(spark, cfg.output, PIPELINE_TABLES, key)
    if key is not None:
        redact_plans(spark)
    with ExitStack() as resources:
        _run_stages(spark, cfg, summary, resources, done, retrain, code_version, started_at,
                    key)
    return summary


def _run_stages(spark: SparkSession, cfg: CvmConfig, summary: RunSummary,
                resources: ExitStack, done: Callable[[str], None], retrain: bool,
                code_version: CodeVersion | None, started_at: datetime | None,
                key: PseudonymKey | None) -> None:
    """validate -> quarantine -> features -> RFM -> value model -> run_log, into ``summary``.

    Settings made for the run (the shuffle partitions sized from the inputs) are undone by
    ``resources`` when the caller leaves it.
    """
    snapshot, run_id, perf = cfg.snapshot, summary.run_id, cfg.performance
    with _stage(spark, summary, "validate"):
        raw = read_inputs(spark, cfg.inputs)
        resources.enter_context(sized_shuffles(
            spark, {name: (df, cfg.inputs.location(name)[1]) for name, df in raw.items()},
            perf.shuffle_partitions, perf.partition_mb))
        # the run's intermediate results: removed when the run ends (resources)
        work = resources.enter_context(WorkArea(spark, cfg.output, snapshot, run_id))
        validated = validate_inputs(raw, cfg, materialize=work.materialize)
        profile = validated.profile()
        # a snapshot the inputs cannot make stops here, before the first write
        check_snapshot_data(profile, snapshot)
        counts = profile.counts
        for name, per_reason in counts.items():
            summary.rows_read[name] = sum(per_reason.values())
            summary.rows_quarantined[name] = {r: n for r, n in per_reason.items()
                                              if r != "accepted"}
    done("validate")
    with _stage(spark, summary, "quarantine"):
        _write(summary, validated.quarantine(snapshot, run_id), "quarantine", cfg, key)
    done("quarantine")
    accepted = {name: validated.accepted(name) for name in validated.classified}
    first_month = profile.first_accepted.get("monthly_product") or snapshot
    k_data_start = months_between(snapshot, first_month)
    with _stage(spark, summary, "features"):
        # every per-account aggregate of the inputs in one pass per table, written once
        # to the run's work area: every later step is a projection of its files
        facts = work.materialize(build_account_facts(accepted, cfg, k_data_start), "facts")
        features = features_of(facts, cfg)
        _write(summary, features.drop(*BTYD_COLUMNS), "features", cfg, key)
    done("features")
    with _stage(spark, summary, "rfm"):
        rfm_cuts = fit_rfm(features, cfg.rfm)
        # segments counted while the table is written (no second pass)
        observed = _write(summary, score_rfm(features, cfg.rfm, rfm_cuts), "rfm", cfg, key,
                          observe=segment_observations(cfg))
        summary.segments = {name: int(n) for name, n in observed.items() if n}
    done("rfm")
    from cvm_spark.pipeline.scoring import run_value_model

    # each model step is a stage of its own (timed, logged, in run_log), then one stage
    # per table written
    outputs = run_value_model(spark, cfg, accepted, facts, rfm_cuts, run_id,
                              model_root=model_root(cfg), materialize=work.materialize,
                              accounts=summary.rows_written["features"],
                              k_data_start=k_data_start, retrain=retrain,
                              stage=lambda name: _stage(spark, summary, name))
    for table in MODEL_TABLES:
        with _stage(spark, summary, f"write_{table}"):
            observed = _write(summary, getattr(outputs, table), table, cfg, key,
                              observe=(tier_observations(cfg) if table == "tiers"
                                       else None))
            if table == "tiers":
                summary.tiers = {name: int(n) for name, n in observed.items() if n}
    with _stage(spark, summary, "model_summary"):
        # the model_metrics rows are a local table: no Spark job
        summary.metrics = [
            (r["model"], r["scope"], r["metric"], r["value"])
            for r in outputs.model_metrics.where(
                F.col("metric").isin(*SUMMARY_METRICS)).collect()]
    done("model")
    # last, so a logged run is one whose tables were all written; appended (history)
    summary.rows_written["run_log"] = write_run_log(spark, cfg, summary, code_version,
                                                    started_at)
    summary.tables["run_log"] = table_path(cfg.output, "run_log")


def segment_observations(cfg: CvmConfig) -> dict[str, Column]:
    """Rows per RFM segment, observed while the rfm table is written."""
    return {rule.name: F.count_if(F.col("segment") == F.lit(rule.name))
            for rule in cfg.rfm.segments}


def tier_observations(cfg: CvmConfig) -> dict[str, Column]:
    """Rows per tier, observed while the tiers table is written."""
    return {rule.name: F.count_if(F.col("tier") == F.lit(rule.name))
            for rule in cfg.tiers.tiers}


def _write(summary: RunSummary, df: DataFrame, table: str, cfg: CvmConfig,
           key: PseudonymKey | None, observe: dict[str, Column] | None = None
           ) -> dict[str, Any]:
    """Write one output table; with a key, pseudonymised here (the one place for all).

    Returns:
        The values of ``observe``, aggregated over the rows while they were written.
    """
    if table not in PIPELINE_TABLES:  # check_warehouse checks those before the first write
        raise ValueError(f"{table} is not in PIPELINE_TABLES")
    if key is not None:
        df = pseudonymise(df, key)
    check_output_schema(df, table, cfg)
    rows, observed = write_observed(df, table, cfg.output, cfg.snapshot,
                                    properties=table_properties(key), observe=observe)
    summary.rows_written[table] = rows
    summary.tables[table] = table_path(cfg.output, table)
    return observed

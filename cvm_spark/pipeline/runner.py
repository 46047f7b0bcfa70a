"""The snapshot pipeline: (generate) -> validate -> quarantine -> features -> RFM -> model
-> run log, as a declared graph of steps (:data:`STEPS`).

Each :class:`Step` names what it needs from earlier steps, what it hands on and the output
tables it writes; one runner (:func:`_run_steps`) times each step, writes every table
through :func:`_write` (pseudonymised there, checked against its declared schema, then the
one Delta writer) and records ``run_log`` after a whole run.

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
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_spark.common.months import month_end, months_between
from cvm_spark.common.session import application_id, sized_shuffles
from cvm_spark.config import MODELS_DIR, CvmConfig
from cvm_spark.contract.reading import read_inputs
from cvm_spark.contract.validate import check_snapshot_data, validate_inputs
from cvm_spark.features.rfm import fit_rfm, score_rfm, segment_counts
from cvm_spark.features.windows import BTYD_COLUMNS
from cvm_spark.pipeline.facts import build_account_facts, features_of
from cvm_spark.pipeline.profiling import tag_stage
from cvm_spark.pipeline.progress import live_progress
from cvm_spark.pipeline.run_log import CodeVersion, write_run_log
from cvm_spark.pipeline.scoring import ModelOutputs, run_value_model
from cvm_spark.pipeline.summary import STEP_NAMES, RunSummary, data_window_text
from cvm_spark.segments.kpis import overall_observations
from cvm_spark.segments.tiers import tier_counts
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
                   "log_likelihood", "converged", "mse_skill", "mean_mse_skill", "in_use")
# written by the model steps, in this order
MODEL_TABLES = ("model_metrics", "value_scores", "tiers", "campaign_targets", "tier_summary",
                "kpi_summary")
# the tables written through _write (run_log has its own writer and no account data)
PIPELINE_TABLES = ("quarantine", "features", "rfm", *MODEL_TABLES)


@contextmanager
def _stage(spark: SparkSession, summary: RunSummary, name: str) -> Iterator[None]:
    """Time a stage, note which tables it read or wrote, log a progress line with counts
    (and, on a terminal, redraw a live line of its tasks: :mod:`cvm_spark.pipeline.progress`).

    The Spark jobs of the stage are tagged with its name and the run id
    (:func:`cvm_spark.pipeline.profiling.tag_stage`), so an event log can be profiled per stage.
    """
    log.info("stage %s: start", name)
    start = time.monotonic()
    read, written = dict(summary.rows_read), dict(summary.rows_written)
    try:
        with tag_stage(spark, name, summary.run_id), live_progress(spark, name):
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
                 pseudonym_key: PseudonymKey | None = None, until: str = "model",
                 score_models: Callable[..., ModelOutputs] = run_value_model
                 ) -> RunSummary:
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
        until: the last step to run (:data:`STEP_NAMES`; ``cvm run --until``); a run that
            stops before the last step writes its steps' tables but no run_log rows.
        score_models: the model step's function, called with the arguments of
            :func:`cvm_spark.pipeline.scoring.run_value_model` (the default); tests pass a
            cheap stand-in that returns frames of the model tables' shape.

    Returns:
        A :class:`RunSummary`.

    Raises:
        SnapshotLockedError: another run of the month holds the lock; nothing was read or
            written.
        PseudonymKeyError: pseudonymisation is on and there is no usable key.
        WarehouseModeError: the warehouse was written in the other privacy mode or with
            another key (raised before anything is written).
    """
    if until not in STEP_NAMES:
        raise ValueError(f"until must be one of {STEP_NAMES}, got {until!r}")
    key = run_key(cfg.privacy, pseudonym_key)
    run_id = run_id or default_run_id(cfg)
    with snapshot_lock(cfg.output, cfg.snapshot, run_id, spark=spark,
                       app_id=application_id(spark), started_at=started_at,
                       break_lock=break_lock):
        return _run_locked(spark, cfg, run_id, generate, retrain, on_stage, code_version,
                           started_at, key, until, score_models)


def _run_locked(spark: SparkSession, cfg: CvmConfig, run_id: str,
                generate: Callable[[SparkSession, CvmConfig], Any] | None,
                retrain: bool, on_stage: Callable[[str, RunSummary], Any] | None,
                code_version: CodeVersion | None, started_at: datetime | None,
                key: PseudonymKey | None, until: str,
                score_models: Callable[..., ModelOutputs] = run_value_model) -> RunSummary:
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
        run = Run(spark, cfg, summary, key, retrain, resources, score_models)
        _run_steps(run, done, until, code_version, started_at)
    return summary


@dataclass
class Run:
    """What the steps of one run share: the session, the config, the summary being filled in,
    the key, the run's resources (undone when it ends) and the results the steps hand on,
    by name (:attr:`Step.makes`)."""

    spark: SparkSession
    cfg: CvmConfig
    summary: RunSummary
    key: PseudonymKey | None
    retrain: bool
    resources: ExitStack
    score_models: Callable[..., ModelOutputs] = run_value_model
    results: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> AbstractContextManager[None]:
        """Time a stage of the run (:func:`_stage`)."""
        return _stage(self.spark, self.summary, name)

    def write(self, df: DataFrame, table: str, observe: dict[str, Column] | None = None
              ) -> dict[str, Any]:
        """Write an output table (:func:`_write`)."""
        return _write(self.summary, df, table, self.cfg, self.key, observe)


@dataclass(frozen=True)
class Step:
    """One step of the pipeline: what it needs from earlier steps, what it hands on, the
    output tables it writes (declared in :mod:`cvm_spark.storage.tables`) and whether the
    runner times it as one stage (the model step times its fits and writes one by one)."""

    name: str
    run: Callable[[Run], None]
    needs: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    timed: bool = True


def _validate(run: Run) -> None:
    spark, cfg, summary = run.spark, run.cfg, run.summary
    perf, snapshot = cfg.performance, cfg.snapshot
    raw = read_inputs(spark, cfg.inputs)
    run.resources.enter_context(sized_shuffles(
        spark, {name: (df, cfg.inputs.location(name)[1]) for name, df in raw.items()},
        perf.shuffle_partitions, perf.partition_mb))
    # the run's intermediate results: removed when the run ends (resources)
    work = run.resources.enter_context(WorkArea(spark, cfg.output, snapshot, summary.run_id))
    validated = validate_inputs(raw, cfg, materialize=work.materialize)
    profile = validated.profile()
    # a snapshot the inputs cannot make stops here, before the first write
    check_snapshot_data(profile, snapshot)
    for name, per_reason in profile.counts.items():
        summary.rows_read[name] = sum(per_reason.values())
        summary.rows_quarantined[name] = {r: n for r, n in per_reason.items()
                                          if r != "accepted"}
    summary.data_window = data_window_text(profile.first_accepted,
                                           cfg.validation.data_start_date, month_end(snapshot))
    first_month = profile.first_accepted.get("monthly_product") or snapshot
    run.results.update(
        validated=validated, work=work, k_data_start=months_between(snapshot, first_month),
        accepted={name: validated.accepted(name) for name in validated.classified})


def _quarantine(run: Run) -> None:
    run.write(run.results["validated"].quarantine(run.cfg.snapshot, run.summary.run_id),
              "quarantine")


def _features(run: Run) -> None:
    # every per-account aggregate of the inputs in one pass per table, written once to the
    # run's work area: every later step is a projection of its files
    facts = run.results["work"].materialize(
        build_account_facts(run.results["accepted"], run.cfg, run.results["k_data_start"]),
        "facts")
    features = features_of(facts, run.cfg)
    run.write(features.drop(*BTYD_COLUMNS), "features")
    run.results.update(facts=facts, features=features)


def _rfm(run: Run) -> None:
    features, cfg = run.results["features"], run.cfg
    rfm_cuts = fit_rfm(features, cfg.rfm)
    # segments counted while the table is written (no second pass)
    observed = run.write(score_rfm(features, cfg.rfm, rfm_cuts), "rfm",
                         observe=segment_counts(cfg.rfm))
    run.summary.segments = {name: int(n) for name, n in observed.items() if n}
    run.results["rfm_cuts"] = rfm_cuts


def _model(run: Run) -> None:
    spark, cfg, summary, r = run.spark, run.cfg, run.summary, run.results
    # each model step is a stage of its own (timed, logged, in run_log), then one stage
    # per table written
    outputs = run.score_models(spark, cfg, r["accepted"], r["facts"], r["rfm_cuts"],
                              summary.run_id, model_root=model_root(cfg),
                              materialize=r["work"].materialize,
                              accounts=summary.rows_written["features"],
                              k_data_start=r["k_data_start"], retrain=run.retrain,
                              stage=run.stage)
    observations = {"tiers": tier_counts(cfg.tiers), "kpi_summary": overall_observations()}
    for table in MODEL_TABLES:
        with run.stage(f"write_{table}"):
            observed = run.write(getattr(outputs, table), table,
                                 observe=observations.get(table))
            if table == "tiers":
                summary.tiers = {name: int(n) for name, n in observed.items() if n}
            if table == "kpi_summary":
                summary.kpis = dict(observed)
    with run.stage("model_summary"):
        # the model_metrics rows are a local table: no Spark job
        summary.metrics = [
            (row["model"], row["scope"], row["metric"], row["value"])
            for row in outputs.model_metrics.where(
                F.col("metric").isin(*SUMMARY_METRICS)).collect()]


# The pipeline as a declared graph: run in this order, each step only after the steps that
# make what it needs (checked below, at import). `cvm run --until <step>` runs a prefix.
STEPS: tuple[Step, ...] = (
    Step("validate", _validate, makes=("validated", "work", "accepted", "k_data_start")),
    Step("quarantine", _quarantine, needs=("validated",), writes=("quarantine",)),
    Step("features", _features, needs=("work", "accepted", "k_data_start"),
         makes=("facts", "features"), writes=("features",)),
    Step("rfm", _rfm, needs=("features",), makes=("rfm_cuts",), writes=("rfm",)),
    Step("model", _model, needs=("work", "accepted", "facts", "rfm_cuts", "k_data_start"),
         writes=MODEL_TABLES, timed=False),
)
if tuple(s.name for s in STEPS) != STEP_NAMES:   # pipeline.summary lists them for the cli
    raise ImportError(f"STEP_NAMES {STEP_NAMES} differ from the steps {[s.name for s in STEPS]}")


def check_steps(steps: tuple[Step, ...]) -> None:
    """Refuse a graph whose step needs what no earlier step makes, or whose steps do not
    write every pipeline table exactly once.

    Raises:
        ValueError: naming the step and the result or table.
    """
    made: set[str] = set()
    for step in steps:
        missing = [n for n in step.needs if n not in made]
        if missing:
            raise ValueError(f"step {step.name} needs {missing}, made by no earlier step")
        made.update(step.makes)
    written = [t for s in steps for t in s.writes]
    if sorted(written) != sorted(PIPELINE_TABLES):
        raise ValueError(f"the steps write {written}, not each of {PIPELINE_TABLES} once")


check_steps(STEPS)


def _run_steps(run: Run, done: Callable[[str], None], until: str,
               code_version: CodeVersion | None, started_at: datetime | None) -> None:
    """The steps of :data:`STEPS` up to and including ``until``, then (a whole run only) the
    run log. Settings made for the run (the shuffle partitions sized from the inputs) are
    undone by ``run.resources`` when the caller leaves it."""
    for step in STEPS[:STEP_NAMES.index(until) + 1]:
        if step.timed:
            with run.stage(step.name):
                step.run(run)
        else:
            step.run(run)
        done(step.name)
    if until != STEP_NAMES[-1]:
        log.info("stopped after step %s (until): run_log not written, it records whole runs "
                 "only", until)
        return
    # last, so a logged run is one whose tables were all written; appended (history)
    summary = run.summary
    summary.rows_written["run_log"] = write_run_log(run.spark, run.cfg, summary, code_version,
                                                    started_at)
    summary.tables["run_log"] = table_path(run.cfg.output, "run_log")


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

"""Crash safety, task retries, re-runs out of order and determinism of the pipeline's writes.

The data is the shared end-to-end bank (conftest ``e2e_runs``: 400 accounts x 15 months),
and the reference is that warehouse's own run of 2024-11, which the e2e and report tests
make anyway. The crash warehouse is a copy of the e2e warehouse holding 2024-12 only; the
job runs 2024-11 into it in subprocesses (``tests/crash_driver.py``) so it can be killed with
SIGKILL: the whole process group (the Python driver, its JVM and the Python workers) dies at
once, like a lost container. This test process watches the table folders and ``_delta_log``
folders and kills at:

* (a) the middle of the ``features`` write: new data files on disk, no new log version;
* (b) right after a commit, between two tables: as soon as ``features``' new version appears;
* (c) the middle of a model-stage write (``value_scores``).

After each kill every table must be at its old version with the old rows, or at old + 1 with
exactly the rows of the reference run; 2024-12 must keep the very same files; the run log
must not mention the killed run. The target snapshot starts empty, so a partial write would
show. Steps, in order on the crash warehouse (each test first runs the steps it needs):

``no_retry``      in this process (``local[2]``: one attempt per task), a task of the
                  quarantine write fails: the run fails, nothing is committed.
``mid_write``, ``after_commit``, ``model_write``: the kills (a), (b), (c).
``rerun``         2024-12 is deleted from the crash warehouse (so this is an in-order run of
                  2024-11), then 2024-11 runs to completion with ``local[2,4]`` (up to 4
                  attempts per task) and the first attempt of a ``value_scores`` write task
                  failing: retried, and the tables equal the reference exactly once.

The re-run is also the second run of the determinism check (every table compared row by row
with the reference, made in another process, after 2024-12) and the in-order run of the
out-of-order check. See docs/reliability.md, section "crashes".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlparse

import crash_driver  # tests/ is on sys.path (rootdir conftest)
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.crash,
    pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups"),
]

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "crash_driver.py"
DATABASE = "cvm_crash"
LATER, EARLIER = "2024-12", "2024-11"
TARGET, OTHER = date(2024, 11, 1), date(2024, 12, 1)
TABLES = ("quarantine", "features", "rfm", "model_metrics", "value_scores", "tiers",
          "campaign_targets", "tier_summary", "run_log")
# run_log columns that differ between two runs of the same snapshot by design: when and how
# long (given by the caller, measured), the config fingerprint (the warehouse path is part
# of the config) and the run's number in its warehouse
RUN_LOG_VOLATILE = ("run_started_at", "stage_seconds", "config_fingerprint", "run_seq")
STEPS = ("no_retry", "mid_write", "after_commit", "model_write", "rerun")
KILLS = ("mid_write", "after_commit", "model_write")
RUN_SECONDS = 1200
POLL_SECONDS = 0.005


def _log_version(table_dir: Path) -> int:
    """The newest committed version: the highest ``<20 digits>.json`` in ``_delta_log``."""
    names = (p.name for p in (table_dir / "_delta_log").glob("*.json"))
    return max((int(n[:20]) for n in names if len(n) == 25 and n[:20].isdigit()), default=-1)


def _data_files(table_dir: Path, month: date) -> set[str]:
    """Parquet files on disk in a snapshot's partition folder, committed or not."""
    folder = table_dir / f"snapshot_month={month.isoformat()}"
    return {p.name for p in folder.glob("*.parquet")} if folder.is_dir() else set()


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


@dataclass
class TableState:
    """One table between two runs, as readers see it."""

    version: int
    rows: list             # rows of the target snapshot (a few hundred, collected)
    active: set[str]       # data files of the target snapshot in the current version
    on_disk: set[str]      # data files in the target snapshot's folder, committed or not
    other: dict[str, str]  # the other snapshot's data files -> sha256 of their bytes


def capture(spark, warehouse: str, database: str) -> dict[str, TableState]:
    """Version, target-snapshot rows and files of every table."""
    states = {}
    for table in TABLES:
        folder = Path(warehouse) / database / table
        df = spark.read.format("delta").load(str(folder))
        target = df.where(F.col("snapshot_month") == F.lit(TARGET))
        other = df.where(F.col("snapshot_month") == F.lit(OTHER))
        states[table] = TableState(
            version=_log_version(folder), rows=target.collect(),
            active={_local(u).name for u in target.inputFiles()},
            on_disk=_data_files(folder, TARGET),
            other={_local(u).name: hashlib.sha256(_local(u).read_bytes()).hexdigest()
                   for u in other.inputFiles()})
    return states


def assert_rows_equal(actual: list, expected: list, table: str) -> None:
    """Same rows, each as many times, every value exactly equal (no float tolerance)."""
    assert len(actual) == len(expected), (table, len(actual), len(expected))
    if table == "run_log":
        def plain(rows):
            return sorted(json.dumps({k: v for k, v in r.asDict().items()
                                      if k not in RUN_LOG_VOLATILE}, default=str, sort_keys=True)
                          for r in rows)
        assert plain(actual) == plain(expected), table
    elif expected:
        assertDataFrameEqual(actual, expected, rtol=0.0, atol=0.0)


def _group_alive(pgid: int) -> bool:
    """Does a process of the group still run (zombies do not count)?"""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@dataclass
class Outcome:
    returncode: int | None   # None: killed by the test
    log: str
    seconds: float
    pid: int | None = None   # the driver's Python process (the snapshot lock names it)


def _driver_pid(log: str) -> int | None:
    """The pid the driver printed (``DRIVER pid <n> ...``)."""
    for line in log.splitlines():
        if line.startswith("DRIVER pid "):
            return int(line.split()[2])
    return None


class CrashScenario:
    """The runs of 2024-11 on the crash warehouse, made once and in order (see the module
    docstring); the table states before and after each step are kept for the tests."""

    def __init__(self, spark, e2e_config, e2e_runs, tmp: Path) -> None:
        from cvm_spark.config import load_config_dict, to_dict
        from cvm_spark.pipeline.runner import default_run_id
        from cvm_spark.storage.delta import table_path
        from cvm_spark.storage.locking import lock_path

        self.spark, self.tmp, self.e2e_runs = spark, tmp, e2e_runs
        e2e_runs.first()                           # 2024-12 in the e2e warehouse
        self.ref_output = e2e_config.output
        self.output = replace(e2e_config.output, warehouse=str(tmp / "wh"), database=DATABASE)
        for table in TABLES:                       # before the reference run of 2024-11
            shutil.copytree(table_path(self.ref_output, table), table_path(self.output, table))
        data = to_dict(e2e_config.with_snapshot(EARLIER))
        data["output"].update(warehouse=self.output.warehouse, database=DATABASE)
        self.cfg = load_config_dict(data)
        self.config = tmp / "config.json"
        self.config.write_text(json.dumps(data))
        # the same run id and code version as the reference run, so no column differs
        self.run_id = default_run_id(e2e_config.with_snapshot(EARLIER))
        self.git_commit = e2e_runs.CODE_COMMIT
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET",
                                 "PYSPARK_SUBMIT_ARGS", "PYSPARK_DRIVER_PYTHON")}
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env["PYSPARK_PYTHON"] = sys.executable
        self.before: dict[str, dict[str, TableState]] = {}
        self.after: dict[str, dict[str, TableState]] = {}
        self.outcomes: dict[str, Outcome] = {}
        # the content of the month's snapshot lock file after each step (None: no lock)
        self.locks: dict[str, bytes | None] = {}
        self.lock_path = Path(lock_path(self.output, TARGET))
        self.markers = {step: tmp / f"{step}.marker" for step in STEPS}

        start = self.capture()
        if any(s.rows for s in start.values()):    # 2024-11 ran in the e2e warehouse before
            for table in TABLES:
                DeltaTable.forPath(spark, table_path(self.output, table)).delete(
                    F.col("snapshot_month") == F.lit(TARGET))
            start = self.capture()
        self.after["start"] = start
        # first: it swaps the pipeline's writer in this process for a while
        self.ensure("no_retry")
        # The reference run of 2024-11 (in the e2e warehouse, in this process) goes on while
        # the subprocesses run: each mostly keeps one core busy (planning), so the two
        # overlap on two cores.
        self._reference: dict[str, TableState] | None = None
        self._reference_error: BaseException | None = None
        self._reference_thread = threading.Thread(target=self._reference_run, daemon=True)
        self._reference_thread.start()

    def _reference_run(self) -> None:
        try:
            self.e2e_runs.latest(EARLIER)
        except BaseException as exc:   # re-raised by the first test that needs it
            self._reference_error = exc

    @property
    def reference(self) -> dict[str, TableState]:
        """The tables of the e2e warehouse's run of 2024-11 (waits for it)."""
        if self._reference is None:
            self._reference_thread.join()
            if self._reference_error is not None:
                raise self._reference_error
            self._reference = capture(self.spark, self.ref_output.warehouse,
                                      self.ref_output.database)
        return self._reference

    def capture(self) -> dict[str, TableState]:
        return capture(self.spark, self.output.warehouse, DATABASE)

    def folder(self, table: str) -> Path:
        return Path(self.output.warehouse) / DATABASE / table

    # --- processes -------------------------------------------------------------------------

    def _run(self, step: str, master: str, inject: str | None,
             kill_when: Callable[[], bool] | None) -> Outcome:
        """Run the driver; with ``kill_when``, SIGKILL its process group once that holds."""
        log_path = self.tmp / f"{step}.log"
        cmd = [sys.executable, str(DRIVER), "--config", str(self.config), "--master", master,
               "--run-id", self.run_id, "--git-commit", self.git_commit]
        if inject:
            cmd += ["--inject", inject, "--marker", str(self.markers[step])]
        start = time.monotonic()
        with log_path.open("wb") as out:
            proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        deadline = start + RUN_SECONDS
        killed = False
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if kill_when is not None and kill_when():
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    break
                time.sleep(POLL_SECONDS)
        finally:
            if proc.poll() is None and not killed:
                os.killpg(proc.pid, signal.SIGKILL)    # timed out: leave nothing running
            proc.wait(timeout=60)
            while _group_alive(proc.pid) and time.monotonic() < deadline + 60:
                time.sleep(0.05)
        seconds = time.monotonic() - start
        log = log_path.read_text(errors="replace")
        assert seconds < RUN_SECONDS, f"{step}: timed out\n{log[-6000:]}"
        if kill_when is not None:
            assert killed, f"{step}: the kill point was never reached\n{log[-6000:]}"
            assert proc.returncode == -signal.SIGKILL, (step, proc.returncode)
            return Outcome(None, log, seconds, _driver_pid(log))
        return Outcome(proc.returncode, log, seconds, _driver_pid(log))

    def _in_process_failure(self) -> Outcome:
        """Run 2024-11 here (local[2]: no task retries) with the quarantine write failing."""
        from pyspark import cloudpickle

        import cvm_spark.pipeline.runner as pipeline
        from cvm_spark.pipeline.run_log import CodeVersion

        cloudpickle.register_pickle_by_value(crash_driver)  # the workers cannot import it
        original = pipeline.write_observed
        crash_driver.patch_writer(pipeline, "quarantine", "fail", str(self.markers["no_retry"]))
        start = time.monotonic()
        try:
            pipeline.run_snapshot(self.spark, self.cfg, run_id=self.run_id,
                                  code_version=CodeVersion(git_commit=self.git_commit))
        except Exception as exc:   # the failed Spark job, as py4j or PySpark reports it
            return Outcome(1, str(exc), time.monotonic() - start)
        finally:
            pipeline.write_observed = original
            cloudpickle.unregister_pickle_by_value(crash_driver)
        return Outcome(0, "", time.monotonic() - start)

    def _mid_write(self, table: str, before: dict[str, TableState]) -> Callable[[], bool]:
        """New data files in the table's target folder, and still no new log version."""
        folder = self.folder(table)

        def check() -> bool:
            return (bool(_data_files(folder, TARGET) - before[table].on_disk)
                    and _log_version(folder) == before[table].version)
        return check

    def _committed(self, table: str, before: dict[str, TableState]) -> Callable[[], bool]:
        folder = self.folder(table)
        return lambda: _log_version(folder) > before[table].version

    # --- steps -----------------------------------------------------------------------------

    def ensure(self, step: str) -> None:
        """Run every step up to and including ``step`` that has not run yet; the kills all
        at once (none needs the reference run, which goes on meanwhile)."""
        last = max(STEPS.index(step), STEPS.index("model_write") if step in KILLS else 0)
        for name in STEPS[:last + 1]:
            if name in self.after:
                continue
            before = self.after[STEPS[STEPS.index(name) - 1] if name != STEPS[0] else "start"]
            if name == "no_retry":
                outcome = self._in_process_failure()
            elif name == "mid_write":
                outcome = self._run(name, "local[2,4]", "features:slow",
                                    self._mid_write("features", before))
            elif name == "after_commit":
                outcome = self._run(name, "local[2,4]", None, self._committed("features", before))
            elif name == "model_write":
                outcome = self._run(name, "local[2,4]", "value_scores:slow",
                                    self._mid_write("value_scores", before))
            else:
                # without 2024-12 the re-run is an in-order run of 2024-11 (the reference
                # run of 2024-11 came after 2024-12)
                for table in TABLES:
                    DeltaTable.forPath(self.spark, str(self.folder(table))).delete(
                        F.col("snapshot_month") == F.lit(OTHER))
                before = self.capture()
                outcome = self._run(name, "local[2,4]", "value_scores:fail", None)
            self.outcomes[name] = outcome
            self.before[name] = before
            self.after[name] = self.capture()
            self.locks[name] = (self.lock_path.read_bytes() if self.lock_path.exists()
                                else None)

    def assert_killed_at(self, step: str, seen: tuple[str, ...], unseen: tuple[str, ...]) -> None:
        """The killed driver's log shows the lines ``seen`` and none of ``unseen`` (stage
        progress lines of ``cvm_spark.pipeline.runner``): the kill came where it was meant to."""
        log = self.outcomes[step].log
        for line in seen:
            assert line in log, (step, line, log[-6000:])
        for line in unseen:
            assert line not in log, (step, line, log[-6000:])

    def assert_stale_lock(self, step: str) -> None:
        """The killed run left the month's lock behind, naming its own (now dead) process."""
        from cvm_spark.storage.lock_holder import LockHolder, holder_state

        raw = self.locks[step]
        assert raw is not None, f"{step}: the killed run left no lock"
        holder = LockHolder.from_json(raw)
        assert holder.run_id == self.run_id and holder.pid == self.outcomes[step].pid, holder
        assert holder_state(holder) == "dead", holder

    def assert_took_over(self, step: str, killed: str) -> None:
        """The run of ``step`` took over the stale lock of the run killed in ``killed``."""
        pid = self.outcomes[killed].pid
        lines = [line for line in self.outcomes[step].log.splitlines()
                 if "taking over the lock" in line]
        assert lines, (step, self.outcomes[step].log[-6000:])
        assert f"pid {pid}," in lines[0] and "its process is gone" in lines[0], lines

    def assert_old_or_new(self, step: str) -> set[str]:
        """Every table at its old version with the old rows, or at old + 1 with exactly the
        reference rows; the other snapshot's files unchanged. Returns the tables at old + 1."""
        before, after = self.before[step], self.after[step]
        advanced = set()
        for table in TABLES:
            old, new = before[table], after[table]
            assert new.version in (old.version, old.version + 1), (step, table)
            if new.version == old.version:
                assert new.active == old.active, (step, table)
                assert_rows_equal(new.rows, old.rows, table)
            else:
                advanced.add(table)
                assert_rows_equal(new.rows, self.reference[table].rows, table)
            assert new.other == old.other, (step, table, "the other snapshot changed")
        return advanced


@pytest.fixture(scope="module")
def scenario(spark, e2e_config, e2e_runs, tmp_path_factory) -> CrashScenario:
    return CrashScenario(spark, e2e_config, e2e_runs, tmp_path_factory.mktemp("crash"))


def test_crash_warehouse_starts_with_the_later_month_only(scenario):
    for table in TABLES:
        start = scenario.after["start"][table]
        assert start.other and not start.rows and not start.on_disk, table


def test_task_failure_without_retries_fails_the_run_and_commits_nothing(scenario):
    scenario.ensure("no_retry")
    outcome = scenario.outcomes["no_retry"]
    assert outcome.returncode == 1
    assert crash_driver.INJECTED in outcome.log
    assert scenario.markers["no_retry"].is_file()   # the failing attempt did run
    assert scenario.assert_old_or_new("no_retry") == set()
    assert not any(s.rows for s in scenario.after["no_retry"].values())
    assert scenario.locks["no_retry"] is None   # a run that fails releases its lock


def test_kill_in_the_middle_of_a_write(scenario):
    scenario.ensure("mid_write")
    scenario.assert_killed_at("mid_write", (
        "DRIVER injecting slow into the write of features", "stage quarantine: done",
        "stage features: start"), ("stage features: done",))
    assert scenario.assert_old_or_new("mid_write") == {"quarantine"}  # written before features
    features = scenario.after["mid_write"]["features"]
    # the killed write left data files that no version of the table references
    assert features.on_disk and not features.active and not features.rows


def test_kill_right_after_a_commit(scenario):
    scenario.ensure("after_commit")
    scenario.assert_killed_at("after_commit", ("stage features: start",),
                              ("stage rfm: done",))
    assert scenario.assert_old_or_new("after_commit") == {"quarantine", "features"}
    features = scenario.after["after_commit"]["features"]
    assert features.on_disk - features.active   # the orphans of (a) are still there, unread


def test_kill_in_the_middle_of_a_model_stage_write(scenario):
    scenario.ensure("model_write")
    scenario.assert_killed_at("model_write", (
        "DRIVER injecting slow into the write of value_scores", "stage write_model_metrics: done",
        "stage write_value_scores: start"), ("stage write_value_scores: done",))
    advanced = scenario.assert_old_or_new("model_write")
    # the model stage writes model_metrics first, then value_scores (killed mid-write)
    assert advanced == {"quarantine", "features", "rfm", "model_metrics"}
    scores = scenario.after["model_write"]["value_scores"]
    assert scores.on_disk and not scores.active and not scores.rows
    assert not scenario.after["model_write"]["run_log"].rows   # no killed run is logged


def test_a_killed_run_leaves_a_stale_lock_that_the_next_run_takes_over(scenario):
    """SIGKILL leaves the month's lock file (no cleanup runs); its pid is dead, so the next
    run on this host takes it over by itself (cvm_spark.storage.locking) and, when it completes,
    removes it."""
    scenario.ensure("rerun")
    for killed, following in zip(KILLS, (*KILLS[1:], "rerun"), strict=True):
        scenario.assert_stale_lock(killed)
        scenario.assert_took_over(following, killed)
    assert scenario.locks["rerun"] is None


def test_rerun_after_the_crashes_with_a_retried_task_writes_once(scenario):
    scenario.ensure("rerun")
    outcome = scenario.outcomes["rerun"]
    assert outcome.returncode == 0, outcome.log[-6000:]
    assert scenario.markers["rerun"].is_file()   # the first attempt failed and was retried
    before, after = scenario.before["rerun"], scenario.after["rerun"]
    for table in TABLES:
        assert after[table].version == before[table].version + 1, table
        assert scenario.reference[table].rows, table   # every table has rows to compare
        assert_rows_equal(after[table].rows, scenario.reference[table].rows, table)
    scores = after["value_scores"]
    assert len({r.account_id for r in scores.rows}) == len(scores.rows)
    # orphans of the killed write (and of the failed attempt, if it got to write) stay unread
    assert scores.on_disk - scores.active
    # the failed and killed runs left no trace in the run log: this is run 1 of 2024-11
    assert {(r.run_id, r.run_seq) for r in after["run_log"].rows} == {(scenario.run_id, 1)}


def test_two_runs_of_the_same_inputs_are_identical(scenario):
    """Determinism: the re-run of 2024-11 (another process, after the crashes, with a retried
    task) and the reference run (in this process), every table row by row, exactly."""
    scenario.ensure("rerun")
    for table in TABLES:
        assert_rows_equal(scenario.after["rerun"][table].rows, scenario.reference[table].rows,
                          table)


def test_earlier_month_after_later_month_leaves_both_correct(spark, scenario):
    """Out of order, in the e2e warehouse: 2024-11 ran after 2024-12. 2024-12 kept the very
    same data files (Delta never rewrites a file) and rows, and 2024-11 equals the in-order
    run (the crash warehouse's re-run, made with no 2024-12 in the warehouse)."""
    from cvm_spark.storage.delta import table_path

    scenario.ensure("rerun")
    reference = scenario.reference             # also: the e2e run of 2024-11 has ended
    history = scenario.e2e_runs.history
    earlier = next(i for i, (month, _) in enumerate(history) if month == EARLIER)
    later = max(i for i, (month, _) in enumerate(history[:earlier]) if month == LATER)
    for table in TABLES:
        frames = [spark.read.format("delta").option("versionAsOf", history[i][1][table])
                  .load(table_path(scenario.ref_output, table))
                  .where(F.col("snapshot_month") == F.lit(OTHER)) for i in (later, earlier)]
        assert frames[0].inputFiles() and \
            sorted(frames[0].inputFiles()) == sorted(frames[1].inputFiles()), table
        assertDataFrameEqual(frames[1], frames[0], rtol=0.0, atol=0.0)
        assert_rows_equal(reference[table].rows, scenario.after["rerun"][table].rows, table)

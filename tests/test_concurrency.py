"""Concurrent runs: the snapshot lock, the table write guard, commit retries, and real runs.

The lock tests need no Spark (a local warehouse uses plain files); the lock holders that get
killed are real processes. The end-to-end test starts three ``cvm run`` processes at once on
a fresh warehouse: two for the same month (one must stop at the lock, the other must write
the month alone) and one for another month (both months must end up complete and equal to
a sequential run of the same inputs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cvm_spark.config import OutputConfig
from cvm_spark.storage import lock_store, locking
from cvm_spark.storage.lock_holder import LockHolder, current_holder, holder_state
from cvm_spark.storage.locking import (
    SnapshotLockedError,
    lock_path,
    snapshot_lock,
    table_write_guard,
)

ROOT = Path(__file__).resolve().parents[1]
DEC, NOV = date(2024, 12, 1), date(2024, 11, 1)


def _env() -> dict[str, str]:
    """This checkout first on the path of a child process (works on a clean clone too)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture
def output(tmp_path) -> OutputConfig:
    return OutputConfig(warehouse=str(tmp_path / "wh"), database="cvm_lock")


def _foreign(run_id: str = "other-run", **changes) -> LockHolder:
    """A holder on another machine (its process cannot be checked from here)."""
    holder = LockHolder(run_id=run_id, snapshot_month=DEC.isoformat(), host="other-host.example",
                        pid=4242, app_id="app-20250102030405-0007",
                        started_at="2025-01-02T03:04:05+00:00")
    return replace(holder, **changes)


def _plant(output: OutputConfig, holder: LockHolder | bytes, snapshot: date = DEC) -> Path:
    path = Path(lock_path(output, snapshot))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(holder if isinstance(holder, bytes) else holder.to_json())
    return path


# ------------------------------------------------------------------------------------------
# The snapshot lock
# ------------------------------------------------------------------------------------------


def test_lock_is_taken_and_released_outside_the_tables(output):
    started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    path = Path(lock_path(output, DEC))
    assert path == Path(output.warehouse).resolve() / "_locks" / "cvm_lock" / \
        "snapshot_month=2024-12-01.lock"
    with snapshot_lock(output, DEC, "run-a", app_id="local-123", started_at=started) as me:
        held = json.loads(path.read_text())
        assert held == json.loads(me.to_json())
        assert held["run_id"] == "run-a" and held["pid"] == os.getpid()
        assert held["app_id"] == "local-123" and held["started_at"] == started.isoformat()
        assert held["snapshot_month"] == "2024-12-01"
        assert holder_state(me) == "alive"
    assert not path.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == []   # no temporary files left


def test_lock_is_released_when_the_run_fails(output):
    with pytest.raises(RuntimeError, match="boom"), snapshot_lock(output, DEC, "run-a"):
        raise RuntimeError("boom")
    assert not Path(lock_path(output, DEC)).exists()


def test_second_run_of_a_month_is_refused_and_other_months_are_not(output):
    with snapshot_lock(output, DEC, "run-a", app_id="local-1"):
        with pytest.raises(SnapshotLockedError) as exc, snapshot_lock(output, DEC, "run-b"):
            pytest.fail("the second run of the month got the lock")
        msg = str(exc.value)
        assert "snapshot 2024-12-01 is locked by run run-a" in msg
        assert f"pid {os.getpid()}" in msg and "Spark application local-1" in msg
        assert "in progress on this host" in msg and "\n" not in msg
        assert exc.value.holder.run_id == "run-a"
        with snapshot_lock(output, NOV, "run-c"):   # another month: its own lock
            assert Path(lock_path(output, NOV)).exists()
        # the refused run left the first run's lock alone
        assert LockHolder.from_json(Path(lock_path(output, DEC)).read_bytes()).run_id == "run-a"


def test_lock_of_another_host_is_refused_with_its_holder_and_the_override(output):
    _plant(output, _foreign())
    with pytest.raises(SnapshotLockedError) as exc, snapshot_lock(output, DEC, "run-b"):
        pass
    msg = str(exc.value)
    assert "run other-run (host other-host.example, pid 4242, " \
           "Spark application app-20250102030405-0007, started 2025-01-02T03:04:05+00:00)" in msg
    assert "`cvm run --break-lock`" in msg and "not running any more" in msg
    assert _foreign().to_json() == Path(lock_path(output, DEC)).read_bytes()  # untouched


def test_break_lock_takes_over_a_lock_of_another_host(output, caplog):
    path = _plant(output, _foreign())
    with (caplog.at_level(logging.WARNING, logger="cvm_spark.storage.locking"),
          snapshot_lock(output, DEC, "run-b", break_lock=True) as me):
        assert LockHolder.from_json(path.read_bytes()) == me
    assert "taking over the lock of run other-run" in caplog.text and "--break-lock" in caplog.text
    assert not path.exists()
    assert not Path(f"{path}{locking.TAKEOVER_SUFFIX}").exists()


def test_unreadable_lock_is_refused_unless_broken(output, monkeypatch):
    monkeypatch.setattr(locking, "READ_PAUSE_SECONDS", 0.0)
    path = _plant(output, b'{"run_id": "half-writ')
    with (pytest.raises(SnapshotLockedError, match=r"unknown run \(unreadable lock\)"),
          snapshot_lock(output, DEC, "run-b")):
        pass
    with snapshot_lock(output, DEC, "run-b", break_lock=True):
        assert LockHolder.from_json(path.read_bytes()).run_id == "run-b"


def test_a_lock_taken_over_meanwhile_is_not_released_by_the_old_holder(output, caplog):
    path = Path(lock_path(output, DEC))
    with (caplog.at_level(logging.WARNING, logger="cvm_spark.storage.locking"),
          snapshot_lock(output, DEC, "run-a")):
        path.write_bytes(_foreign("run-b").to_json())   # as --break-lock elsewhere would
    assert LockHolder.from_json(path.read_bytes()).run_id == "run-b"
    assert "no longer belongs to run run-a" in caplog.text


_HOLDER = """
import sys, time
from datetime import date
from cvm_spark.config import OutputConfig
from cvm_spark.storage.locking import snapshot_lock
with snapshot_lock(OutputConfig(warehouse=sys.argv[1], database=sys.argv[2]),
                   date(2024, 12, 1), "killed-run"):
    print("locked", flush=True)
    time.sleep(300)
"""


def _start_holder(output: OutputConfig) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, output.warehouse, output.database],
                            env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_lock_of_a_killed_run_is_stale_and_taken_over(output, caplog):
    """A run killed with SIGKILL cannot remove its lock; the next run of the month (here on
    the same host) sees its process is gone and takes the lock over, with a warning."""
    proc = _start_holder(output)
    try:
        path = Path(lock_path(output, DEC))
        holder = LockHolder.from_json(path.read_bytes())
        assert holder.pid == proc.pid and holder.run_id == "killed-run"
        assert holder_state(holder) == "alive"
        # while it runs, neither a run nor --break-lock gets in
        for force in (False, True):
            with (pytest.raises(SnapshotLockedError, match=f"killed-run .*pid {proc.pid}"),
                  snapshot_lock(output, DEC, "next-run", break_lock=force)):
                pass
        proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while holder_state(holder) == "alive" and time.monotonic() < deadline:
            time.sleep(0.05)
        # not reaped yet: a zombie is dead too
        assert holder_state(holder) == "dead"
        assert path.exists()
        with (caplog.at_level(logging.WARNING, logger="cvm_spark.storage.locking"),
              snapshot_lock(output, DEC, "next-run") as me):
            assert LockHolder.from_json(path.read_bytes()) == me
        assert "taking over the lock of run killed-run" in caplog.text
        assert "its process is gone" in caplog.text
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_reused_pid_does_not_keep_a_lock_alive(output):
    """A holder whose PID now belongs to a process that started at another time is dead."""
    me = current_holder("r", DEC)
    if me.process_start is None:
        pytest.skip("no /proc on this system: process start times are not known")
    reused = replace(me, run_id="old-run", process_start=str(int(me.process_start) - 1))
    assert holder_state(reused) == "dead"
    assert holder_state(replace(me, host="elsewhere")) == "unknown"
    assert holder_state(replace(me, boot_id="another-boot")) == "unknown"


def test_takeover_in_progress_elsewhere_is_refused_and_a_dead_one_is_cleared(output, caplog):
    me = current_holder("gone", DEC)
    if me.process_start is None:
        pytest.skip("no /proc on this system: process start times are not known")
    dead = replace(me, process_start=str(int(me.process_start) + 1))  # PID reused: dead
    path = _plant(output, dead)
    guard = Path(f"{path}{locking.TAKEOVER_SUFFIX}")
    guard.write_bytes(_foreign("breaker").to_json())   # another host is taking over right now
    with (pytest.raises(SnapshotLockedError, match="taking over this stale lock right now"),
          snapshot_lock(output, DEC, "run-b")):
        pass
    assert path.exists() and guard.exists()
    guard.write_bytes(replace(dead, run_id="dead-breaker").to_json())   # died half-way
    with (caplog.at_level(logging.WARNING, logger="cvm_spark.storage.locking"),
          snapshot_lock(output, DEC, "run-b")):
        assert LockHolder.from_json(path.read_bytes()).run_id == "run-b"
    assert "take-over marker" in caplog.text and not guard.exists() and not path.exists()


# ------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------


class _NoSpark:
    """Stands in for the session: the lock is decided before Spark is used."""

    def stop(self) -> None:
        pass


def test_cli_exits_5_with_one_line_and_break_lock_takes_over(tmp_path, monkeypatch, capsys):
    from cvm_spark import cli
    from cvm_spark.pipeline import runner as pipeline

    wh = tmp_path / "wh"
    out = OutputConfig(warehouse=str(wh), database="cvm")
    monkeypatch.setattr(cli, "_session", lambda *a, **k: _NoSpark())
    seen = []

    def fake_run(spark, cfg, run_id, *args):
        seen.append(LockHolder.from_json(Path(lock_path(cfg.output, cfg.snapshot)).read_bytes()))
        return pipeline.RunSummary(run_id=run_id, snapshot_month=cfg.snapshot_month)

    monkeypatch.setattr(pipeline, "_run_locked", fake_run)
    argv = ["run", "--config", str(ROOT / "conf" / "cvm.yaml"), "--snapshot", "2024-12",
            "--run-id", "cli-run", "--set", f"output.warehouse={wh}"]
    lock = _plant(out, _foreign())
    assert cli.main(argv) == cli.EXIT_LOCKED == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cvm: snapshot 2024-12-01 is locked by {_foreign().describe()}: another run "
                   "of this month may be in progress; wait for it to end, or, once you have made "
                   "sure it is not running any more, re-run with `cvm run --break-lock` "
                   f"(lock file {lock})"]
    assert not seen
    assert cli.main([*argv, "--break-lock"]) == 0
    assert [h.run_id for h in seen] == ["cli-run"] and seen[0].pid == os.getpid()
    assert not lock.exists()


# ------------------------------------------------------------------------------------------
# The table write guard
# ------------------------------------------------------------------------------------------


def test_table_write_guard_lets_one_writer_per_table_in(output):
    entered = threading.Event()

    def second_writer():
        with table_write_guard(output, "rfm"):
            entered.set()

    with table_write_guard(output, "rfm"):
        with table_write_guard(output, "tiers"):   # another table: not blocked
            pass
        thread = threading.Thread(target=second_writer, daemon=True)
        thread.start()
        assert not entered.wait(0.5)   # waits while the first writer holds the table
    assert entered.wait(10)
    thread.join(10)
    lock_files = sorted(p.name for p in (Path(output.warehouse) / "_locks" / "cvm_lock").iterdir())
    assert lock_files == ["rfm.write.lock", "tiers.write.lock"]


def test_guard_and_lock_do_nothing_on_the_local_path_of_a_uri_warehouse():
    remote = OutputConfig(warehouse="hdfs://nn:8020/warehouse", database="cvm")
    assert lock_path(remote, DEC) == \
        "hdfs://nn:8020/warehouse/_locks/cvm/snapshot_month=2024-12-01.lock"
    with table_write_guard(remote, "rfm"):   # Delta's HDFS log store is atomic by itself
        pass
    with pytest.raises(ValueError, match="needs a SparkSession"):
        lock_store.lock_store(remote)
    assert isinstance(lock_store.lock_store(
        OutputConfig(warehouse="file:///tmp/wh", database="cvm")), lock_store.LocalLockStore)


# ------------------------------------------------------------------------------------------
# Lock files through Hadoop's FileSystem API, commit retries (Spark)
# ------------------------------------------------------------------------------------------


def test_hadoop_lock_store_creates_only_once(spark, tmp_path):
    store = lock_store.HadoopLockStore(spark)
    path = (tmp_path / "locks" / "x.lock").as_uri()
    assert store.read(path) is None
    assert store.create(path, b'{"a": 1}\n')
    assert not store.create(path, b"other")
    assert store.read(path) == b'{"a": 1}\n'
    store.delete(path)
    assert store.read(path) is None
    store.delete(path)   # idempotent


def _frame(spark, month: date, accounts: list[str]):
    return spark.createDataFrame([(month, a, "Lost") for a in accounts],
                                 "snapshot_month date, account_id string, segment string")


def test_write_is_retried_when_another_writer_creates_or_alters_the_table(spark, output,
                                                                          monkeypatch, caplog):
    """The race of two months on HDFS: the other run creates the table between our check and
    our commit (Delta raises ProtocolChangedException), or adds a column (Metadata...)."""
    from delta.exceptions import (
        ConcurrentAppendException,
        MetadataChangedException,
        ProtocolChangedException,
    )

    from cvm_spark.storage import delta as delta_io
    from cvm_spark.storage.delta import table_path, write_snapshot

    monkeypatch.setattr(delta_io, "RETRY_PAUSE_SECONDS", 0.0)
    real_create, real_write = delta_io._create_table, delta_io._write_once
    calls = []

    def racing_create(spark_, df, table, path, properties=None):
        # the other run wins
        real_create(spark_, _frame(spark, NOV, ["z"]), table, path, properties)
        calls.append("create")
        raise ProtocolChangedException(message="The protocol version of the Delta table has "
                                               "been changed by a concurrent update.")

    monkeypatch.setattr(delta_io, "_create_table", racing_create)
    with caplog.at_level(logging.WARNING, logger="cvm_spark.storage.delta"):
        assert write_snapshot(_frame(spark, DEC, ["a", "b"]), "rfm", output, DEC) == 2
    assert calls == ["create"] and "retrying (attempt 2 of 4)" in caplog.text
    table = spark.read.format("delta").load(table_path(output, "rfm"))
    assert sorted(r.account_id for r in table.collect()) == ["a", "b"]

    def failing(exc_type, times):
        def write_once(*args):
            calls.append(exc_type.__name__)
            if calls.count(exc_type.__name__) <= times:
                raise exc_type(message="concurrent update")
            return real_write(*args)
        return write_once

    calls.clear()
    monkeypatch.setattr(delta_io, "_write_once", failing(MetadataChangedException, 1))
    assert write_snapshot(_frame(spark, DEC, ["c"]), "rfm", output, DEC) == 1
    assert calls == ["MetadataChangedException"] * 2
    calls.clear()   # bounded: gives up after COMMIT_ATTEMPTS
    monkeypatch.setattr(delta_io, "_write_once", failing(MetadataChangedException, 99))
    with pytest.raises(MetadataChangedException):
        write_snapshot(_frame(spark, DEC, ["d"]), "rfm", output, DEC)
    assert len(calls) == delta_io.COMMIT_ATTEMPTS
    calls.clear()   # a conflict on our own month is not retried
    monkeypatch.setattr(delta_io, "_write_once", failing(ConcurrentAppendException, 1))
    with pytest.raises(ConcurrentAppendException):
        write_snapshot(_frame(spark, DEC, ["e"]), "rfm", output, DEC)
    assert calls == ["ConcurrentAppendException"]
    table = spark.read.format("delta").load(table_path(output, "rfm"))
    assert sorted(r.account_id for r in table.collect()) == ["c"]


def test_write_snapshot_waits_for_another_writer_of_the_table(spark, output):
    """write_snapshot takes the table's write guard: while another process (here: this test)
    holds it, the write does not start."""
    from cvm_spark.storage.delta import table_path, write_snapshot

    done = threading.Event()
    errors = []

    def write():
        try:
            write_snapshot(_frame(spark, DEC, ["a"]), "rfm", output, DEC)
        except BaseException as exc:  # reported below
            errors.append(exc)
        done.set()

    with table_write_guard(output, "rfm"):
        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        assert not done.wait(2.0)
        assert not Path(table_path(output, "rfm")).exists()
    assert done.wait(120) and not errors, errors
    thread.join(10)
    assert spark.read.format("delta").load(table_path(output, "rfm")).count() == 1


def test_create_when_the_table_appeared_meanwhile_uses_it(spark, output, monkeypatch, caplog):
    """isDeltaTable said no, but another writer (of another month, with one column less)
    created the table before our create: the write goes on with that table, adding the
    column, instead of failing."""
    from delta.tables import DeltaTable

    from cvm_spark.storage.delta import table_path, write_snapshot

    write_snapshot(_frame(spark, NOV, ["x"]), "rfm", output, NOV)
    real, asked = DeltaTable.isDeltaTable, []

    def is_delta_table(session, path):
        asked.append(path)
        return False if len(asked) == 1 else real(session, path)

    monkeypatch.setattr(DeltaTable, "isDeltaTable", is_delta_table)
    dec = _frame(spark, DEC, ["a"]).withColumn("rfm_code", F.lit("555"))
    assert write_snapshot(dec, "rfm", output, DEC) == 1
    table = spark.read.format("delta").load(table_path(output, "rfm"))
    assert sorted((str(r.snapshot_month), r.account_id, r.rfm_code) for r in table.collect()) \
        == [("2024-11-01", "x", None), ("2024-12-01", "a", "555")]


# ------------------------------------------------------------------------------------------
# Real runs at the same time (subprocesses) on a fresh warehouse
# ------------------------------------------------------------------------------------------

DATABASE = "cvm_conc"
TABLES = ("quarantine", "features", "rfm", "model_metrics", "value_scores", "tiers",
          "campaign_targets", "tier_summary")
RUNS_SECONDS = 900
LOCKED_LINE = re.compile(
    r"cvm: snapshot 2024-12-01 is locked by run (?P<run>conc-dec-[ab]) \(host (?P<host>\S+), "
    r"pid (?P<pid>\d+), Spark application (?P<app>local-\d+), started [^)]+\): another run of "
    r"this month is in progress on this host; wait for it to end \(lock file (?P<path>\S+)\)")


@pytest.fixture(scope="module")
def conc_config(spark, make_bank) -> Path:
    """A small generated bank (150 accounts x 14 months ending 2024-12) and a config file for
    ``cvm run`` with a warehouse that does not exist yet."""
    from banks import ONE_BACKTEST_ORIGIN, config_file

    # the partitioning of the test session (so results match it), a small driver, and the
    # Delta jars this session already resolved: three processes resolving them with Ivy at
    # the same moment would race on Ivy's cache
    jars = spark.sparkContext.getConf().get("spark.jars", "")
    assert "delta-spark" in jars, jars
    cfg = make_bank(150, 14, name="conc", snapshot_month="2024-12",
                    spark={"spark.sql.shuffle.partitions": "2",
                           "spark.default.parallelism": "2", "spark.driver.memory": "2g",
                           "spark.ui.enabled": "false", "spark.jars": jars},
                    future_value=ONE_BACKTEST_ORIGIN)
    assert cfg.output.database == DATABASE and not Path(cfg.output.warehouse).exists()
    return config_file(cfg, Path(cfg.inputs.root).parent / "cvm.yaml")


def _launch(config: Path, month: str, run_id: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in _env().items()
           if k not in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "PYSPARK_SUBMIT_ARGS")}
    with log.open("wb") as err, log.with_suffix(".out").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cvm_spark", "run", "--config", str(config), "--snapshot",
             month, "--run-id", run_id, "--master", "local[2]"],
            cwd=log.parent, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.e2e
@pytest.mark.concurrency
def test_runs_at_the_same_time_on_a_fresh_warehouse(spark, conc_config, tmp_path):
    """Two runs of 2024-12 and one of 2024-11 start together on a warehouse with no tables.

    * the 2024-11 run and one 2024-12 run succeed; the other 2024-12 run stops at the lock
      (exit 5, one line naming the holder) before the winner ends, having written nothing;
    * every table was created once and holds both months, each equal to a run of the same
      month made alone (here, in this process, meanwhile);
    * the run log and the run ids in the tables name only the winner for 2024-12.
    """
    from delta.tables import DeltaTable
    from pyspark.testing import assertDataFrameEqual

    from cvm_spark.config import load_config
    from cvm_spark.pipeline.runner import run_snapshot
    from cvm_spark.storage.delta import table_path

    runs = {"conc-dec-a": "2024-12", "conc-dec-b": "2024-12", "conc-nov": "2024-11"}
    procs: dict[str, subprocess.Popen] = {}
    ended: dict[str, float] = {}

    def note_end(run_id: str, proc: subprocess.Popen) -> None:
        # each run's end time is taken when it ends, not when this process looks (it is busy
        # with the reference runs meanwhile)
        proc.wait()
        ended[run_id] = time.monotonic()

    try:
        for run_id, month in runs.items():
            procs[run_id] = _launch(conc_config, month, run_id, tmp_path / f"{run_id}.log")
            threading.Thread(target=note_end, args=(run_id, procs[run_id]), daemon=True).start()
        deadline = time.monotonic() + RUNS_SECONDS
        # meanwhile, the reference: the same months, one after the other, in this process
        ref_cfg = load_config(conc_config, {"output.warehouse": str(tmp_path / "wh-ref")})
        reference = {month: run_snapshot(spark, ref_cfg.with_snapshot(month), run_id="ref")
                     for month in ("2024-11", "2024-12")}
        while len(ended) < len(procs) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(0.1)   # let a waiter that saw its process end record the time
    finally:
        for proc in procs.values():
            _stop(proc)
    logs = {r: (tmp_path / f"{r}.log").read_text(errors="replace") for r in runs}
    outs = {r: (tmp_path / f"{r}.out").read_text(errors="replace") for r in runs}
    codes = {r: p.returncode for r, p in procs.items()}
    assert len(ended) == len(procs), f"runs still going after {RUNS_SECONDS}s: {codes}"
    detail = "\n".join(f"--- {r} exit {codes[r]}\n{logs[r][-3000:]}" for r in runs)

    assert codes["conc-nov"] == 0, detail
    assert sorted((codes["conc-dec-a"], codes["conc-dec-b"])) == [0, 5], detail
    winner, loser = sorted(("conc-dec-a", "conc-dec-b"), key=lambda r: codes[r])
    refused = [line for line in logs[loser].splitlines() if line.startswith("cvm: ")]
    assert len(refused) == 1, logs[loser][-3000:]
    match = LOCKED_LINE.fullmatch(refused[0])
    assert match, refused[0]
    assert match["run"] == winner and int(match["pid"]) == procs[winner].pid
    assert ended[loser] < ended[winner]   # it stopped at the lock, it did not wait
    assert "accounts scored" not in outs[loser]
    print(f"lock refused {loser} {ended[loser] - min(ended.values()):.0f}s after the first "
          f"run ended; runs ended at {sorted(ended.values())}")

    cfg = load_config(conc_config)
    locks = Path(cfg.output.warehouse) / "_locks" / DATABASE
    assert sorted(p.name for p in locks.iterdir() if not p.name.endswith(".write.lock")) == []
    months = {"2024-11": "conc-nov", "2024-12": winner}
    for month, run_id in months.items():
        scored = re.search(r"accounts scored: ([\d,]+)", outs[run_id])
        assert scored and int(scored[1].replace(",", "")) == reference[month].rows_written["rfm"]
        assert reference[month].rows_written["rfm"] > 100

    def month_of(df, month):
        return df.where(F.col("snapshot_month") == F.lit(f"{month}-01").cast("date"))

    for table in TABLES:
        path = table_path(cfg.output, table)
        got = spark.read.format("delta").load(path)
        want = spark.read.format("delta").load(table_path(ref_cfg.output, table))
        for month, run_id in months.items():
            assert month_of(got, month).count() == reference[month].rows_written[table], \
                (table, month)
            if "run_id" in got.columns:
                ids = {r.run_id for r in month_of(got, month).select("run_id").distinct()
                       .collect()}
                assert ids == {run_id}, (table, month, ids)
            assertDataFrameEqual(month_of(got, month).drop("run_id"),
                                 month_of(want, month).drop("run_id"))
        history = DeltaTable.forPath(spark, path).history().collect()
        ops = sorted(h.operation for h in history)
        # created once although two runs found no table; one write per month, none by the
        # refused run
        assert ops == ["CREATE TABLE", "WRITE", "WRITE"], (table, ops)
    run_log = spark.read.format("delta").load(table_path(cfg.output, "run_log"))
    logged = {(str(r.snapshot_month), r.run_id, r.run_seq)
              for r in run_log.select("snapshot_month", "run_id", "run_seq").collect()}
    assert logged == {("2024-11-01", "conc-nov", 1), ("2024-12-01", winner, 1)}


def test_a_failed_create_waits_briefly_for_the_other_creators_commit(spark, monkeypatch):
    """Seen with two processes creating one table at once (no write guard): the loser's create
    fails with DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION while the winner's first commit is
    still being written. The loser waits for the table (bounded), then uses it."""
    from delta.tables import DeltaTable

    from cvm_spark.storage import delta as delta_io

    monkeypatch.setattr(delta_io, "CREATE_POLL_SECONDS", 0.0)
    answers = iter([False, False, True])
    monkeypatch.setattr(DeltaTable, "isDeltaTable", lambda s, p: next(answers))
    assert delta_io._created_elsewhere(spark, "/nowhere")
    monkeypatch.setattr(delta_io, "CREATE_WAIT_SECONDS", 0.05)
    monkeypatch.setattr(DeltaTable, "isDeltaTable", lambda s, p: False)
    started = time.monotonic()
    assert not delta_io._created_elsewhere(spark, "/nowhere")
    assert time.monotonic() - started < 5

"""The pipeline with its inputs and warehouse on a real HDFS: a MiniDFSCluster on 127.0.0.1.

``tests/minidfs.py`` starts Hadoop's MiniDFSCluster (NameNode and DataNode) in a JVM of its
own, from the ``hadoop-client-minicluster`` jar of the Hadoop version inside pyspark (fetched
once with Maven). A generated bank (300 accounts x 14 months) is copied there byte for byte,
then

* ``cvm run`` runs 2024-12 in a subprocess with ``inputs.root`` and ``output.warehouse`` on
  HDFS and ``privacy.pseudonymise`` on, while this process watches its lock and work area
  on HDFS, is refused the month's lock, runs 2024-11 (up to ``features``) on the same HDFS
  warehouse and runs 2024-12 on the local file system from a local copy of the same inputs;
* every table written to HDFS equals the local run's (``exceptAll`` both ways; run_log
  without its times), the lock and the work area are gone, every file of the run is under
  the warehouse, the tables refuse another privacy mode or key;
* a re-run of 2024-12 on HDFS replaces exactly its month (2024-11 untouched, one copy).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import minidfs
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.hdfs,
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("java") is None,
                       reason="Java is not installed: HDFS and Spark need a JVM"),
]

SNAPSHOT, OTHER = "2024-12", "2024-11"
RUN_ID = "hdfs-run"
DATABASE = "cvm_hdfs"
KEY = "hdfs-test-pseudonym-key-0123456789"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Tables of sums and means over many accounts: adding the same doubles in another order can
# change the last bits (rows may reach an aggregate in another order on another file system);
# model_metrics holds the future-value back-test's rollups of errors over accounts
SUMMED_TABLES = ("tier_summary", "kpi_summary", "model_metrics")
RUN_SECONDS = 1200        # the HDFS run in its subprocess (it competes with this process)
LOCK_SECONDS = 300        # until the subprocess holds its lock (JVM start, Delta jars)
# run_log columns that differ between the two runs: their times, and the fingerprint of the
# config, which holds inputs.root and output.warehouse (checked against each config below)
RUN_LOG_OWN = ("run_started_at", "stage_seconds", "config_fingerprint")


def _key():
    from cvm_spark.storage.privacy import PseudonymKey

    return PseudonymKey(KEY.encode(), "the test")


def _code():
    from cvm_spark.pipeline.run_log import CodeVersion

    return CodeVersion(git_commit=COMMIT)


def _fs(spark, location: str):
    from cvm_spark.common.jvm import hadoop_file

    return hadoop_file(spark, location)


def _files(spark, location: str) -> list[str]:
    """Every file under ``location`` (recursively), as paths without scheme and authority."""
    fs, path = _fs(spark, location)
    found, it = [], fs.listFiles(path, True)
    while it.hasNext():
        found.append(it.next().getPath().toUri().getPath())
    return found


def _names(spark, location: str) -> list[str]:
    """The names in a folder; [] when it does not exist."""
    fs, path = _fs(spark, location)
    if not fs.exists(path):
        return []
    return sorted(s.getPath().getName() for s in fs.listStatus(path))


@pytest.fixture(scope="module")
def dfs(spark, tmp_path_factory):
    """A MiniDFSCluster for the module; stopped (and the session's client closed) after."""
    cluster = minidfs.start(tmp_path_factory.mktemp("minidfs"))
    try:
        yield cluster
    finally:
        fs, _ = _fs(spark, cluster.uri)
        fs.close()  # drops the session's cached client: nothing retries the stopped NameNode
        cluster.stop()


@dataclass
class Bank:
    local: object          # config: inputs and warehouse on the local file system
    hdfs: object           # the same config with inputs.root and output.warehouse on HDFS
    config_file: Path      # the local config as YAML, for `cvm run`


@pytest.fixture(scope="module")
def bank(spark, make_bank, dfs) -> Bank:
    """The generated bank, its inputs copied to HDFS as they are (same bytes, same files)."""
    from banks import ONE_BACKTEST_ORIGIN, config_file

    from cvm_spark.config import load_config

    # the Delta jars this session resolved (no Ivy resolution in the child), a small driver
    jars = spark.sparkContext.getConf().get("spark.jars", "")
    cfg = make_bank(300, 14, name="hdfs", snapshot_month=SNAPSHOT,
                    privacy={"pseudonymise": True},
                    spark={"spark.jars": jars, "spark.driver.memory": "2g",
                           "spark.ui.enabled": "false"},
                    future_value=ONE_BACKTEST_ORIGIN)
    assert cfg.output.database == DATABASE
    fs, target = _fs(spark, dfs.url("/landing/bank"))
    _, source = _fs(spark, Path(cfg.inputs.root).as_uri())
    fs.copyFromLocalFile(False, True, source, target)
    path = config_file(cfg, Path(cfg.inputs.root).parent / "cvm-hdfs.yaml")
    hdfs = load_config(path, {"inputs.root": dfs.url("/landing/bank"),
                              "output.warehouse": dfs.url("/wh")})
    return Bank(cfg, hdfs, path)


@dataclass
class Watch:
    """What a thread saw on HDFS while the subprocess ran: the lock file's content and the
    run's work-area folders."""

    lock: bytes | None = None
    work: set[str] = field(default_factory=set)
    errors: list[BaseException] = field(default_factory=list)


def _watch(spark, bank: Bank, proc: subprocess.Popen, seen: Watch) -> None:
    from cvm_spark.storage.lock_store import HadoopLockStore
    from cvm_spark.storage.locking import lock_path

    store = HadoopLockStore(spark)
    lock = lock_path(bank.hdfs.output, bank.hdfs.snapshot)
    work = bank.hdfs.output.location("_work", DATABASE, SNAPSHOT, RUN_ID)
    try:
        while proc.poll() is None:
            raw = store.read(lock)
            if raw and raw.endswith(b"\n"):   # complete (HDFS shows a file being written)
                seen.lock = seen.lock or raw
            seen.work.update(_names(spark, work))
            time.sleep(1.0)
    except BaseException as exc:  # reported by the fixture, not lost in the thread
        seen.errors.append(exc)


@dataclass
class Runs:
    proc: subprocess.Popen
    out: str
    log: str
    cwd: Path
    seen: Watch
    refused: str           # the message of the lock refusal while the subprocess ran
    local: object          # RunSummary of the local run
    other: object          # RunSummary of 2024-11 on HDFS (up to features)


def _launch(bank: Bank, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "PYSPARK_SUBMIT_ARGS")}
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
               CVM_PSEUDONYM_SECRET=KEY, CVM_GIT_COMMIT=COMMIT,
               CVM_SPARK_LOG=str(cwd.parent / "spark-hdfs.log"))
    cmd = [sys.executable, "-m", "cvm_spark", "run", "--config", str(bank.config_file),
           "--master", "local[2]", "--run-id", RUN_ID,
           "--set", f"inputs.root={bank.hdfs.inputs.root}",
           "--set", f"output.warehouse={bank.hdfs.output.warehouse}"]
    out, err = cwd.parent / "hdfs-run.out", cwd.parent / "hdfs-run.log"
    with out.open("wb") as o, err.open("wb") as e:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=minidfs.die_with_parent)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(10)


def _refusal(spark, bank: Bank) -> str:
    """Try to take the month's lock on HDFS while the subprocess holds it."""
    from cvm_spark.storage.locking import SnapshotLockedError, snapshot_lock

    try:
        with snapshot_lock(bank.hdfs.output, bank.hdfs.snapshot, "intruder", spark=spark):
            pass
    except SnapshotLockedError as exc:
        return str(exc)
    return "the lock was taken"


@pytest.fixture(scope="module")
def runs(spark, bank: Bank, tmp_path_factory) -> Runs:
    """2024-12 by `cvm run` on HDFS (subprocess); meanwhile, in this process: the lock
    refused, 2024-11 on HDFS up to features, and 2024-12 on the local file system."""
    from cvm_spark.pipeline.runner import run_snapshot

    cwd = tmp_path_factory.mktemp("hdfs-cwd") / "cwd"   # the child's working folder: empty
    cwd.mkdir()
    deadline = time.monotonic() + RUN_SECONDS
    proc = _launch(bank, cwd)
    seen = Watch()
    watcher = threading.Thread(target=_watch, args=(spark, bank, proc, seen), daemon=True)
    watcher.start()
    try:
        lock_deadline = time.monotonic() + LOCK_SECONDS
        while seen.lock is None and proc.poll() is None and not seen.errors:
            assert time.monotonic() < lock_deadline, "no lock on HDFS in time"
            time.sleep(0.5)
        refused = _refusal(spark, bank) if proc.poll() is None else "the run had ended"
        other = run_snapshot(spark, bank.hdfs.with_snapshot(OTHER), run_id="hdfs-other",
                             pseudonym_key=_key(), code_version=_code(), until="features")
        local = run_snapshot(spark, bank.local, run_id=RUN_ID, pseudonym_key=_key(),
                             code_version=_code())
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except BaseException:
        _stop(proc)
        raise
    watcher.join(10)
    out = (cwd.parent / "hdfs-run.out").read_text(errors="replace")
    log = (cwd.parent / "hdfs-run.log").read_text(errors="replace")
    assert not seen.errors, seen.errors
    assert proc.returncode == 0, f"cvm run on HDFS exited {proc.returncode}:\n{log[-4000:]}"
    return Runs(proc, out, log, cwd, seen, refused, local, other)


def _month(df, month: str):
    from pyspark.sql import functions as F

    return df.where(F.col("snapshot_month") == F.lit(f"{month}-01").cast("date"))


def _same_rows(a, b) -> tuple[int, int]:
    """Rows of ``a`` missing from ``b`` and of ``b`` missing from ``a`` (with repeats)."""
    b = b.select(*a.columns)
    return a.exceptAll(b).count(), b.exceptAll(a).count()


def _differences(a, b, n: int = 3) -> str:
    """A few rows on each side that the other lacks (for an assertion message)."""
    b = b.select(*a.columns)
    return (f"only in the first: {a.exceptAll(b).limit(n).collect()}\n"
            f"only in the second: {b.exceptAll(a).limit(n).collect()}")


# ------------------------------------------------------------------------------------------
# The store's own operations, on HDFS (no pipeline run)
# ------------------------------------------------------------------------------------------

def test_lock_files_are_created_once_on_hdfs(spark, dfs):
    """``create(overwrite=false)`` decided by the NameNode: of eight threads creating one lock
    at once (each its own call into the JVM), exactly one wins and its content is kept."""
    from cvm_spark.storage.lock_store import HadoopLockStore

    store = HadoopLockStore(spark)
    path = dfs.url("/locks-race/snapshot_month=2024-12-01.lock")
    assert store.read(path) is None
    barrier, won = threading.Barrier(8), []

    def create(i: int) -> None:
        barrier.wait()
        if store.create(path, f"run {i}\n".encode()):
            won.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1, won
    assert store.read(path) == f"run {won[0]}\n".encode()
    store.delete(path)
    assert store.read(path) is None


def test_the_work_area_on_hdfs_is_removed(spark, dfs):
    """What a killed run left is removed on entry; the run's folder and the then empty
    month folder are removed on exit (HDFS keeps empty folders: they are deleted too)."""
    from cvm_spark.config import OutputConfig
    from cvm_spark.storage.workarea import WorkArea

    output = OutputConfig(warehouse=dfs.url("/wh-work"), database="cvm_work")
    month = output.location("_work", "cvm_work", "2024-12")
    fs, stale = _fs(spark, f"{month}/killed-run/facts")
    assert fs.mkdirs(stale)
    with WorkArea(spark, output, date(2024, 12, 1), "run/1") as work:
        assert not fs.exists(stale)
        back = work.materialize(spark.range(0, 50).selectExpr("id", "id * 2 AS twice"), "doubled")
        assert sorted(r.twice for r in back.collect()) == [2 * i for i in range(50)]
        assert _names(spark, work.root) == ["doubled"]
    assert _names(spark, output.location("_work", "cvm_work")) == []


# ------------------------------------------------------------------------------------------
# The pipeline on HDFS
# ------------------------------------------------------------------------------------------

def test_tables_on_hdfs_equal_the_local_run(spark, bank, runs):
    from pyspark.testing import assertDataFrameEqual

    from cvm_spark.pipeline.runner import PIPELINE_TABLES
    from cvm_spark.storage.delta import read_table

    assert "accounts scored" in runs.out
    tables = (*PIPELINE_TABLES, "run_log")
    inexact = []
    for table in tables:
        on_hdfs = _month(read_table(spark, bank.hdfs.output, table), SNAPSHOT)
        local = read_table(spark, bank.local.output, table)
        if table == "run_log":
            for df, cfg in ((on_hdfs, bank.hdfs), (local, bank.local)):
                prints = {r.config_fingerprint for r in df.select("config_fingerprint").collect()}
                assert prints == {cfg.fingerprint()}, prints
            on_hdfs, local = on_hdfs.drop(*RUN_LOG_OWN), local.drop(*RUN_LOG_OWN)
        else:
            assert on_hdfs.count() == runs.local.rows_written[table] > 0, table
        assert sorted(on_hdfs.columns) == sorted(local.columns), table
        if _same_rows(on_hdfs, local) != (0, 0):
            inexact.append(table)
            assert table in SUMMED_TABLES, f"{table}\n{_differences(on_hdfs, local)}"
            # the same rows up to the last bits of sums of doubles
            assertDataFrameEqual(on_hdfs, local.select(*on_hdfs.columns), rtol=1e-9, atol=1e-9)
        if table in ("features", "rfm", "value_scores", "tiers", "campaign_targets"):
            assert "account_key" in on_hdfs.columns and "account_id" not in on_hdfs.columns
    print(f"tables equal only up to summation order: {inexact or 'none'}")
    times = {}
    for name, output in (("hdfs", bank.hdfs.output), ("local", bank.local.output)):
        log = _month(read_table(spark, output, "run_log"), SNAPSHOT)
        times[name] = {r.stage: r.stage_seconds for r in log.where("item_kind = 'stage'")
                       .select("stage", "stage_seconds").collect()}
    print("seconds of stages (runs at the same time): " + ", ".join(
        f"{s} {times['hdfs'][s]:.1f} / {times['local'].get(s, 0):.1f}" for s in times["hdfs"]))
    print(f"total: HDFS {sum(times['hdfs'].values()):.0f}s, "
          f"local {sum(times['local'].values()):.0f}s")


def test_the_month_lock_lives_on_hdfs(spark, bank, runs, caplog):
    """The subprocess held ``<warehouse>/_locks/<db>/snapshot_month=2024-12-01.lock`` on HDFS
    (this process was refused it, naming the holder); it is gone after the run, and a lock
    left by a dead run is taken over."""
    from cvm_spark.storage.lock_holder import LockHolder
    from cvm_spark.storage.lock_store import HadoopLockStore
    from cvm_spark.storage.locking import lock_path, snapshot_lock

    path = lock_path(bank.hdfs.output, bank.hdfs.snapshot)
    assert path == f"{bank.hdfs.output.warehouse}/_locks/{DATABASE}/snapshot_month=2024-12-01.lock"
    holder = LockHolder.from_json(runs.seen.lock)
    assert (holder.run_id, holder.pid) == (RUN_ID, runs.proc.pid)
    assert f"is locked by run {RUN_ID} " in runs.refused, runs.refused
    assert f"pid {runs.proc.pid}" in runs.refused and "in progress on this host" in runs.refused
    store = HadoopLockStore(spark)
    assert store.read(path) is None
    assert _names(spark, f"{bank.hdfs.output.warehouse}/_locks/{DATABASE}") == []
    # the run's process has ended: its lock, put back, is stale and is taken over
    assert store.create(path, runs.seen.lock)
    with caplog.at_level("WARNING", "cvm_spark"), \
            snapshot_lock(bank.hdfs.output, bank.hdfs.snapshot, "next", spark=spark) as me:
        assert LockHolder.from_json(store.read(path)) == me
    assert "its process is gone" in caplog.text
    assert store.read(path) is None


def test_the_work_area_of_the_runs_is_removed(spark, bank, runs):
    """The subprocess materialised its intermediate frames under ``_work`` on HDFS, and
    nothing of either month's run is left there."""
    assert {"validated_accounts", "facts", "model_base"} <= runs.seen.work, runs.seen.work
    assert _names(spark, bank.hdfs.output.location("_work", DATABASE)) == []


def test_every_write_stays_inside_the_warehouse(spark, dfs, bank, runs):
    """All the HDFS run wrote is under ``output.warehouse`` (the catalog's folders too), and
    the local working folder of `cvm run` stayed empty (no ./spark-warehouse)."""
    from cvm_spark.config import ConfigError

    files = _files(spark, dfs.url("/"))
    outside = [f for f in files if not f.startswith(("/landing/bank/", "/wh/", "/wh-work/",
                                                     "/locks-race/"))]
    assert outside == []
    assert any(f.startswith(f"/wh/{DATABASE}/tiers/_delta_log/") for f in files)
    assert sorted(p.name for p in runs.cwd.iterdir()) == []
    assert _names(spark, bank.hdfs.output.location("_catalog")) == [f"{DATABASE}.db"]
    with pytest.raises(ConfigError, match="plain name"):
        bank.hdfs.output.location("..", "elsewhere")


def test_the_tables_on_hdfs_refuse_another_privacy_mode(spark, bank, runs):
    from cvm_spark.pipeline.runner import PIPELINE_TABLES
    from cvm_spark.storage.privacy import PseudonymKey, WarehouseModeError, check_warehouse

    check_warehouse(spark, bank.hdfs.output, PIPELINE_TABLES, _key())  # every table: this key
    with pytest.raises(WarehouseModeError, match="holds pseudonymous account keys"):
        check_warehouse(spark, bank.hdfs.output, PIPELINE_TABLES, None)
    with pytest.raises(WarehouseModeError, match="another pseudonym key"):
        check_warehouse(spark, bank.hdfs.output, PIPELINE_TABLES,
                        PseudonymKey(b"another-key-0123456789", "the test"))


def test_a_rerun_on_hdfs_replaces_exactly_its_month(spark, bank, runs):
    """2024-12 again (up to features): 2024-11 is untouched, 2024-12 is there once, equal to
    the local run, and the tables the re-run does not write keep their version."""
    from delta.tables import DeltaTable

    from cvm_spark.pipeline.runner import PIPELINE_TABLES, run_snapshot
    from cvm_spark.storage.delta import read_table, table_path

    def version(table: str) -> int:
        history = DeltaTable.forPath(spark, table_path(bank.hdfs.output, table)).history(1)
        return history.collect()[0].version

    before = {t: version(t) for t in (*PIPELINE_TABLES, "run_log")}
    rerun = run_snapshot(spark, bank.hdfs, run_id=RUN_ID, pseudonym_key=_key(),
                         code_version=_code(), until="features")
    for table in ("quarantine", "features"):
        path = table_path(bank.hdfs.output, table)
        assert version(table) == before[table] + 1, table
        now = read_table(spark, bank.hdfs.output, table)
        then = spark.read.format("delta").option("versionAsOf", before[table]).load(path)
        assert now.count() == then.count() == (runs.other.rows_written[table]
                                               + runs.local.rows_written[table])
        assert _same_rows(_month(now, OTHER), _month(then, OTHER)) == (0, 0), table
        assert _month(now, SNAPSHOT).count() == rerun.rows_written[table], table
        local = read_table(spark, bank.local.output, table)
        assert _same_rows(_month(now, SNAPSHOT), local) == (0, 0), table
        last = DeltaTable.forPath(spark, path).history(1).collect()[0]
        assert last.operation == "WRITE" and last.operationParameters["mode"] == "Overwrite"
        assert "2024-12-01" in last.operationParameters["predicate"], last.operationParameters
    for table, v in before.items():
        if table not in ("quarantine", "features"):
            assert version(table) == v, table

"""The pipeline on a real standalone cluster: a master and two workers on 127.0.0.1.

The job is submitted with ``scripts/submit.sh`` in client mode and its tables are compared
with a local-mode run of the same config and snapshot.

How the test knows executors run the shipped zip and not the checkout or the editable
install: every Python process of the submitted applications is started with ``python -S``
(no ``site``: site-packages and its ``.pth`` files, including the editable install's finder,
are never loaded) and from an environment without ``PYTHONPATH``. The executors then see
only what Spark puts on their path (pyspark.zip, py4j and the ``--py-files``), so
``cvm_spark`` can only come from the zip, and numpy/scipy/yaml are not importable there at
all (which also shows the executors need nothing beyond pyspark). The driver gets the
documented driver dependencies (numpy, scipy, pyyaml) from a folder of links, not from
site-packages. A probe application, submitted with the same options, checks this from inside
the driver and four executor tasks: ``cvm_spark.__file__`` lies inside the zip, the
interpreter runs without ``site``, and with the zip's ``sys.path`` entry removed no finder can
locate ``cvm_spark``.

A third run of the pipeline on the cluster loses an executor: its JVM is killed (SIGKILL)
while a task of the features stage runs on it. The run must complete with the clean cluster
run's tables and one set of run_log rows, and the event log must show the lost task re-run
(tests/executor_fault.py finds the moment and reads the log).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("java") is None,
                       reason="Java is not installed: a standalone Spark cluster needs a JVM"),
]

SNAPSHOT = "2024-12"
RUN_ID = "cluster-test"
DATABASE = "cvm_cluster"
CLUSTER_START_SECONDS = 90
PROBE_SECONDS = 240
PIPELINE_SECONDS = 1200
# Modules the driver imports besides pyspark and delta (see dist/requirements-driver.txt).
DRIVER_MODULES = ("numpy", "numpy.libs", "scipy", "scipy.libs", "yaml", "_yaml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(tmp: Path) -> dict[str, str]:
    """The environment of the daemons and of spark-submit: nothing that points Python at the
    checkout or the editable install, Spark's logs and scratch space under ``tmp``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
                        "PYSPARK_SUBMIT_ARGS", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET",
                        "SPARK_HOME", "SPARK_CONF_DIR")}
    conf_dir = tmp / "spark-conf"  # empty: no spark-defaults.conf from anywhere else
    conf_dir.mkdir(exist_ok=True)
    env.update(SPARK_LOCAL_IP="127.0.0.1", SPARK_CONF_DIR=str(conf_dir),
               SPARK_DAEMON_MEMORY="256m", SPARK_LOCAL_DIRS=str(tmp / "local"))
    return env


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return f"({path} missing)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session`` and everything in its group."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Cluster:
    """A running standalone master with its workers."""

    tmp: Path
    env: dict[str, str]
    master_url: str
    webui: str
    worker_dirs: list[Path]
    procs: list[tuple[subprocess.Popen, Path]] = field(default_factory=list)

    def state(self) -> dict:
        """The master's status (``/json/``), fetched without any HTTP proxy."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.webui}/json/", timeout=5) as resp:
            return json.load(resp)

    def logs(self) -> str:
        return "\n".join(f"--- {log}\n{_tail(log)}" for _, log in self.procs)


try:  # looked up here, not in the forked child (which must not import or lock anything)
    _PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _PRCTL = None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the test process dies without teardown
    (Linux only), so no daemon outlives a killed test run."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # so fixture teardown still runs


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Master and two workers (1 core, 1 GB each); stopped whatever happens."""
    import pyspark

    tmp = tmp_path_factory.mktemp("cluster")
    env = _clean_env(tmp)
    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    port, webui_port = _free_port(), _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    cl = Cluster(tmp, env, master_url, f"http://127.0.0.1:{webui_port}",
                 [tmp / "worker-1", tmp / "worker-2"])
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        cl.procs.append((_start(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(port), "--webui-port", str(webui_port)],
            env, tmp / "master.log"), tmp / "master.log"))
        for i, work_dir in enumerate(cl.worker_dirs, start=1):
            work_dir.mkdir()
            log = tmp / f"worker-{i}.log"
            cl.procs.append((_start(
                [spark_class, "org.apache.spark.deploy.worker.Worker", master_url,
                 "--host", "127.0.0.1", "--cores", "1", "--memory", "1g",
                 "--work-dir", str(work_dir), "--webui-port", str(_free_port())],
                env, log), log))
        request.getfixturevalue("spark")  # the local session's JVM starts meanwhile
        deadline = time.monotonic() + CLUSTER_START_SECONDS
        alive = 0
        while alive < 2:
            for proc, log in cl.procs:
                if proc.poll() is not None:
                    pytest.fail(f"{log.stem} exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"only {alive} of 2 workers registered with {master_url} within "
                            f"{CLUSTER_START_SECONDS}s\n{cl.logs()}")
            with contextlib.suppress(OSError):  # the master's web UI is not up yet
                alive = cl.state().get("aliveworkers", 0)
            time.sleep(1)
        yield cl
    finally:
        for proc, _ in reversed(cl.procs):
            _stop(proc)
        signal.signal(signal.SIGTERM, previous)


def spark_minor() -> str:
    import pyspark

    return ".".join(pyspark.__version__.split(".")[:2])


def _python_wrapper(path: Path, extra_path: Path | None = None) -> Path:
    """A ``python -S`` launcher: no site-packages, no ``.pth`` files (no editable install).

    Each start is logged to ``<path>.calls`` (working directory and PYTHONPATH)."""
    lines = ["#!/bin/sh", f'echo "$(pwd) PYTHONPATH=$PYTHONPATH" >> "{path}.calls"']
    if extra_path is not None:
        lines.append(f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{extra_path}"; export PYTHONPATH')
    lines.append(f'exec "{sys.executable}" -S "$@"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def pythons(cluster: Cluster) -> dict[str, Path]:
    """Interpreters for the submitted apps: executors get bare Python (pyspark comes from
    Spark's own PYTHONPATH); the driver also gets numpy, scipy and pyyaml from links."""
    import numpy

    site = Path(numpy.__file__).resolve().parents[1]
    deps = cluster.tmp / "driver-deps"
    deps.mkdir()
    for name in DRIVER_MODULES:
        if (site / name).exists():
            (deps / name).symlink_to(site / name)
    return {"executor": _python_wrapper(cluster.tmp / "python-executor"),
            "driver": _python_wrapper(cluster.tmp / "python-driver", deps)}


@pytest.fixture(scope="module")
def inputs(make_bank) -> Path:
    """A small generated bank and a config file pointing at it (written once)."""
    from banks import ONE_BACKTEST_ORIGIN, config_file

    # the same partitioning in both runs (local[2] vs two 1-core executors), so
    # partition-dependent steps (k-means|| initialisation, quantile sketches) match
    cfg = make_bank(300, 14, name="cluster", snapshot_month=SNAPSHOT,
                    spark={"spark.sql.shuffle.partitions": "2",
                           "spark.default.parallelism": "2"},
                    future_value=ONE_BACKTEST_ORIGIN)
    assert cfg.output.database == DATABASE
    return config_file(cfg, Path(cfg.inputs.root).parent / "cvm-cluster.yaml")


def _submit_options(cluster: Cluster, pythons: dict[str, Path],
                    ui_port: int | None = None) -> list[str]:
    """spark-submit options of the test's applications; the driver's UI (and its REST API)
    only with ``ui_port``."""
    ui = ["spark.ui.enabled=false"] if ui_port is None else \
        ["spark.ui.enabled=true", f"spark.ui.port={ui_port}"]
    return ["--master", cluster.master_url,
            "--driver-memory", "2g", "--executor-memory", "1g", "--executor-cores", "1",
            "--conf", "spark.cores.max=2",
            # start only when both executors are there, so both take part
            "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
            "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=120s",
            "--conf", f"spark.pyspark.python={pythons['executor']}",
            "--conf", f"spark.pyspark.driver.python={pythons['driver']}",
            # (no spark.sql.warehouse.dir: cvm puts the catalog's folder in
            # <warehouse>/_catalog, and its session setting wins over --conf)
            *(a for conf in ui for a in ("--conf", conf))]


def _launch(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own process group; stdout (where spark-submit also puts the
    Python driver's output and log) to ``<log>.out``, stderr to ``log``."""
    with log.open("wb") as err, log.with_suffix(".out").open("wb") as out:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)


def _finish(proc: subprocess.Popen, log: Path, timeout: float, what: str) -> str:
    """Wait for ``proc``; kill its process group and fail after ``timeout`` seconds or on a
    non-zero exit, showing both logs. Returns its stdout."""
    out = log.with_suffix(".out")
    try:
        proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        _stop(proc)
        pytest.fail(f"{what} did not finish within the time box; last output:\n"
                    f"{_tail(log, 20)}\n{_tail(out, 20)}")
    finally:
        _stop(proc)
    assert proc.returncode == 0, \
        f"{what} exited with {proc.returncode}:\n{_tail(log, 40)}\n{_tail(out, 60)}"
    return out.read_text(errors="replace")


@dataclass
class Probe:
    """The probe application, launched and not yet waited for."""

    proc: subprocess.Popen
    log: Path
    deadline: float


@pytest.fixture(scope="module")
def probe(request: pytest.FixtureRequest, cluster: Cluster, pythons: dict[str, Path]):
    """Submit tests/cluster_probe.py with the pipeline's options (through the same command
    builder as ``cvm submit``), then generate the sample while it runs."""
    from cvm_spark.serve.submit import build_dist, spark_submit_command

    job = ROOT / "tests" / "cluster_probe.py"
    dist = build_dist(cluster.tmp / "dist-probe", ROOT / "conf" / "cvm.yaml")
    cmd = spark_submit_command(dist, [], ROOT / "conf" / "cvm.yaml",
                               spark_submit_args=_submit_options(cluster, pythons), job=job,
                               app_name="cvm-probe")
    cmd = cmd[:cmd.index(str(job)) + 1]  # the probe takes no arguments
    log = cluster.tmp / "probe.log"
    running = Probe(_launch(cmd, cluster.env, log), log, time.monotonic() + PROBE_SECONDS)
    try:
        request.getfixturevalue("inputs")
        yield running
    finally:
        _stop(running.proc)


def test_executors_import_the_shipped_zip(cluster, probe):
    from cvm_spark.serve.submit import zip_name

    out = _finish(probe.proc, probe.log, probe.deadline - time.monotonic(), "the probe app")
    line = next(x for x in out.splitlines() if x.startswith("PROBE "))
    report = json.loads(line[len("PROBE "):])
    print(json.dumps(report, indent=1))  # shown with -rA or on failure
    driver, executors = report["driver"], report["executors"]

    inside_zip = f"{os.sep}{zip_name()}{os.sep}cvm_spark{os.sep}__init__.py"
    # the driver imports the copy spark-submit made of the zip (SparkFiles root directory)
    assert driver["cvm_spark"].endswith(inside_zip), driver
    assert driver["no_site"] == 1 and driver["without_zip"] is False, driver
    assert driver["numpy"] and driver["scipy"] and driver["yaml"], driver  # documented deps
    # delta's Python API came inside the Delta jar that --packages fetched
    assert f"io.delta_delta-spark_{spark_minor()}_2.13-" in driver["delta"], driver
    assert f".jar{os.sep}delta{os.sep}__init__.py" in driver["delta"], driver
    assert len(executors) == 4
    for ex in executors:
        assert ex["no_site"] == 1, ex
        assert ex["without_zip"] is False, ex  # nothing else could provide cvm_spark
        assert not (ex["numpy"] or ex["scipy"] or ex["yaml"]), ex  # bare: pyspark only
        # the zip was fetched into the executor's working directory under a worker's dir
        assert ex["cvm_spark"].endswith(inside_zip), ex
        assert Path(ex["cwd"], ex["cvm_spark"]).resolve().is_relative_to(ex["cwd"]), ex
    worker_of = {str(w): w.name for w in cluster.worker_dirs}
    used = {name for ex in executors for d, name in worker_of.items() if ex["cwd"].startswith(d)}
    assert used == {"worker-1", "worker-2"}, executors


@dataclass
class CleanRuns:
    """The pipeline run on the cluster (submitted) and, meanwhile, in local mode."""

    local_cfg: Any
    cluster_cfg: Any
    summary: Any        # the local run's RunSummary
    out: str            # the cluster driver's stdout
    app: dict           # the cluster run's application, as the master lists it
    seconds: float      # the cluster run's wall time (the local run ran meanwhile)


@pytest.fixture(scope="module")
def clean_runs(spark, cluster: Cluster, pythons: dict[str, Path], inputs: Path) -> CleanRuns:
    """Submit the pipeline to the cluster; run it in local mode in this process meanwhile."""
    from cvm_spark.config import load_config
    from cvm_spark.pipeline.runner import run_snapshot

    wh_cluster, wh_local = cluster.tmp / "wh-cluster", cluster.tmp / "wh-local"
    cmd = _pipeline_command(cluster, _submit_options(cluster, pythons), inputs, wh_cluster)
    log = cluster.tmp / "submit.log"
    start = time.monotonic()
    proc = _launch(cmd, cluster.env, log)
    try:  # the local-mode reference runs meanwhile, in this process
        local_cfg = load_config(inputs, {"output.warehouse": str(wh_local)})
        summary = run_snapshot(spark, local_cfg, run_id=RUN_ID)
    except BaseException:
        _stop(proc)
        raise
    out = _finish(proc, log, start + PIPELINE_SECONDS - time.monotonic(), "scripts/submit.sh")
    seconds = time.monotonic() - start
    apps = [a for a in cluster.state()["completedapps"] if a["name"] == "cvm-run"]
    assert [a["state"] for a in apps] == ["FINISHED"], apps  # it ran on the standalone master
    return CleanRuns(local_cfg, load_config(inputs, {"output.warehouse": str(wh_cluster)}),
                     summary, out, apps[0], seconds)


def _pipeline_command(cluster: Cluster, options: list[str], inputs: Path,
                      warehouse: Path) -> list[str]:
    return ["bash", str(ROOT / "scripts" / "submit.sh"), "--dist", str(cluster.tmp / "dist"),
            *options, "--", "run", "--config", str(inputs), "--run-id", RUN_ID,
            "--set", f"output.warehouse={warehouse}"]


def test_cluster_run_matches_local_run(spark, pythons, clean_runs):
    from pyspark.testing import assertDataFrameEqual

    from cvm_spark.pipeline.runner import PIPELINE_TABLES
    from cvm_spark.storage.delta import table_path

    runs = clean_runs
    assert "accounts scored" in runs.out
    calls = Path(f"{pythons['executor']}.calls")
    started = [c for c in calls.read_text().splitlines() if runs.app["id"] in c] \
        if calls.is_file() else []
    print(f"executor Python processes started by the pipeline: {len(started)}; "
          f"cluster run {runs.seconds:.0f}s (the local run meanwhile)")
    assert runs.summary.rows_written["rfm"] > 250
    for table in PIPELINE_TABLES:
        local = spark.read.format("delta").load(table_path(runs.local_cfg.output, table))
        on_cluster = spark.read.format("delta").load(table_path(runs.cluster_cfg.output, table))
        assert on_cluster.count() == runs.summary.rows_written[table] > 0, table
        assertDataFrameEqual(on_cluster, local)


# the pipeline stage in which an executor is killed (its Spark jobs are described "cvm features")
FAULT_STAGES = ("features",)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the executor's process is found in /proc")
def test_lost_executor_mid_features_run_completes_once(spark, cluster, pythons, inputs,
                                                        clean_runs):
    """kill -9 of one worker's executor JVM while a task of the features stage runs on it:
    Spark re-runs the lost task, the worker starts a replacement executor, the run
    completes, every table equals the clean cluster run's and run_log has the run once.

    The kill is timed from the driver's REST API; what Spark did is read from the
    application's event log afterwards (tests/executor_fault.py)."""
    from executor_fault import EXECUTOR_CLASS, executor_loss, kill_executor_during

    from cvm_spark.pipeline.profiling import read_events

    warehouse, events = cluster.tmp / "wh-faulted", cluster.tmp / "events-faulted"
    events.mkdir()
    ui_port = _free_port()
    options = [*_submit_options(cluster, pythons, ui_port),
               *(a for conf in ("spark.eventLog.enabled=true", f"spark.eventLog.dir={events}",
                                "spark.eventLog.compress=false",
                                "spark.eventLog.rolling.enabled=false")
                 for a in ("--conf", conf))]
    log = cluster.tmp / "faulted.log"
    start = time.monotonic()
    proc = _launch(_pipeline_command(cluster, options, inputs, warehouse), cluster.env, log)
    try:
        kill = kill_executor_during(f"http://127.0.0.1:{ui_port}", FAULT_STAGES, proc,
                                    log.with_suffix(".out"), start + PIPELINE_SECONDS)
    except BaseException:
        _stop(proc)
        raise
    out = _finish(proc, log, start + PIPELINE_SECONDS - time.monotonic(), "the faulted run")
    seconds = time.monotonic() - start
    assert "accounts scored" in out

    # the killed process was an executor of this application, launched by one of our workers
    app = next(a for a in cluster.state()["completedapps"] if a["id"] == kill.app_id)
    assert app["name"] == "cvm-run" and app["state"] == "FINISHED", app
    assert kill.app_id != clean_runs.app["id"]
    assert EXECUTOR_CLASS in kill.command, kill.command
    workers = {p.pid: log_ for p, log_ in cluster.procs[1:]}
    assert kill.parent_pid in workers, (kill.parent_pid, workers)
    assert not Path(f"/proc/{kill.pid}").exists()

    # Spark lost the executor with a task of the stage running on it, re-ran that task and
    # got a replacement executor from the same worker, which then ran tasks
    loss = executor_loss(read_events(events / kill.app_id))
    assert list(loss.removed) == [kill.executor_id], loss.removed
    reason, removed_at = loss.removed[kill.executor_id]
    lost = loss.failed(kill.executor_id)
    replacements = [e for e, added_at in loss.added.items() if added_at > removed_at]
    worker = workers[kill.parent_pid]
    tasks_per_executor = {e: loss.tasks_on(e) for e in loss.added}
    print(f"killed executor {kill.executor_id} (pid {kill.pid}, {worker.stem}) "
          f"{kill.at_seconds:.1f}s into the run, in {kill.cvm_stage} (Spark stages "
          f"{kill.spark_stages}, {kill.active_tasks} task(s) running on it); removed: "
          f"{reason!r}; lost tasks: {lost}; their re-runs: {[loss.rerun(t) for t in lost]}; "
          f"replacements: {replacements}; tasks per executor: {tasks_per_executor}; "
          f"re-submitted stages: {loss.resubmitted}")
    assert reason == "Command exited with code 137", reason  # 128 + SIGKILL
    assert lost, f"no task failed on executor {kill.executor_id}"
    for task in lost:
        assert task.cvm_stage in FAULT_STAGES and task.reason.startswith(
            "ExecutorLostFailure"), task
        assert loss.rerun(task) is not None, f"{task} was not re-run"
    assert len(replacements) == 1, loss.added
    assert loss.workers[replacements[0]] == loss.workers[kill.executor_id], loss.workers
    assert f"launch executor {kill.app_id}/{replacements[0]} " in worker.read_text()
    assert loss.tasks_on(replacements[0]) > 0

    _check_tables_and_run_log(spark, inputs, warehouse, clean_runs)
    replaced = loss.added[replacements[0]] - removed_at
    print(f"faulted run {seconds:.0f}s, clean cluster run {clean_runs.seconds:.0f}s (the "
          f"local run meanwhile); the replacement executor registered {replaced:.1f}s after "
          f"the loss")


def _check_tables_and_run_log(spark, inputs: Path, warehouse: Path, clean: CleanRuns) -> None:
    """Every table of the run into ``warehouse`` equals the clean cluster run's; its run_log
    has the run once (one run id, run_seq 1, each item once) with the clean run's rows but
    for start time, stage times and config fingerprint (which covers the warehouse path);
    no lock or work area is left."""
    from pyspark.sql import functions as F
    from pyspark.testing import assertDataFrameEqual

    from cvm_spark.config import load_config
    from cvm_spark.pipeline.runner import PIPELINE_TABLES
    from cvm_spark.storage.delta import table_path

    cfg = load_config(inputs, {"output.warehouse": str(warehouse)})

    def read(c, table: str):
        return spark.read.format("delta").load(table_path(c.output, table))

    for table in PIPELINE_TABLES:
        assertDataFrameEqual(read(cfg, table), read(clean.cluster_cfg, table))
    faulted, reference = read(cfg, "run_log"), read(clean.cluster_cfg, "run_log")
    assert [tuple(r) for r in faulted.select("run_id", "run_seq").distinct().collect()] \
        == [(RUN_ID, 1)]
    assert faulted.groupBy("item_kind", "item_name").count() \
        .where(F.col("count") > 1).count() == 0
    varying = ("run_started_at", "stage_seconds", "config_fingerprint")
    assertDataFrameEqual(faulted.drop(*varying), reference.drop(*varying))
    # the month's lock released (the tables' write-guard files stay, empty), work area gone
    assert not list((warehouse / "_locks").rglob("snapshot_month=*.lock"))
    assert not list((warehouse / "_work").rglob("*.parquet"))
    seconds = {name: {r["item_name"]: round(r["stage_seconds"], 1) for r in df.where(
        F.col("item_kind") == "stage").collect()} for name, df in
        (("faulted", faulted), ("clean", reference))}
    print(f"stage seconds: {seconds}")


def test_the_kill_watch_fails_rather_than_pass_silently(tmp_path):
    """The lost-executor test cannot pass without a kill: the watch raises when the stage has
    passed, or the driver has exited, before a task of the stage was seen running."""
    from executor_fault import kill_executor_during

    nobody = f"http://127.0.0.1:{_free_port()}"   # no UI answers there
    driver_log = tmp_path / "driver.out"
    driver_log.write_text("... INFO cvm_spark.pipeline.runner: stage features: done in 9.9s\n")
    driver = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(AssertionError, match="stage features ended before a task of it "
                           r"was seen running.*never answered"):
            kill_executor_during(nobody, FAULT_STAGES, driver, driver_log,
                                 time.monotonic() + 30)
    finally:
        driver.kill()
        driver.wait()
    with pytest.raises(AssertionError, match=r"the driver exited \(-9\) before an executor"):
        kill_executor_during(nobody, FAULT_STAGES, driver, tmp_path / "none",
                             time.monotonic() + 30)

"""Lose an executor of a running application on the standalone cluster of tests/test_cluster.py.

:func:`kill_executor_during` watches the driver's REST API (``/api/v1`` on its UI port) and,
as soon as a Spark stage of the chosen pipeline stage (its jobs are described
``cvm <stage>``, :func:`cvm_spark.pipeline.profiling.tag_stage`) is active and an executor
is running tasks, freezes that executor's JVM (``CoarseGrainedExecutorBackend`` started by
a worker; found in ``/proc`` by its command line, which names the application and the
executor id) and sends it ``SIGKILL`` if the driver still counts a task running on it.
:func:`executor_loss` reads back from the application's event log what Spark did about it:
the executor removed and why, executors added, task attempts, stages re-submitted.

Not collected by pytest (no ``test_`` prefix). Linux only (``/proc``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def rest(url: str) -> Any:
    """GET a JSON document, without any HTTP proxy."""
    with _NO_PROXY.open(url, timeout=5) as resp:
        return json.load(resp)


def _arg(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd[:-1] else None


def executor_processes(app_id: str) -> dict[str, tuple[int, list[str]]]:
    """The live executor JVMs of application ``app_id`` on this machine: executor id ->
    (pid, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if EXECUTOR_CLASS in cmd and _arg(cmd, "--app-id") == app_id:
            found[_arg(cmd, "--executor-id") or "?"] = (int(entry.name), cmd)
    return found


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (from ``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


@dataclass
class Kill:
    """What was killed, and what the driver showed at that moment."""

    app_id: str
    executor_id: str
    pid: int
    parent_pid: int          # the worker JVM that launched the executor
    worker_url: str | None   # --worker-url of the executor's command line
    command: list[str]
    cvm_stage: str           # the pipeline stage whose Spark stage was active
    spark_stages: list[str]  # active Spark stages of it ("id.attempt")
    active_tasks: int        # tasks the driver counted running on the executor
    at_seconds: float        # since the watch began
    polls: int


def _poll(api: str, stages: tuple[str, ...]) -> tuple[str, list[str], dict[str, int]] | None:
    """(pipeline stage, its active Spark stages, executor id -> active tasks) when a Spark
    stage of one of ``stages`` is active, else None."""
    descriptions = {f"cvm {s}": s for s in stages}
    active = [s for s in rest(f"{api}/stages?status=active")
              if s.get("description") in descriptions]
    if not active:
        return None
    busy = {e["id"]: e["activeTasks"] for e in rest(f"{api}/executors")
            if e["id"] != "driver" and e["activeTasks"] > 0}
    return (descriptions[active[0]["description"]],
            [f"{s['stageId']}.{s['attemptId']}" for s in active], busy)


def _active_tasks(api: str, executor_id: str) -> int:
    try:
        return next((e["activeTasks"] for e in rest(f"{api}/executors")
                     if e["id"] == executor_id), 0)
    except (OSError, ValueError):
        return 0


def kill_executor_during(ui_url: str, stages: tuple[str, ...], driver: subprocess.Popen,
                         driver_log: Path, deadline: float, poll_seconds: float = 0.1,
                         settle_seconds: float = 0.5) -> Kill:
    """SIGKILL one executor of the application behind ``ui_url`` while one of its tasks
    runs in a Spark stage of a pipeline stage in ``stages``.

    Polls every ``poll_seconds``. When the driver shows such a stage active and an executor
    with running tasks, the executor is frozen (SIGSTOP: it can neither finish a task nor
    report one finished), and killed only if after ``settle_seconds`` the driver still counts
    a task running on it (else it is resumed with SIGCONT and the watch goes on): so the
    kill loses a running task, not just an idle executor.

    Raises AssertionError (with the reason) when the driver exits first, when its log
    ``driver_log`` says the last of ``stages`` is done before such a kill, or at
    ``deadline`` (``time.monotonic``).
    """
    start, polls, api = time.monotonic(), 0, None
    passed = f"stage {stages[-1]}: done"
    while True:
        if driver.poll() is not None:
            raise AssertionError(f"the driver exited ({driver.returncode}) before an executor "
                                 f"was killed in stage(s) {stages}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no task of stage(s) {stages} seen running within the time "
                                 f"box ({polls} polls of {ui_url})")
        if driver_log.is_file() and passed in driver_log.read_text(errors="replace"):
            raise AssertionError(
                f"stage {stages[-1]} ended before a task of it was seen running on an "
                f"executor ({polls} polls, every {poll_seconds}s): too late to kill an "
                "executor in it" + ("" if api else f"; {ui_url} never answered"))
        polls += 1
        try:
            if api is None:
                apps = rest(f"{ui_url}/api/v1/applications")
                api = f"{ui_url}/api/v1/applications/{apps[0]['id']}" if apps else None
            seen = _poll(api, stages) if api else None
        except (OSError, ValueError):  # the UI is not up yet (URLError is an OSError)
            seen = None
        if seen is not None and seen[2]:
            app_id = api.rsplit("/", 1)[1]
            procs = executor_processes(app_id)
            for executor_id in seen[2]:
                if executor_id not in procs:
                    continue
                pid, cmd = procs[executor_id]
                os.kill(pid, signal.SIGSTOP)
                time.sleep(settle_seconds)
                tasks = _active_tasks(api, executor_id)
                if tasks > 0:
                    ppid = parent_pid(pid)
                    os.kill(pid, signal.SIGKILL)
                    return Kill(app_id, executor_id, pid, ppid, _arg(cmd, "--worker-url"),
                                cmd, seen[0], seen[1], tasks, time.monotonic() - start, polls)
                os.kill(pid, signal.SIGCONT)
        time.sleep(poll_seconds)


@dataclass(frozen=True)
class TaskEnd:
    """One ended task attempt, from the event log."""

    cvm_stage: str     # the pipeline stage of its job
    spark_stage: int
    index: int         # the partition's index in the stage
    attempt: int
    executor: str
    reason: str        # "Success", or "ExecutorLostFailure: <loss reason>", ...
    launched: float    # epoch seconds
    seconds: float     # launch to finish


@dataclass
class ExecutorLoss:
    """What the event log of an application says about its executors and re-run work."""

    added: dict[str, float] = field(default_factory=dict)       # executor id -> epoch s
    removed: dict[str, tuple[str, float]] = field(default_factory=dict)  # -> (reason, s)
    workers: dict[str, str] = field(default_factory=dict)      # executor id -> worker UI
    tasks: list[TaskEnd] = field(default_factory=list)
    resubmitted: list[tuple[str, str]] = field(default_factory=list)  # (stage, "id.attempt")

    def failed(self, executor: str) -> list[TaskEnd]:
        """The task attempts that failed on ``executor``."""
        return [t for t in self.tasks if t.executor == executor and t.reason != "Success"]

    def rerun(self, task: TaskEnd) -> TaskEnd | None:
        """The successful later attempt of a failed task (same Spark stage and partition)."""
        return next((t for t in self.tasks if t.spark_stage == task.spark_stage
                     and t.index == task.index and t.reason == "Success"
                     and t.launched >= task.launched), None)

    def tasks_on(self, executor: str) -> int:
        return sum(t.executor == executor for t in self.tasks)


def executor_loss(events: Iterable[dict[str, Any]]) -> ExecutorLoss:
    """Executors added and removed, task attempts and re-submitted stages, from the events
    of an event log (:func:`cvm_spark.pipeline.profiling.read_events`)."""
    from cvm_spark.pipeline.profiling import STAGE_PROPERTY, UNTAGGED

    out, stage_of = ExecutorLoss(), {}
    for e in events:
        kind = e.get("Event")
        if kind == "SparkListenerJobStart":
            name = (e.get("Properties") or {}).get(STAGE_PROPERTY) or UNTAGGED
            for info in e.get("Stage Infos", []):
                stage_of.setdefault(info["Stage ID"], name)
        elif kind == "SparkListenerExecutorAdded":
            out.added[e["Executor ID"]] = e["Timestamp"] / 1000
            logs = e["Executor Info"].get("Log Urls", {}).get("stderr", "")
            out.workers[e["Executor ID"]] = logs.split("/logPage")[0]
        elif kind == "SparkListenerExecutorRemoved":
            out.removed[e["Executor ID"]] = (e.get("Removed Reason", ""), e["Timestamp"] / 1000)
        elif kind == "SparkListenerStageSubmitted":
            info = e["Stage Info"]
            if info.get("Stage Attempt ID", 0) > 0:
                out.resubmitted.append((stage_of.get(info["Stage ID"], UNTAGGED),
                                        f"{info['Stage ID']}.{info['Stage Attempt ID']}"))
        elif kind == "SparkListenerTaskEnd":
            info, why = e["Task Info"], e.get("Task End Reason", {})
            reason = why.get("Reason", "?")
            if why.get("Loss Reason"):
                reason += f": {why['Loss Reason']}"
            out.tasks.append(TaskEnd(
                stage_of.get(e["Stage ID"], UNTAGGED), e["Stage ID"], info["Index"],
                info["Attempt"], info["Executor ID"], reason, info["Launch Time"] / 1000,
                (info["Finish Time"] - info["Launch Time"]) / 1000))
    return out

"""Where a run's time goes: its Spark event log summarised per pipeline stage.

The pipeline tags every Spark job it starts with the stage it belongs to (the local property
``cvm.stage``, set by :func:`tag_stage`, also the job description shown in the Spark UI) and
with the run id (``cvm.run``). A Spark event log (``spark.eventLog.enabled``) of the run then
says, per stage: how many jobs, stages and tasks ran, the task time, the bytes shuffled and
spilled, and the largest physical plan. ``cvm run --profile DIR`` and ``scripts/bench.py
--profile`` write the event log and print this table; the benchmark's JSON carries it;
``tests/test_budgets.py`` holds a small run to budgets of these counts (they do not depend on
the machine's speed).

Only the JSON event log format is read (``spark.eventLog.compress=false``, which
:func:`profile_conf` sets); rolled logs (``eventlog_v2_*`` folders) are read in order.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

STAGE_PROPERTY = "cvm.stage"
RUN_PROPERTY = "cvm.run"
UNTAGGED = "(untagged)"
# physical plans in the event log are cut at spark.sql.maxPlanStringLength; profiled runs
# raise it so that the largest plan is measured, not the limit
PROFILE_PLAN_STRING_LENGTH = "64m"


def profile_conf(event_log_dir: str) -> dict[str, str]:
    """Spark settings that write a readable, complete event log to ``event_log_dir``."""
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": event_log_dir,
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
        "spark.sql.maxPlanStringLength": PROFILE_PLAN_STRING_LENGTH,
    }


@contextmanager
def tag_stage(spark: SparkSession, stage: str, run_id: str | None = None) -> Iterator[None]:
    """Tag the Spark jobs started by this thread inside the block with ``stage`` and ``run_id``.

    Sets the local properties ``cvm.stage`` / ``cvm.run`` and the job description (the Spark
    UI's job names), and restores the previous values afterwards. Under Spark Connect there
    is no SparkContext: nothing is tagged.
    """
    try:
        sc = spark.sparkContext
    except AttributeError:  # Spark Connect has no SparkContext
        yield
        return
    keys = {STAGE_PROPERTY: stage, "spark.job.description": f"cvm {stage}"}
    if run_id is not None:
        keys[RUN_PROPERTY] = run_id
    before = {k: sc.getLocalProperty(k) for k in keys}
    for k, v in keys.items():
        sc.setLocalProperty(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            sc.setLocalProperty(k, v)  # None removes the property


@dataclass
class StageProfile:
    """What the Spark jobs of one pipeline stage did (sums over its jobs)."""

    jobs: int = 0
    stages: int = 0            # Spark stages that ran (skipped ones not counted)
    skipped_stages: int = 0    # planned, but their shuffle output already existed
    tasks: int = 0
    max_tasks_per_stage: int = 0
    task_seconds: float = 0.0  # sum of task run times (executor run time)
    shuffle_read_bytes: int = 0
    shuffle_write_bytes: int = 0
    spill_bytes: int = 0       # memory + disk bytes spilled
    input_bytes: int = 0       # bytes read from files and caches
    sql_executions: int = 0
    largest_plan_chars: int = 0

    def add(self, other: StageProfile) -> None:
        for name, value in asdict(other).items():
            if name in ("max_tasks_per_stage", "largest_plan_chars"):
                setattr(self, name, max(getattr(self, name), value))
            else:
                setattr(self, name, getattr(self, name) + value)


@dataclass
class RunProfile:
    """A profile per pipeline stage (in order of first appearance) and the total."""

    stages: dict[str, StageProfile] = field(default_factory=dict)

    @property
    def total(self) -> StageProfile:
        out = StageProfile()
        for p in self.stages.values():
            out.add(p)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"stages": {k: asdict(v) for k, v in self.stages.items()},
                "total": asdict(self.total)}


def event_files(path: str | Path) -> list[Path]:
    """The event log files of one application: a file, or the ``events_*`` of a rolled log.

    Raises:
        FileNotFoundError: nothing there.
        ValueError: a compressed log (the parser reads plain JSON lines).
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("events_*"), key=lambda f: int(f.name.split("_")[1]))
    elif p.exists():
        files = [p]
    else:
        raise FileNotFoundError(f"no event log at {p}")
    for f in files:
        if f.suffix in (".zstd", ".lz4", ".snappy", ".lzf"):
            raise ValueError(f"{f}: compressed event log; profile with "
                             "spark.eventLog.compress=false (profile_conf)")
    return files


def application_logs(event_log_dir: str | Path) -> list[Path]:
    """The applications' event logs in a ``spark.eventLog.dir``, oldest first."""
    d = Path(event_log_dir)
    logs = [p for p in d.iterdir() if not p.name.startswith(".")
            and not p.name.endswith(".crc")] if d.is_dir() else []
    return sorted(logs, key=lambda p: p.stat().st_mtime)


def read_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """The events of an event log, in order (a torn last line of a live log is skipped)."""
    for f in event_files(path):
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


_SQL_START = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart"


def profile_events(events: Iterable[dict[str, Any]], run_id: str | None = None) -> RunProfile:
    """Sum jobs, stages, tasks, task time, shuffle, spill and plan size per pipeline stage.

    Args:
        events: event-log events (:func:`read_events`).
        run_id: only jobs tagged with this run (``cvm.run``); None takes every job.

    Returns:
        A :class:`RunProfile`; jobs without a ``cvm.stage`` tag go to ``(untagged)``.
    """
    job_stage: dict[int, str] = {}
    stage_of_spark_stage: dict[int, str] = {}
    planned: dict[str, set[int]] = {}
    plans: dict[int, int] = {}               # SQL execution id -> plan chars
    exec_stage: dict[int, str] = {}
    out = RunProfile()
    ran: set[int] = set()

    def prof(name: str) -> StageProfile:
        return out.stages.setdefault(name, StageProfile())

    for e in events:
        kind = e.get("Event")
        if kind == _SQL_START:
            plans[int(e["executionId"])] = len(e.get("physicalPlanDescription") or "")
        elif kind == "SparkListenerJobStart":
            props = e.get("Properties") or {}
            if run_id is not None and props.get(RUN_PROPERTY) != run_id:
                continue
            name = props.get(STAGE_PROPERTY) or UNTAGGED
            job_stage[e["Job ID"]] = name
            p = prof(name)
            p.jobs += 1
            ids = [s["Stage ID"] for s in e.get("Stage Infos", [])]
            planned.setdefault(name, set()).update(ids)
            for sid in ids:
                stage_of_spark_stage.setdefault(sid, name)
            ex = props.get("spark.sql.execution.id")
            if ex is not None and int(ex) not in exec_stage:
                exec_stage[int(ex)] = name
        elif kind == "SparkListenerStageCompleted":
            info = e["Stage Info"]
            sid = info["Stage ID"]
            name = stage_of_spark_stage.get(sid)
            if name is None:
                continue
            p = prof(name)
            if sid not in ran:
                p.stages += 1
                ran.add(sid)
            p.tasks += info["Number of Tasks"]
            p.max_tasks_per_stage = max(p.max_tasks_per_stage, info["Number of Tasks"])
        elif kind == "SparkListenerTaskEnd":
            name = stage_of_spark_stage.get(e["Stage ID"])
            metrics = e.get("Task Metrics")
            if name is None or not metrics:
                continue
            _add_task(prof(name), metrics)
    for name, ids in planned.items():
        prof(name).skipped_stages = len(ids - ran)
    for ex, name in exec_stage.items():
        p = prof(name)
        p.sql_executions += 1
        p.largest_plan_chars = max(p.largest_plan_chars, plans.get(ex, 0))
    return out


def _add_task(p: StageProfile, metrics: dict[str, Any]) -> None:
    """Add one task's run time, shuffle, spill and input bytes to its stage's profile."""
    p.task_seconds += metrics.get("Executor Run Time", 0) / 1000.0
    read = metrics.get("Shuffle Read Metrics", {})
    p.shuffle_read_bytes += read.get("Remote Bytes Read", 0) + read.get("Local Bytes Read", 0)
    p.shuffle_write_bytes += metrics.get("Shuffle Write Metrics", {}).get(
        "Shuffle Bytes Written", 0)
    p.spill_bytes += metrics.get("Memory Bytes Spilled", 0) + metrics.get("Disk Bytes Spilled", 0)
    p.input_bytes += metrics.get("Input Metrics", {}).get("Bytes Read", 0)


def profile_log(path: str | Path, run_id: str | None = None) -> RunProfile:
    """:func:`profile_events` of the event log at ``path``."""
    return profile_events(read_events(path), run_id)


_LARGE_BINARY = re.compile(r"Broadcasting large task binary with size ([0-9.]+) (KiB|MiB)")


def large_task_binaries(log_text: str) -> list[float]:
    """Sizes (KiB) of the "large task binary" warnings in a Spark driver log (> 1000 KiB)."""
    return [float(n) * (1024.0 if unit == "MiB" else 1.0)
            for n, unit in _LARGE_BINARY.findall(log_text)]


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def render_profile(profile: RunProfile, seconds: dict[str, float] | None = None) -> str:
    """The profile as a fixed-width table (one line per stage, then the total)."""
    seconds = seconds or {}
    head = (f"{'stage':<24}{'wall s':>8}{'jobs':>6}{'stages':>7}{'tasks':>7}{'max/st':>7}"
            f"{'task s':>8}{'shuffle MB':>11}{'spill MB':>9}{'plan kB':>8}")
    lines = [head, "-" * len(head)]
    rows = [*profile.stages.items(), ("total", profile.total)]
    for name, p in rows:
        wall = (sum(seconds.values()) if name == "total" else seconds.get(name))
        lines.append(
            f"{name:<24}{'' if wall is None else f'{wall:.1f}':>8}{p.jobs:>6}{p.stages:>7}"
            f"{p.tasks:>7}{p.max_tasks_per_stage:>7}{p.task_seconds:>8.1f}"
            f"{_mb(p.shuffle_write_bytes):>11}{_mb(p.spill_bytes):>9}"
            f"{p.largest_plan_chars / 1000:>8.1f}")
    return "\n".join(lines)

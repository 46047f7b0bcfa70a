"""Spark budgets of a pipeline run: counts that do not depend on the machine's speed.

The golden run (3,000 generated accounts x 24 months, conftest.py ``golden_run``) is
profiled from the test session's event log (cvm_spark/pipeline/profiling.py) and must stay within:

* a number of Spark jobs and of tasks for the whole run (``MAX_JOBS``, ``MAX_TASKS``);
* tasks per Spark stage that follow the data: a stage may not have more tasks than
  ``MAX_TASKS_SMALL_STAGE`` unless it reads at least ``MIN_BYTES_PER_TASK`` per task (the
  200-task stages of fixed shuffle partitions fail this);
* physical plans of at most ``MAX_PLAN_CHARS`` characters (plan strings of megabytes were
  what every task deserialised and code-generated);
* no "Broadcasting large task binary" warning from Spark (binaries over 1,000 KiB).

The limits are the measured counts of the current design with headroom (docs/performance.md
lists the measured figures and what bounds each); a change that adds jobs, splits stages
into tiny tasks or grows plans fails here before it costs users minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import golden
import pytest

from cvm_spark.pipeline.profiling import large_task_binaries, profile_log, read_events

pytestmark = pytest.mark.e2e

# 291 jobs / 500 tasks with the 3-origin future-value back-test (<= 230 / 400 without it);
# 335 / 669 once KMeans clusters on behaviour (volatility, relative trend): its fits take
# more iterations (kmeans 33 jobs, each back-test origin 21-26; one job per iteration).
MAX_JOBS = 360
MAX_TASKS = 720
MAX_TASKS_SMALL_STAGE = 16
MIN_BYTES_PER_TASK = 4 * 1024 * 1024
MAX_PLAN_CHARS = 200_000
# Spark warns ("Broadcasting large task binary") above 1,000 KiB. Issue 17 took the features
# aggregate (the back-test origins' as-of aggregates) to 1,016 KiB and the value-components
# frame to 1,058 KiB; the limit allows them until issue 11 cuts the binaries (target 200 kB).
MAX_TASK_BINARY_KIB = 1_100


@dataclass(frozen=True)
class SparkStage:
    stage_id: int
    pipeline_stage: str
    name: str
    tasks: int
    bytes_read: int      # input + shuffle read


def spark_stages(path, run_id: str) -> list[SparkStage]:
    """Every Spark stage that ran for the run's jobs, with its tasks and bytes read."""
    owner: dict[int, str] = {}
    tasks: dict[int, int] = {}
    names: dict[int, str] = {}
    read: dict[int, int] = {}
    for e in read_events(path):
        kind = e.get("Event")
        if kind == "SparkListenerJobStart":
            props = e.get("Properties") or {}
            if props.get("cvm.run") != run_id:
                continue
            for s in e.get("Stage Infos", []):
                owner.setdefault(s["Stage ID"], props.get("cvm.stage", "?"))
        elif kind == "SparkListenerStageCompleted":
            info = e["Stage Info"]
            tasks[info["Stage ID"]] = info["Number of Tasks"]
            names[info["Stage ID"]] = info["Stage Name"]
        elif kind == "SparkListenerTaskEnd":
            m = e.get("Task Metrics") or {}
            shuffle = m.get("Shuffle Read Metrics", {})
            read[e["Stage ID"]] = (read.get(e["Stage ID"], 0)
                                   + m.get("Input Metrics", {}).get("Bytes Read", 0)
                                   + shuffle.get("Remote Bytes Read", 0)
                                   + shuffle.get("Local Bytes Read", 0))
    return [SparkStage(sid, owner[sid], names[sid], n, read.get(sid, 0))
            for sid, n in sorted(tasks.items()) if sid in owner]


@pytest.fixture(scope="module")
def profiled(spark, golden_run, session_logs):
    path = session_logs.event_log(spark)
    return (profile_log(path, golden.RUN_ID), spark_stages(path, golden.RUN_ID),
            golden_run[2])


def _table(profile) -> str:
    from cvm_spark.pipeline.profiling import render_profile

    return "\n" + render_profile(profile)


def test_jobs_and_tasks_of_the_run(profiled):
    profile, _, _ = profiled
    total = profile.total
    assert "validate" in profile.stages and "write_tier_summary" in profile.stages
    assert total.jobs <= MAX_JOBS, _table(profile)
    assert total.tasks <= MAX_TASKS, _table(profile)


def test_tasks_per_stage_follow_the_data(profiled):
    _, stages, _ = profiled
    assert len(stages) > 50
    crowded = [s for s in stages if s.tasks > MAX_TASKS_SMALL_STAGE
               and s.bytes_read / s.tasks < MIN_BYTES_PER_TASK]
    assert not crowded, "\n".join(
        f"{s.pipeline_stage}: stage {s.stage_id} {s.name[:60]}: {s.tasks} tasks for "
        f"{s.bytes_read / 1e6:.1f} MB" for s in crowded)


def test_plans_stay_small(profiled):
    profile, _, _ = profiled
    largest = {name: p.largest_plan_chars for name, p in profile.stages.items()}
    assert max(largest.values()) <= MAX_PLAN_CHARS, largest
    assert max(largest.values()) > 1000   # the plans were measured (not cut at 8k)


def test_no_large_task_binary(profiled):
    _, _, log_lines = profiled
    sizes = large_task_binaries("\n".join(log_lines))
    assert all(s <= MAX_TASK_BINARY_KIB for s in sizes), (
        f"task binaries of {sizes} KiB (limit {MAX_TASK_BINARY_KIB:,} KiB)")


def test_the_budgets_are_not_vacuous(profiled):
    """The run is big enough for the budgets to bite: thousands of accounts, a few MB per
    stage at most, and jobs in every pipeline stage."""
    profile, stages, _ = profiled
    assert profile.total.jobs > 50 and profile.total.tasks > 100
    assert max(s.bytes_read for s in stages) > 1e6
    assert math.isfinite(profile.total.task_seconds) and profile.total.task_seconds > 0

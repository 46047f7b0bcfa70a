"""The event-log profile (cvm_spark/pipeline/profiling.py): hand-made events and a real
event log."""

from __future__ import annotations

import json

import pytest

from cvm_spark.pipeline.profiling import (
    UNTAGGED,
    large_task_binaries,
    profile_events,
    profile_log,
    render_profile,
    tag_stage,
)

SQL_START = "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart"


def _job(job_id, stage_ids, stage=None, run="r1", execution=None):
    props = {"cvm.run": run}
    if stage is not None:
        props["cvm.stage"] = stage
    if execution is not None:
        props["spark.sql.execution.id"] = str(execution)
    return {"Event": "SparkListenerJobStart", "Job ID": job_id, "Properties": props,
            "Stage Infos": [{"Stage ID": s} for s in stage_ids]}


def _stage_done(stage_id, tasks):
    return {"Event": "SparkListenerStageCompleted",
            "Stage Info": {"Stage ID": stage_id, "Number of Tasks": tasks}}


def _task(stage_id, run_ms, shuffle_write=0, shuffle_read=0, spill=0):
    return {"Event": "SparkListenerTaskEnd", "Stage ID": stage_id, "Task Metrics": {
        "Executor Run Time": run_ms,
        "Shuffle Read Metrics": {"Remote Bytes Read": 0, "Local Bytes Read": shuffle_read},
        "Shuffle Write Metrics": {"Shuffle Bytes Written": shuffle_write},
        "Memory Bytes Spilled": spill, "Disk Bytes Spilled": 0,
        "Input Metrics": {"Bytes Read": 10}}}


def test_profile_sums_per_stage_and_counts_skipped_stages():
    events = [
        {"Event": SQL_START, "executionId": 7, "physicalPlanDescription": "x" * 1234},
        _job(0, [0, 1], "validate", execution=7),
        _stage_done(0, 2), _task(0, 1500, shuffle_write=100), _task(0, 500, shuffle_write=50),
        _stage_done(1, 1), _task(1, 250, shuffle_read=150),
        # a second job that reuses stage 0's shuffle: stage 2 is planned but skipped
        _job(1, [2, 3], "validate"),
        _stage_done(3, 4), *[_task(3, 100) for _ in range(4)],
        _job(2, [4], None),
        _stage_done(4, 1), _task(4, 1000, spill=5),
        _job(3, [5], "rfm", run="other"),          # another run: ignored
        _stage_done(5, 9), _task(5, 9000),
    ]
    profile = profile_events(events, run_id="r1")
    assert list(profile.stages) == ["validate", UNTAGGED]
    v = profile.stages["validate"]
    assert (v.jobs, v.stages, v.skipped_stages, v.tasks, v.max_tasks_per_stage) == (2, 3, 1, 7, 4)
    assert v.task_seconds == pytest.approx(2.65)
    assert (v.shuffle_write_bytes, v.shuffle_read_bytes) == (150, 150)
    assert (v.sql_executions, v.largest_plan_chars) == (1, 1234)
    u = profile.stages[UNTAGGED]
    assert (u.jobs, u.tasks, u.spill_bytes) == (1, 1, 5)
    total = profile.total
    assert (total.jobs, total.tasks, total.max_tasks_per_stage) == (3, 8, 4)
    assert profile_events(events).total.jobs == 4          # every run
    text = render_profile(profile, {"validate": 3.5})
    assert "validate" in text and "total" in text and "3.5" in text


def test_large_task_binary_warnings_are_read_in_kib():
    log = ("26/12/06 WARN DAGScheduler: Broadcasting large task binary with size 1775.7 KiB\n"
           "26/12/06 WARN DAGScheduler: Broadcasting large task binary with size 2.4 MiB\n")
    assert large_task_binaries(log) == pytest.approx([1775.7, 2.4 * 1024])


def test_a_real_event_log_is_profiled_per_tag(tmp_path):
    """A session of its own writes an event log; jobs inside tag_stage carry the tag."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        from pyspark.sql import SparkSession
        from cvm_spark.pipeline.profiling import profile_conf, tag_stage
        b = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
        for k, v in profile_conf({str(tmp_path)!r}).items():
            b = b.config(k, v)
        spark = b.getOrCreate()
        with tag_stage(spark, "count", "run-1"):
            spark.range(1000).selectExpr("id % 7 AS k").groupBy("k").count().collect()
        spark.range(10).collect()
        spark.stop()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                   timeout=300)
    logs = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(logs) == 1
    profile = profile_log(logs[0], run_id="run-1")
    assert list(profile.stages) == ["count"]
    p = profile.stages["count"]
    assert p.jobs >= 1 and p.tasks >= 2 and p.shuffle_write_bytes > 0
    assert p.largest_plan_chars > 100
    json.dumps(profile.to_dict())


def test_tag_stage_restores_the_previous_tags(spark):
    sc = spark.sparkContext
    with tag_stage(spark, "outer", "run-x"):
        with tag_stage(spark, "inner"):
            assert sc.getLocalProperty("cvm.stage") == "inner"
            assert sc.getLocalProperty("cvm.run") == "run-x"
        assert sc.getLocalProperty("cvm.stage") == "outer"
    assert sc.getLocalProperty("cvm.stage") is None

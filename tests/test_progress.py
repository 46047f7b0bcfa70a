"""The live progress line of a pipeline stage (cvm_spark/pipeline/progress.py)."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest

from cvm_spark.pipeline.progress import TaskCounter, live_progress, progress_text, wants_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeTracker:
    """Stages as the status tracker reports them, one snapshot per poll."""

    def __init__(self, polls):
        self.polls = list(polls)
        self.now = {}

    def getActiveStageIds(self):
        self.now = self.polls.pop(0)
        return list(self.now)

    def getStageInfo(self, stage_id):
        tasks, done = self.now[stage_id]
        return SimpleNamespace(numTasks=tasks, numCompletedTasks=done)


def test_task_counter_counts_finished_stages_whole():
    counter = TaskCounter(FakeTracker([{1: (4, 1)}, {1: (4, 3), 2: (10, 0)}, {2: (10, 6)}, {}]))
    assert counter.poll() == (1, 4)
    assert counter.poll() == (3, 14)
    assert counter.poll() == (10, 14)  # stage 1 ended between polls: its 4 tasks are done
    assert counter.poll() == (14, 14)


def test_progress_text():
    assert progress_text("features", 1234, 2000, 12.4) == "stage features: 1,234/2,000 tasks, 12s"
    assert progress_text("validate", 0, 0, 0.2) == "stage validate: starting, 0s"


def test_only_a_terminal_gets_the_line(monkeypatch):
    monkeypatch.delenv("CVM_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert wants_progress(Terminal())
    assert not wants_progress(io.StringIO())  # a file, a pipe, CI
    monkeypatch.setenv("CVM_PROGRESS", "0")
    assert not wants_progress(Terminal())
    monkeypatch.delenv("CVM_PROGRESS")
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_progress(Terminal())


@pytest.mark.parametrize("terminal", [True, False])
def test_live_line_follows_the_running_tasks(spark, monkeypatch, terminal):
    monkeypatch.delenv("CVM_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    stream = Terminal() if terminal else io.StringIO()
    # 4 tasks of 0.4 s each on 2 cores: the line is drawn while they run
    slow = spark.range(0, 4, 1, 4).selectExpr(
        "reflect('java.lang.Thread', 'sleep', cast(400 as bigint)) as slept")
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        with live_progress(spark, "features", stream=stream, interval=0.05):
            assert slow.count() == 4
            logging.getLogger("cvm_spark.test").warning("a log line mid-stage")
            assert len(slow.collect()) == 4
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    if not terminal:
        assert text == "a log line mid-stage\n"
        return
    # a log record erases the live line first: it starts a line of its own
    assert "\r\033[Ka log line mid-stage\n" in text
    frames = [f for f in text.split("\r\033[K") if f and "mid-stage" not in f]
    assert frames, text
    assert all(f.startswith("stage features: ") for f in frames)
    assert any("/4 tasks" in f or "/8 tasks" in f for f in frames), frames
    assert text.endswith("\r\033[K")  # erased at the end: the stage's done line follows

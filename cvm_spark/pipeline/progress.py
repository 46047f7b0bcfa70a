"""A live progress line for a person at a terminal.

While a pipeline stage runs, one line is redrawn in place (``\\r``) a few times a second:
the tasks done and the tasks in all of the Spark stages that the pipeline stage has started
so far, and the elapsed time, read from Spark's status tracker (the driver's own bookkeeping;
no job is started for it). When the stage ends the line is erased, so the stage's "done"
line follows as usual.

Only a terminal gets the line: when the stream is a file or a pipe (a log file, CI, ``cvm run
> out.txt``), nothing is drawn and the log keeps one line at the start and one at the end of
each stage. ``CVM_PROGRESS=0`` turns the line off on a terminal too.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from py4j.protocol import Py4JError
from pyspark.sql import SparkSession

PROGRESS_ENV = "CVM_PROGRESS"
INTERVAL_SECONDS = 0.5
_ERASE = "\r\033[K"


def wants_progress(stream: TextIO) -> bool:
    """A live line for ``stream``: a terminal (not ``TERM=dumb``), unless ``CVM_PROGRESS=0``."""
    if os.environ.get(PROGRESS_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
    return bool(terminal) and os.environ.get("TERM") != "dumb"


class TaskCounter:
    """Tasks done / total over the Spark stages seen active since it was made."""

    def __init__(self, tracker: Any) -> None:
        self._tracker = tracker
        self._stages: dict[int, tuple[int, int]] = {}  # stage id -> (tasks, completed)

    def poll(self) -> tuple[int, int]:
        """Read the active stages; a stage seen before that is no longer active has
        finished, so all of its tasks count as done."""
        active = set()
        for stage_id in self._tracker.getActiveStageIds():
            info = self._tracker.getStageInfo(stage_id)
            if info is not None:
                active.add(stage_id)
                self._stages[stage_id] = (info.numTasks, info.numCompletedTasks)
        for stage_id, (tasks, _) in self._stages.items():
            if stage_id not in active:
                self._stages[stage_id] = (tasks, tasks)
        done = sum(c for _, c in self._stages.values())
        return done, sum(t for t, _ in self._stages.values())


def progress_text(name: str, done: int, total: int, seconds: float) -> str:
    """The live line, e.g. ``stage features: 37/120 tasks, 12s``."""
    tasks = f"{done:,}/{total:,} tasks" if total else "starting"
    return f"stage {name}: {tasks}, {seconds:.0f}s"


def _draw(counter: TaskCounter, name: str, stream: TextIO, stop: threading.Event,
          interval: float) -> None:
    start = time.monotonic()
    while not stop.wait(interval):
        try:
            done, total = counter.poll()
        except (Py4JError, OSError):  # the JVM is going away: the line is a view, not the run
            return
        stream.write(_ERASE + progress_text(name, done, total, time.monotonic() - start))
        stream.flush()


@contextmanager
def live_progress(spark: SparkSession, name: str, stream: TextIO | None = None,
                  interval: float = INTERVAL_SECONDS) -> Iterator[None]:
    """Redraw a progress line for pipeline stage ``name`` on ``stream`` (default stderr,
    where the stage lines go) while the block runs, if it is a terminal."""
    stream = sys.stderr if stream is None else stream
    if not wants_progress(stream):
        yield
        return
    try:
        tracker = spark.sparkContext.statusTracker()
    except AttributeError:  # Spark Connect: no status tracker
        yield
        return
    stop = threading.Event()
    eraser = _EraseBeforeLogging(stream)
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream is stream]
    for handler in handlers:
        handler.addFilter(eraser)
    thread = threading.Thread(target=_draw, name=f"cvm-progress-{name}", daemon=True,
                              args=(TaskCounter(tracker), name, stream, stop, interval))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for handler in handlers:
            handler.removeFilter(eraser)
        stream.write(_ERASE)
        stream.flush()


class _EraseBeforeLogging(logging.Filter):
    """Erases the live line before a log record goes to the same stream (the next tick
    draws it again below the record)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        self._stream.write(_ERASE)
        return True

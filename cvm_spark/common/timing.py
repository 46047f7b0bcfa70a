"""Stage timers: how a library function lets its caller time the steps that run Spark jobs.

Spark is lazy, so a step's time is the time of the jobs it triggers. Functions that run
several heavy steps take a ``stage`` argument (a :data:`StageTimer`) and wrap each step in
``with stage("<name>"):``; the pipeline passes a timer that records the step as a stage of
the run (summary, run_log, benchmark), other callers get :func:`no_stage`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

StageTimer = Callable[[str], AbstractContextManager[None]]


def no_stage(name: str) -> AbstractContextManager[None]:
    """The default :data:`StageTimer`: does nothing."""
    del name
    return nullcontext()

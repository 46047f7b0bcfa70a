"""Independent Spark work side by side: driver threads that submit jobs at the same time.

A model fit is a chain of small Spark jobs (one per KMeans iteration, a few per regression,
PCA or BG/NBD step); between two jobs of one chain the cores wait for the driver. Fits that
do not read each other's results (the loyalty fit, the lifetime-value fit, the future-value
fit and its back-test origins) fill those gaps when their chains run at the same time.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

from pyspark import inheritable_thread_target
from pyspark.sql import SparkSession

T = TypeVar("T")


def side_by_side(tasks: list[Callable[[], T]], parallel: int) -> list[T]:
    """Run ``tasks`` on up to ``parallel`` driver threads; their results in task order.

    Each task carries the caller's Spark local properties and job tags
    (:func:`pyspark.inheritable_thread_target` with the active session: the stage and run
    tags of the profile, the job description) and shares the session; each task has its own
    copy of the properties, so what one task sets stays in its own jobs. The first failure in
    task order is raised once every task has ended. ``parallel`` 1, one task, or no active
    session runs them in turn in this thread.
    """
    session = SparkSession.getActiveSession()
    if parallel <= 1 or len(tasks) <= 1 or session is None:
        return [task() for task in tasks]
    # one wrapper per task: pyspark's wrapper made with a session hands every function it
    # wraps the *same* copy of the caller's local properties, so one thread's
    # setLocalProperty (a job description, a call site) would show in the others' jobs
    wrapped = [inheritable_thread_target(session)(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=min(parallel, len(tasks)),
                            thread_name_prefix="cvm-fit") as pool:
        futures = [pool.submit(task) for task in wrapped]
        wait(futures)
    return [f.result() for f in futures]

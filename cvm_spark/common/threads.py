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

T = TypeVar("T")


def side_by_side(tasks: list[Callable[[], T]], parallel: int) -> list[T]:
    """Run ``tasks`` on up to ``parallel`` driver threads; their results in task order.

    Each task carries the caller's Spark local properties
    (:func:`pyspark.inheritable_thread_target`: the stage and run tags of the profile, the
    job description) and shares the session. The first failure in task order is raised once
    every task has ended. ``parallel`` 1 (or one task) runs them in turn in this thread.
    """
    if parallel <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=min(parallel, len(tasks)),
                            thread_name_prefix="cvm-fit") as pool:
        futures = [pool.submit(inheritable_thread_target(task)) for task in tasks]
        wait(futures)
    return [f.result() for f in futures]

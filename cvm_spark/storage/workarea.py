"""A run's work area: intermediate results written once and read back, to cut their lineage.

Spark re-plans a DataFrame from its whole lineage at every use. A cached per-account frame
still carries it: the plan of every query over it prints the cached plan (the value model's
plans reached 6 MB of text), and every task of those queries deserialises the cached RDD's
lineage with it (task binaries of 1.5-2.4 MB). A frame that many later steps read (the
features, the model's per-account scores) is therefore *materialised*: written once as
Parquet under ``<warehouse>/_work/<database>/<YYYY-MM>/<run>/<name>`` and read back, so later plans
start from a file scan of a few hundred bytes.

Why files and not ``localCheckpoint``: a local checkpoint lives in the executors' block
managers, and a lost executor loses it for good (the run fails with "checkpoint block not
found"); files survive it, and their pages stay in the OS cache on one machine. Why not
``cache``: it keeps the lineage (see above).

The area holds raw account ids while the run lasts (like Spark's shuffle and spill files):
it is removed when the run ends, failed or not, and a run of a month removes what a killed
earlier run of that month left (it holds the month's lock, so no other run uses it; runs
of other months and databases have folders of their own).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from datetime import date

from pyspark.sql import DataFrame, SparkSession

from cvm_spark.common.jvm import hadoop_file
from cvm_spark.config import WORK_DIR, OutputConfig
from cvm_spark.storage.locations import is_local, local_path

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


def remove_tree(spark: SparkSession, location: str) -> None:
    """Delete a folder and everything in it, if it exists (local or any Hadoop file system)."""
    if is_local(location):
        shutil.rmtree(local_path(location), ignore_errors=True)
        return
    fs, path = hadoop_file(spark, location)  # the DataFrame API cannot delete files
    fs.delete(path, True)


def remove_if_empty(spark: SparkSession, location: str) -> None:
    """Delete a folder if it exists and holds nothing (local or any Hadoop file system)."""
    if is_local(location):
        with contextlib.suppress(OSError):
            local_path(location).rmdir()
        return
    fs, path = hadoop_file(spark, location)
    if fs.exists(path) and fs.getFileStatus(path).isDirectory() and len(fs.listStatus(path)) == 0:
        fs.delete(path, False)


class WorkArea:
    """The folder of one run's intermediate results (:func:`WorkArea.materialize`).

    Use as a context manager: entering removes what earlier runs of the month left, leaving
    removes the run's folder.
    """

    def __init__(self, spark: SparkSession, output: OutputConfig, snapshot: date,
                 run_id: str) -> None:
        self.spark = spark
        # per database and month, like the lock the run holds while it uses the area
        self.month_dir = output.location(WORK_DIR, output.database, f"{snapshot:%Y-%m}")
        self.root = output.location(WORK_DIR, output.database, f"{snapshot:%Y-%m}",
                                    _UNSAFE.sub("_", run_id))
        self.written: list[str] = []

    def __enter__(self) -> WorkArea:
        remove_tree(self.spark, self.month_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the run's folder (and the month's, when no other run's is in it)."""
        remove_tree(self.spark, self.root)
        remove_if_empty(self.spark, self.month_dir)

    def path(self, name: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"work area: {name!r} is not a plain lower-case name")
        return f"{self.root}/{name}"

    def materialize(self, df: DataFrame, name: str) -> DataFrame:
        """Write ``df`` (one Spark job) and return it read back: same rows, no lineage.

        The schema is passed to the reader (Spark would otherwise run one more job to read
        it from a file footer). Columns come back nullable (file sources do not keep
        Spark's nullability).
        """
        path = self.path(name)
        schema = df.schema
        df.write.mode("overwrite").parquet(path)
        self.written.append(name)
        log.debug("work area: materialised %s at %s", name, path)
        return self.spark.read.schema(schema).parquet(path)

"""The SparkSession, built once at the edge (job entry points and the test fixture).

Nothing here sets a master unless asked: under ``spark-submit`` the master, deploy mode and
packages come from the command line; run with plain ``python`` the session falls back to
Spark's own default (``local[*]``) or to ``--master`` given to the job. The Delta jars for
the installed pyspark minor version are added through ``spark.jars.packages`` (resolved by
Ivy from Maven Central on first use) unless the caller already provides them or the
process was started by spark-submit (whose ``--packages`` decide the classpath).
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pyspark
from pyspark.sql import DataFrame, SparkSession

from cvm_spark.common.console import jvm_stderr_filtered
from cvm_spark.common.jvm import plan_size_in_bytes

log = logging.getLogger(__name__)

SCALA_VERSION = "2.13"

# Settings every session gets unless the caller overrides them.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    # Tables are registered by location on every start (see storage.delta.register_tables), so
    # no Hive metastore (and no Derby lock) is needed.
    "spark.sql.catalogImplementation": "in-memory",
    "spark.ui.showConsoleProgress": "false",
    # The value model's plans are large (one CASE per tier and campaign rule, Chinese labels
    # held as UTF-16): the full plan string that Spark builds for every query (SQL listener,
    # UI) ran a 1 GB cluster driver out of heap. Only the text of plans is cut.
    "spark.sql.maxPlanStringLength": "8k",
}

# Extra defaults for local mode: few cores, so keep Delta log scans small. Shuffles keep
# Spark's default partition count (200) and adaptive execution coalesces them to ~64 MB
# each: a fixed small count (8) made 1,000,000-account runs sort and spill 1 GB partitions
# until the heap ran out.
#
# No delay scheduling in local mode: its one executor is every task's only choice, and local
# mode re-offers its cores only when a task starts or ends (cluster schedulers also re-offer
# every second). With files on HDFS, scan tasks prefer the DataNodes' hosts and shuffle reads
# the executor's; once the tasks that can run at the preferred level end, the rest wait for a
# re-offer after the locality wait that never comes, and the job hangs (seen with inputs and
# warehouse on HDFS: a stage of two tasks, one done, one never launched).
LOCAL_CONF: dict[str, str] = {
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.driver.memory": "4g",
    "spark.locality.wait": "0s",
}


def delta_maven_coordinates() -> str:
    """Maven coordinates of the Delta jar matching the installed pyspark and delta-spark."""
    delta_version = importlib.metadata.version("delta_spark")
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_VERSION}:{delta_version}"


JARS_CACHE_ENV = "CVM_JARS_CACHE"
SPARK_LOG_ENV = "CVM_SPARK_LOG"
# shipped at the top of the package (package data)
LOG4J2_CONFIG = Path(__file__).resolve().parents[1] / "log4j2.properties"


class DeltaJarsError(RuntimeError):
    """The Delta jars could not be found locally nor resolved from Maven Central."""


def jars_cache_dir() -> Path:
    """Where the resolved jar lists are kept: ``$CVM_JARS_CACHE`` or
    ``~/.cache/cvm_spark/jars``."""
    return Path(os.environ.get(JARS_CACHE_ENV) or Path.home() / ".cache" / "cvm_spark" / "jars")


def _manifest(coordinates: str) -> Path:
    return jars_cache_dir() / (coordinates.replace(":", "_") + ".txt")


def cached_jars(coordinates: str) -> list[str] | None:
    """The local jar files of ``coordinates`` (and their dependencies) recorded after a first
    resolution, or None when there is no record or a recorded file is gone."""
    try:
        paths = [line.strip() for line in _manifest(coordinates).read_text().splitlines()
                 if line.strip()]
    except OSError:
        return None
    return paths if paths and all(Path(p).is_file() for p in paths) else None


def remember_jars(spark: SparkSession, coordinates: str) -> list[str]:
    """Record the local jars Spark resolved for ``spark.jars.packages`` (its ``spark.jars``)
    so the next session passes them as ``spark.jars``: no Ivy resolution, no network."""
    uris = [j for j in spark.conf.get("spark.jars", "").split(",") if j.strip()]
    paths = [url2pathname(urlparse(u).path) if u.startswith("file:") else u for u in uris]
    paths = [p for p in paths if Path(p).is_file()]
    if paths:
        target = _manifest(coordinates)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}")
            tmp.write_text("\n".join(paths) + "\n")
            tmp.replace(target)
            log.info("delta jars: %d files recorded in %s", len(paths), target)
        except OSError as exc:  # a read-only home: resolve again next time
            log.warning("delta jars: cannot record the resolved jars in %s (%s)", target, exc)
    return paths


def spark_log_file() -> Path:
    """Spark's log of a driver that cvm_spark starts: ``$CVM_SPARK_LOG`` or
    ``logs/spark.log`` (relative to the working directory)."""
    return Path(os.environ.get(SPARK_LOG_ENV) or "logs/spark.log").resolve()


def _java_options(existing: str) -> str:
    """``spark.driver.extraJavaOptions`` with cvm_spark's log4j2 configuration added, unless
    the caller brings a logging configuration of their own."""
    if "log4j2.configurationFile" in existing or "log4j.configuration" in existing:
        return existing
    ours = (f"-Dlog4j2.configurationFile={LOG4J2_CONFIG.as_uri()} "
            f"-Dcvm.log.file={spark_log_file()}")
    return f"{existing} {ours}".strip()


def build_spark(
    app_name: str = "cvm_spark",
    master: str | None = None,
    conf: dict[str, str] | None = None,
) -> SparkSession:
    """Create (or return the running) SparkSession with Delta Lake enabled.

    Args:
        app_name: the application name shown in the Spark UI and history server.
        master: a master URL (``local[2]``, ``spark://host:7077``, ``yarn``); ``None`` leaves
            it to spark-submit or Spark's default.
        conf: extra Spark settings; they win over the defaults here.

    Returns:
        The active SparkSession.

    Raises:
        DeltaJarsError: the Delta jars are neither cached nor resolvable (first start
            without access to Maven Central).
    """
    settings = dict(DEFAULT_CONF)
    if master is not None and master.startswith("local"):
        settings.update(LOCAL_CONF)
    settings.update(conf or {})
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    packages = [p for p in settings.get("spark.jars.packages", "").split(",") if p]
    jars = settings.get("spark.jars", "")
    # Under spark-submit the JVM is already running with the classpath spark-submit gave it
    # (--packages/--jars): adding packages here would change nothing, and the delta-spark
    # pip package whose version names the artifact need not be installed on the cluster.
    launched = "PYSPARK_GATEWAY_PORT" in os.environ
    resolve: str | None = None
    if (not launched and not any(p.startswith("io.delta:") for p in packages)
            and "delta-spark" not in jars):
        coordinates = delta_maven_coordinates()
        cached = cached_jars(coordinates)
        if cached:
            # resolved by an earlier start: the files as they are, no Ivy resolution
            settings["spark.jars"] = ",".join([*filter(None, jars.split(",")), *cached])
        else:
            packages.append(coordinates)
            settings["spark.jars.packages"] = ",".join(packages)
            resolve = coordinates
    if not launched and master is not None and master.startswith("local"):
        # Python workers (pyspark.ml's model writer runs one) use the driver's interpreter,
        # e.g. a virtual environment's python that is not first on PATH
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if not launched:
        # the driver JVM starts here: its logging (spark-submit users bring their own)
        settings["spark.driver.extraJavaOptions"] = _java_options(
            settings.get("spark.driver.extraJavaOptions", ""))
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        # the driver JVM starts here (unless running): its non-log4j chatter to the log file
        with nullcontext() if launched else jvm_stderr_filtered(spark_log_file()):
            spark = builder.getOrCreate()
    except Exception as exc:
        if resolve is None:
            raise
        # Ivy's failure and, say, a missing Java look alike from here: name both
        raise DeltaJarsError(
            f"Spark did not start while the Delta jars {resolve}, not cached in "
            f"{jars_cache_dir()}, were to be resolved from Maven Central: "
            f"{str(exc).splitlines()[0]}. If Maven Central is not reachable, start once where "
            "it is (the jars are then kept) or pass local jars with spark.jars; otherwise "
            f"see {spark_log_file()}.") from exc
    if resolve is not None:
        remember_jars(spark, resolve)
    log.info("spark %s session ready (master=%s)", spark.version,
             spark.conf.get("spark.master", "unset"))
    return spark


# In-memory (Spark row) bytes per byte on disk, by input format: Parquet and Delta are
# compressed and encoded (measured ~3-5x on the generated bank), CSV is text.
EXPANSION = {"parquet": 4.0, "delta": 4.0, "csv": 1.5}
MAX_SHUFFLE_PARTITIONS = 20_000


def application_id(spark: SparkSession) -> str | None:
    """The Spark application id, or None under Spark Connect (no SparkContext)."""
    try:
        return spark.sparkContext.applicationId
    except AttributeError:  # Spark Connect: the caller just omits the id
        return None


def input_bytes(df: DataFrame) -> int | None:
    """Bytes of the files behind ``df`` as Spark's file index knows them (no job runs).

    None when Spark cannot say (Spark Connect, a source without statistics).
    """
    from py4j.protocol import Py4JError

    try:
        return plan_size_in_bytes(df)
    except (AttributeError, Py4JError):  # Spark Connect has no _jdf; a source may have no size
        return None


def shuffle_partitions_for(in_memory_bytes: float, parallelism: int, partition_mb: int) -> int:
    """Shuffle partitions for data of ``in_memory_bytes``: ~``partition_mb`` each, rounded up
    to a multiple of ``parallelism`` (whole waves of tasks), at least ``parallelism``."""
    parallelism = max(1, parallelism)
    wanted = math.ceil(in_memory_bytes / (partition_mb * 1024 * 1024))
    waves = max(1, math.ceil(wanted / parallelism))
    return min(MAX_SHUFFLE_PARTITIONS, waves * parallelism)


@contextmanager
def sized_shuffles(spark: SparkSession, inputs: Mapping[str, tuple[DataFrame, str]],
                   fixed: int, partition_mb: int) -> Iterator[int | None]:
    """Set ``spark.sql.shuffle.partitions`` for the block from the inputs' size; restore after.

    Args:
        inputs: table -> (DataFrame as read, its format).
        fixed: a fixed partition count (``performance.shuffle_partitions``); 0 sizes them.
        partition_mb: target in-memory MB per partition.

    Yields:
        The partition count set, or None when nothing could be set (Spark Connect).
    """
    key = "spark.sql.shuffle.partitions"
    try:
        before = spark.conf.get(key)
        parallelism = spark.sparkContext.defaultParallelism
    except AttributeError:  # Spark Connect has no SparkContext: the server's settings stay
        yield None
        return
    if fixed:
        n = fixed
        log.info("shuffle partitions: %d (performance.shuffle_partitions)", n)
    else:
        sizes = {name: input_bytes(df) for name, (df, _) in inputs.items()}
        known = {name: b for name, b in sizes.items() if b is not None}
        memory = sum(b * EXPANSION.get(inputs[name][1], 4.0) for name, b in known.items())
        n = shuffle_partitions_for(memory, parallelism, partition_mb)
        log.info("shuffle partitions: %d (inputs %.1f MB on disk, ~%.0f MB in memory, "
                 "%d MB per partition, %d cores)", n, sum(known.values()) / 1e6, memory / 1e6,
                 partition_mb, parallelism)
    spark.conf.set(key, str(n))
    try:
        yield n
    finally:
        spark.conf.set(key, before)

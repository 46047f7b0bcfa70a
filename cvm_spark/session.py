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
import os

import pyspark
from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SCALA_VERSION = "2.13"

# Settings every session gets unless the caller overrides them.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    # Tables are registered by location on every start (see delta_io.register_tables), so
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
LOCAL_CONF: dict[str, str] = {
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.driver.memory": "4g",
}


def delta_maven_coordinates() -> str:
    """Maven coordinates of the Delta jar matching the installed pyspark and delta-spark."""
    delta_version = importlib.metadata.version("delta_spark")
    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_{SCALA_VERSION}:{delta_version}"


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
    if (not launched and not any(p.startswith("io.delta:") for p in packages)
            and "delta-spark" not in jars):
        packages.append(delta_maven_coordinates())
        settings["spark.jars.packages"] = ",".join(packages)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    log.info("spark %s session ready (master=%s)", spark.version,
             spark.conf.get("spark.master", "unset"))
    return spark

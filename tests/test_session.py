"""The run's Spark set-up: shuffle partitions sized from the input, the Delta jar cache, the
driver's log file, and the work area where intermediate results are materialised."""

from __future__ import annotations

import os
import subprocess
from datetime import date
from pathlib import Path

import pytest

from cvm_spark.common.session import (
    LOG4J2_CONFIG,
    _java_options,
    cached_jars,
    input_bytes,
    remember_jars,
    shuffle_partitions_for,
    sized_shuffles,
)
from cvm_spark.config import OutputConfig
from cvm_spark.storage.workarea import WorkArea

MB = 1024 * 1024


@pytest.mark.parametrize(("memory_mb", "cores", "partition_mb", "want"), [
    (0, 2, 128, 2),              # nothing to read: one task per core
    (100, 2, 128, 2),            # under one partition: still every core
    (300, 2, 128, 4),            # 3 partitions wanted: rounded up to whole waves of 2
    (4_000, 8, 128, 32),         # 32 wanted, 4 waves of 8
    (4_000, 8, 64, 64),
    (10**9, 4, 8, 20_000),       # capped
])
def test_shuffle_partitions_follow_the_input_size(memory_mb, cores, partition_mb, want):
    assert shuffle_partitions_for(memory_mb * MB, cores, partition_mb) == want


def test_sized_shuffles_sets_and_restores_the_partition_count(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.range(0, 1000).write.parquet(path)
    df = spark.read.parquet(path)
    size = input_bytes(df)
    assert size is not None and size > 0
    before = spark.conf.get("spark.sql.shuffle.partitions")
    cores = spark.sparkContext.defaultParallelism
    with sized_shuffles(spark, {"t": (df, "parquet")}, fixed=0, partition_mb=128) as n:
        assert n == cores == int(spark.conf.get("spark.sql.shuffle.partitions"))
    with sized_shuffles(spark, {"t": (df, "parquet")}, fixed=7, partition_mb=128) as n:
        assert n == 7 == int(spark.conf.get("spark.sql.shuffle.partitions"))
    assert spark.conf.get("spark.sql.shuffle.partitions") == before


class _Conf:
    def __init__(self, jars: str) -> None:
        self.jars = jars

    def get(self, key: str, default: str = "") -> str:
        return self.jars if key == "spark.jars" else default


class _Session:
    def __init__(self, jars: str) -> None:
        self.conf = _Conf(jars)


def test_resolved_delta_jars_are_remembered_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("CVM_JARS_CACHE", str(tmp_path / "cache"))
    coords = "io.delta:delta-spark_4.1_2.13:4.4.0"
    assert cached_jars(coords) is None                       # first start: nothing recorded
    jars = [tmp_path / "ivy" / "delta-spark.jar", tmp_path / "ivy" / "delta-storage.jar"]
    for j in jars:
        j.parent.mkdir(exist_ok=True)
        j.write_bytes(b"jar")
    spark_jars = ",".join(j.as_uri() for j in jars) + ",file:/gone/elsewhere.jar"
    assert remember_jars(_Session(spark_jars), coords) == [str(j) for j in jars]
    assert cached_jars(coords) == [str(j) for j in jars]     # next start: no resolution
    jars[1].unlink()                                         # a file gone: resolve again
    assert cached_jars(coords) is None


def test_the_driver_log_goes_to_a_file_unless_the_user_brings_a_logging_config(monkeypatch,
                                                                                tmp_path):
    monkeypatch.setenv("CVM_SPARK_LOG", str(tmp_path / "spark.log"))
    ours = _java_options("-Xss4m")
    assert ours.startswith("-Xss4m ")
    assert f"-Dlog4j2.configurationFile={LOG4J2_CONFIG.as_uri()}" in ours
    assert f"-Dcvm.log.file={tmp_path / 'spark.log'}" in ours
    assert LOG4J2_CONFIG.is_file()
    theirs = "-Dlog4j2.configurationFile=file:/etc/spark/log4j2.properties"
    assert _java_options(theirs) == theirs


def test_the_work_area_materialises_and_is_removed_after_the_run(spark, tmp_path):
    output = OutputConfig(warehouse=str(tmp_path / "wh"), database="cvm_work")
    month = tmp_path / "wh" / "_work" / "cvm_work" / "2024-12"
    stale = month / "killed-run" / "facts"
    stale.mkdir(parents=True)                        # what a killed run of the month left
    with WorkArea(spark, output, date(2024, 12, 1), "run/1") as work:
        assert not stale.exists()
        df = spark.range(0, 50).selectExpr("id", "id * 2 AS twice")
        back = work.materialize(df, "doubled")
        assert sorted(back.collect()) == sorted(df.collect())
        assert Path(work.root).name == "run_1" and (Path(work.root) / "doubled").is_dir()
        # read back, the plan starts from the file scan: no lineage
        assert "Range" not in back._jdf.queryExecution().optimizedPlan().toString()
        with pytest.raises(ValueError, match="plain lower-case name"):
            work.path("../escape")
    assert not month.exists()


def _child_stderr(log_file, lines):
    """Lines written to standard error by a child started inside the filter, as the driver
    JVM is: (what reached the console's fd, what the log file got)."""
    from cvm_spark.common.console import jvm_stderr_filtered

    with jvm_stderr_filtered(log_file) as chatter:
        subprocess.run(["bash", "-c", 'printf "%s\\n" "$@" >&2', "_", *lines], check=True)
    chatter.thread.join(10)
    assert not chatter.thread.is_alive()  # the child exited: the filter drained and stopped
    return log_file.read_text()


def test_jvm_chatter_goes_to_the_log_file_and_problems_to_the_console(tmp_path, capfd):
    lines = ["WARNING: Using incubator modules: jdk.incubator.vector",
             ":: loading settings :: url = jar:file:/x/ivysettings.xml",
             "Ivy Default Cache set to: /root/.ivy2.5.2/cache",
             "io.delta#delta-spark_4.1_2.13 added as a dependency",
             "\tfound io.delta#delta-storage;4.4.0 in central",
             "\t0 artifacts copied, 33 already retrieved (0kB/16ms)",
             'Setting default log level to "WARN".',
             "26/12/07 14:00:00 WARN TaskSetManager: Lost task 0.0 in stage 1.0",
             "java.lang.OutOfMemoryError: Java heap space"]
    logged = _child_stderr(tmp_path / "logs" / "spark.log", lines)
    assert logged.splitlines() == lines  # the whole of it in the file
    assert capfd.readouterr().err.splitlines() == lines[-2:]  # the problems on the console


def test_a_failed_jar_resolution_reaches_the_console(tmp_path, capfd):
    lines = [":: resolving dependencies :: org.apache.spark#spark-submit-parent-1;1.0",
             "\tconfs: [default]",
             "\t:: UNRESOLVED DEPENDENCIES ::",
             "\t:: io.delta#delta-spark_4.1_2.13;4.4.0: not found",
             'Exception in thread "main" java.lang.RuntimeException: [unresolved dependency]']
    _child_stderr(tmp_path / "spark.log", lines)
    assert capfd.readouterr().err.splitlines() == lines[2:]


def test_local_python_workers_run_the_drivers_interpreter(spark, monkeypatch):
    """A venv's cvm, not activated: workers must not fall back to the python3 on PATH."""
    import sys

    from cvm_spark.common.session import build_spark

    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    assert build_spark("cvm-tests", master="local[2]") is spark
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    monkeypatch.setenv("PYSPARK_PYTHON", "/opt/python/bin/python3")  # the user's choice wins
    build_spark("cvm-tests", master="local[2]")
    assert os.environ["PYSPARK_PYTHON"] == "/opt/python/bin/python3"


def test_local_mode_does_not_wait_for_locality(spark):
    """Local mode re-offers its cores only when a task starts or ends: a task waiting for a
    locality level (a file on an HDFS DataNode's host) would wait for ever (tests/test_hdfs.py
    hung so before ``spark.locality.wait`` was 0 in local mode)."""
    from cvm_spark.common.session import LOCAL_CONF

    assert LOCAL_CONF["spark.locality.wait"] == "0s"
    assert spark.sparkContext.getConf().get("spark.locality.wait") == "0s"

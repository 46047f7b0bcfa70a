"""JDBC through the Spark Thrift Server: scripts/thrift.sh over a small warehouse, queried
with pyspark's beeline."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from cvm_spark.serve.thrift import driver_class_path
from cvm_spark.storage.delta import latest_view_name, qualified_name, write_snapshot

ROOT = Path(__file__).resolve().parents[1]
NOV, DEC = date(2024, 11, 1), date(2024, 12, 1)


def test_driver_class_path_keeps_only_delta_jars():
    ivy = "/root/.ivy2/jars"
    jars = ",".join([
        f"file://{ivy}/io.delta_delta-spark_4.1_2.13-4.4.0.jar",
        f"file:{ivy}/io.delta_delta-storage-4.4.0.jar",
        f"file://{ivy}/com.fasterxml.jackson.core_jackson-databind-2.13.5.jar",
        f"file://{ivy}/io.unitycatalog_unitycatalog-client-0.6.0.jar",
        "/opt/jars/delta-spark_4.1_2.13-4.4.0.jar",
        f"file://{ivy}/commons-logging_commons-logging-1.3.0.jar",
        "",
    ])
    assert driver_class_path(jars) == [
        f"{ivy}/io.delta_delta-spark_4.1_2.13-4.4.0.jar",
        f"{ivy}/io.delta_delta-storage-4.4.0.jar",
        f"{ivy}/io.unitycatalog_unitycatalog-client-0.6.0.jar",
        "/opt/jars/delta-spark_4.1_2.13-4.4.0.jar",
    ]
    assert driver_class_path("") == []


def _tiers(spark, month: date, accounts: list[str]):
    return spark.createDataFrame([(month, a, "gold") for a in accounts],
                                 "snapshot_month date, account_id string, tier string")


@pytest.fixture
def jdbc_output(spark, base_config, tmp_path):
    """A warehouse with one table, ``tiers``: 3 accounts in November, 2 in December."""
    output = replace(base_config.output, warehouse=str(tmp_path / "wh"), database="cvm_jdbc")
    write_snapshot(_tiers(spark, NOV, ["a", "b", "c"]), "tiers", output, NOV)
    write_snapshot(_tiers(spark, DEC, ["a", "b"]), "tiers", output, DEC)
    return output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.thrift
def test_thrift_server_serves_the_tables_over_jdbc(spark, jdbc_output, tmp_path):
    import pyspark

    beeline = Path(pyspark.__file__).parent / "bin" / "beeline"
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")) or not beeline.exists():
        pytest.skip("needs Java and pyspark's bin/beeline")
    port = _free_port()
    run_dir = tmp_path / "thrift"
    env = {**os.environ,
           "CVM_THRIFT_DIR": str(run_dir),
           "CVM_THRIFT_SUBMIT_ARGS": "--conf spark.ui.enabled=false "
                                     "--conf spark.sql.shuffle.partitions=2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    script = ["bash", str(ROOT / "scripts" / "thrift.sh")]
    db = jdbc_output.database
    try:
        started = subprocess.run(
            [*script, "start", "--port", str(port), "--master", "local[2]", "--timeout", "420",
             "--set", f"output.warehouse={jdbc_output.warehouse}",
             "--set", f"output.database={db}"],
            env=env, capture_output=True, text=True, timeout=600, check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"jdbc:hive2://127.0.0.1:{port}/{db}" in started.stdout
        queries = (f"select count(*) from {db}.tiers where snapshot_month = "
                   f"(select max(snapshot_month) from {db}.tiers);"
                   f"select count(*) from {db}.tiers_latest;"
                   f"describe {db}.tiers;")
        result = subprocess.run(
            [str(beeline), "-u", f"jdbc:hive2://127.0.0.1:{port}/{db}", "--silent=true",
             "--showHeader=false", "--outputformat=tsv2", "-e", queries],
            env=env, capture_output=True, text=True, timeout=420, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        latest = spark.table(latest_view_name(jdbc_output, "tiers")).count()
        assert latest == 2
        assert int(lines[0]) == latest
        assert int(lines[1]) == latest
        described = dict(line.split("\t")[::2] for line in lines[2:]
                         if not line.startswith("#") and line.count("\t") == 2)
        columns = spark.table(qualified_name(jdbc_output, "tiers")).columns
        assert all(described.get(c, "").strip() for c in columns), described
        status = subprocess.run([*script, "status"], env=env, capture_output=True, text=True,
                                timeout=60, check=False)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        subprocess.run([*script, "stop"], env=env, capture_output=True, timeout=120,
                       check=False)
        pid_file = run_dir / "thrift.pid"
        if pid_file.exists():  # stop failed: end the server's process group ourselves
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    stopped = subprocess.run([*script, "status"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert stopped.returncode == 3, stopped.stdout

"""One session-scoped local[2] SparkSession with Delta for the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory):
    from cvm_spark.session import build_spark

    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYTHON", "python3"))
    session = build_spark(
        "cvm-tests",
        master="local[2]",
        conf={
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("spark-warehouse")),
            "spark.driver.memory": "3g",
        },
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def base_config():
    from cvm_spark.config import load_config

    return load_config(ROOT / "conf" / "cvm.yaml")

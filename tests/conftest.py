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


@pytest.fixture(scope="session")
def e2e_config(base_config, tmp_path_factory):
    """A small generated bank (400 accounts x 15 months) with its own warehouse."""
    from cvm_spark.config import load_config_dict, to_dict

    root = tmp_path_factory.mktemp("e2e")
    data = to_dict(base_config)
    data["inputs"]["root"] = str(root / "data")
    data["output"]["warehouse"] = str(root / "wh")
    data["output"]["database"] = "cvm_e2e"
    data["generator"].update(accounts=400, months=15, bad_row_share=0.01)
    return load_config_dict(data)


@pytest.fixture(scope="session")
def e2e_summary(spark, e2e_config):
    """One run of the whole pipeline on the generated bank, shared by the e2e and BI tests.

    The model stages take minutes on two cores, so the suite runs them once. Tests that
    change the warehouse (re-runs, other snapshots) are in test_pipeline_e2e.py; the BI
    tests work on a copy.
    """
    from cvm_spark.pipeline import run_snapshot

    return run_snapshot(spark, e2e_config, generate=True)

"""Submitted by tests/test_cluster.py next to the pipeline: reports where the driver and the
executors import ``cvm_spark`` from, and whether they could import it without the zip.

Prints one line ``PROBE {json}`` on stdout. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time

from pyspark.sql import SparkSession


def importable_without(marker: str) -> bool:
    """Could ``cvm_spark`` be imported with every ``sys.path`` entry containing ``marker``
    removed? Checks all finders (path entries, ``.pth`` hooks, editable-install finders)."""
    saved_path = sys.path[:]
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "cvm_spark"}
    try:
        for name in saved:
            del sys.modules[name]
        sys.path[:] = [p for p in saved_path if marker not in p]
        importlib.invalidate_caches()
        return importlib.util.find_spec("cvm_spark") is not None
    finally:
        sys.path[:] = saved_path
        sys.modules.update(saved)
        importlib.invalidate_caches()


def where(_: object = None) -> dict[str, object]:
    """Where this Python process gets cvm_spark and its third-party modules from."""
    import cvm_spark

    time.sleep(0.5)  # keep the task busy so both single-core executors get one
    return {
        "cwd": os.getcwd(),
        "executable": sys.executable,
        "no_site": sys.flags.no_site,
        "cvm_spark": cvm_spark.__file__,
        "without_zip": importable_without(f"cvm_spark-{cvm_spark.__version__}.zip"),
        "numpy": importlib.util.find_spec("numpy") is not None,
        "scipy": importlib.util.find_spec("scipy") is not None,
        "yaml": importlib.util.find_spec("yaml") is not None,
    }


def main() -> None:
    """Probe the driver, then four tasks on the executors."""
    spark = SparkSession.builder.appName("cvm-probe").getOrCreate()
    try:
        import delta

        driver = {**where(), "delta": delta.__file__}
        executors = spark.sparkContext.parallelize(range(4), 4).map(where).collect()
        print("PROBE " + json.dumps({"driver": driver, "executors": executors}), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()

"""Started by tests/test_crash_safety.py in a subprocess of its own: runs snapshots of the
pipeline (``run_snapshot``), optionally with a fault injected into the write of one table.

Not collected by pytest (no ``test_`` prefix). Usage::

    python tests/crash_driver.py --config CFG.json --master 'local[2,4]' --run-id ID
        --git-commit SHA [--inject TABLE:slow|TABLE:fail --marker PATH]

``CFG.json`` is a plain config mapping (``cvm_spark.config.to_dict``) whose snapshot is run
once. The run id, the code version and the start time are fixed, so the run can be compared
row by row with another run of the same snapshot, run log included.

Faults (test code only; the DataFrame handed to the writer is wrapped, its rows unchanged):

* ``TABLE:slow``: the write of TABLE is split into two tasks; the first writes its data file,
  the second sleeps (the test kills the process in that window: data files on disk, no
  commit yet).
* ``TABLE:fail``: the first attempt of the write's task for partition 0 writes ``--marker``
  and raises; a retry (``local[N,F]`` with F > 1) succeeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

SLOW_SECONDS = 600
STARTED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
INJECTED = "injected task failure"


def _slow(batches: Iterator) -> Iterator:
    from pyspark import TaskContext

    if TaskContext.get().partitionId() == 1:
        time.sleep(SLOW_SECONDS)
    yield from batches


def _fail_first(marker: str):
    def fail(batches: Iterator) -> Iterator:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx.partitionId() == 0 and ctx.attemptNumber() == 0:
            Path(marker).write_text(f"stage {ctx.stageId()} attempt {ctx.attemptNumber()}\n")
            raise RuntimeError(INJECTED)
        yield from batches
    return fail


def inject(df, fault: str, marker: str | None = None):
    """``df`` with a fault in the tasks that compute it (same rows, same schema)."""
    if fault == "slow":
        return df.repartition(2).mapInArrow(_slow, df.schema)
    if fault == "fail":
        return df.mapInArrow(_fail_first(marker), df.schema)
    raise ValueError(f"unknown fault {fault!r}")


def patch_writer(pipeline_module, table: str, fault: str, marker: str | None = None) -> None:
    """Make the pipeline hand the writer a faulty DataFrame for ``table`` (the writer itself,
    ``cvm_spark.storage.delta.write_observed``, is unchanged)."""
    original = pipeline_module.write_observed

    def write_observed(df, name, *args, **kwargs):
        if name == table:
            df = inject(df, fault, marker)
            print(f"DRIVER injecting {fault} into the write of {name}", flush=True)
        return original(df, name, *args, **kwargs)

    pipeline_module.write_observed = write_observed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--git-commit", required=True)
    parser.add_argument("--inject", help="TABLE:slow or TABLE:fail")
    parser.add_argument("--marker")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)

    import cvm_spark.pipeline.runner as pipeline
    from cvm_spark.common.session import build_spark
    from cvm_spark.config import load_config_dict
    from cvm_spark.pipeline.run_log import CodeVersion

    cfg = load_config_dict(json.loads(Path(args.config).read_text()))
    spark = build_spark("cvm-crash-test", master=args.master, conf={
        **cfg.spark,
        "spark.driver.memory": "2g",
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.sql.warehouse.dir": str(Path(args.config).parent / "spark-warehouse"),
    })
    spark.sparkContext.setLogLevel("ERROR")
    try:
        if args.inject:
            table, fault = args.inject.split(":")
            patch_writer(pipeline, table, fault, args.marker)
        print(f"DRIVER pid {os.getpid()} run {cfg.snapshot_month} into "
              f"{cfg.output.warehouse}", flush=True)
        pipeline.run_snapshot(spark, cfg, run_id=args.run_id,
                              code_version=CodeVersion(git_commit=args.git_commit),
                              started_at=STARTED_AT)
        print(f"DRIVER done {cfg.snapshot_month}", flush=True)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

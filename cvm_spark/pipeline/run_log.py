"""The run log: what every run of a snapshot read, rejected and wrote, and how long it took.

``run_log`` has one row per input table, output table and stage of a run (long format, so
BI tools filter on ``item_kind`` instead of unpacking maps). Every row carries the run's
identity: ``run_id``, ``run_seq`` (1, 2, ... per snapshot), the config fingerprint, the code
version and, when the caller gives it, the start time.

Why append and not replace: the other tables describe *the* state of a snapshot, so a re-run
replaces them; the run log describes *runs*, and a re-run is a new run. Replacing it would
lose the record of what the earlier run wrote, which is exactly what one wants to compare
after a re-run. It is written last (after every other table), in ``append`` mode of the one
writer (:func:`cvm_spark.storage.delta.write_snapshot`): one commit, so a run that fails before
the end leaves no run-log rows, and a logged run is one whose tables were all written.

Nothing here reads the clock or runs git while the pipeline runs: the start time and the
:class:`CodeVersion` come from the edge (``cvm run`` calls :func:`detect_code_version`).
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cvm_spark import __version__
from cvm_spark.config import CvmConfig, OutputConfig
from cvm_spark.pipeline.summary import RunSummary
from cvm_spark.schemas.inputs import SNAPSHOT_MONTH
from cvm_spark.storage.delta import read_table, table_path, write_snapshot
from cvm_spark.storage.tables import RUN_LOG_COLUMNS

log = logging.getLogger(__name__)

TABLE = "run_log"
GIT_COMMIT_ENV = "CVM_GIT_COMMIT"
INPUT, OUTPUT, STAGE = "input", "output", "stage"

# the declared columns (cvm_spark.storage.tables), without comments: rows are built here
RUN_LOG_SCHEMA = T.StructType([T.StructField(name, dtype) for name, dtype in RUN_LOG_COLUMNS])


@dataclass(frozen=True)
class CodeVersion:
    """The code that ran: package version and, when known, the git commit."""

    package: str = __version__
    git_commit: str | None = None


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):   # no git binary, timeout, ...
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def detect_code_version(package_dir: str | Path | None = None) -> CodeVersion:
    """The package version and the git commit of the package's checkout (call at the edge).

    The commit is taken from ``$CVM_GIT_COMMIT`` when set (CI or a cluster image can pass
    it), else from git, but only when the package's own ``__init__.py`` is tracked in the
    repository around it (so a virtualenv inside some other repository is not mistaken for
    the code's checkout); ``-dirty`` is appended when tracked files have local changes.
    Never raises: without git, outside a checkout or from a zip the commit is None.

    Args:
        package_dir: the directory of the ``cvm_spark`` package (default: this package).
    """
    from_env = os.environ.get(GIT_COMMIT_ENV, "").strip()
    if from_env:
        return CodeVersion(git_commit=from_env)
    directory = Path(package_dir) if package_dir is not None else Path(__file__).parents[1]
    if not directory.is_dir() or _git(directory, "ls-files", "--error-unmatch",
                                      "__init__.py") is None:
        return CodeVersion()
    commit = _git(directory, "rev-parse", "HEAD")
    if not commit:
        return CodeVersion()
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return CodeVersion(git_commit=commit + ("-dirty" if status else ""))


def next_run_seq(spark: SparkSession, output: OutputConfig, snapshot: date) -> int:
    """1 + the highest ``run_seq`` logged for the snapshot (1 when none is)."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, table_path(output, TABLE)):
        return 1
    last = (read_table(spark, output, TABLE)
            .where(F.col(SNAPSHOT_MONTH) == F.lit(snapshot))
            .agg(F.max("run_seq")).first()[0])
    return 1 if last is None else int(last) + 1


def run_log_rows(summary: RunSummary, snapshot: date, fingerprint: str, code: CodeVersion,
                 run_seq: int, started_at: datetime | None = None) -> list[tuple]:
    """The run-log rows of one run (plain tuples in :data:`RUN_LOG_SCHEMA` order).

    Args:
        summary: the run's :class:`cvm_spark.pipeline.summary.RunSummary` (``rows_read``,
            ``rows_quarantined``, ``rows_written``, ``stage_seconds``, ``table_stages``).
        snapshot: first day of the snapshot month.
        fingerprint: the config fingerprint.
        code: the code version.
        run_seq: the run's number within the snapshot.
        started_at: the run's start time; a naive datetime is taken as UTC.
    """
    if started_at is not None:
        started_at = (started_at.replace(tzinfo=timezone.utc) if started_at.tzinfo is None
                      else started_at.astimezone(timezone.utc))
    stages = summary.table_stages
    head = (snapshot, summary.run_id, run_seq, started_at, fingerprint, code.package,
            code.git_commit)
    rows: list[tuple] = []
    for name, read in summary.rows_read.items():
        bad = sum(summary.rows_quarantined.get(name, {}).values())
        rows.append((*head, INPUT, name, stages.get(f"{INPUT}:{name}"), int(read), int(bad),
                     int(read) - int(bad), None))
    for name, written in summary.rows_written.items():
        rows.append((*head, OUTPUT, name, stages.get(f"{OUTPUT}:{name}"), None, None,
                     int(written), None))
    for name, seconds in summary.stage_seconds.items():
        rows.append((*head, STAGE, name, name, None, None, None, float(seconds)))
    return rows


def write_run_log(spark: SparkSession, cfg: CvmConfig, summary: RunSummary,
                  code: CodeVersion | None = None, started_at: datetime | None = None) -> int:
    """Append the run's rows to ``run_log`` (call last, after every other table).

    Args:
        spark: the session.
        cfg: the run's configuration (snapshot, output, fingerprint).
        summary: the run's :class:`cvm_spark.pipeline.summary.RunSummary`.
        code: the code version (default: the package version, commit unknown).
        started_at: the run's start time, from the caller (default: not recorded).

    Returns:
        The number of rows appended.
    """
    snapshot = cfg.snapshot
    run_seq = next_run_seq(spark, cfg.output, snapshot)
    rows = run_log_rows(summary, snapshot, cfg.fingerprint(), code or CodeVersion(), run_seq,
                        started_at)
    frame: DataFrame = spark.createDataFrame(rows, RUN_LOG_SCHEMA)
    written = write_snapshot(frame, TABLE, cfg.output, snapshot, mode="append")
    log.info("run log: run %s #%d of %s logged (%d rows)", summary.run_id, run_seq,
             snapshot.isoformat(), written)
    return written

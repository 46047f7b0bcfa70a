"""The one Delta writer every job uses, and the catalog registration of the outputs.

Each output table lives at ``<warehouse>/<database>/<table>``, is partitioned by
``snapshot_month`` and is created explicitly with a comment on every column. A write replaces
exactly one snapshot (``replaceWhere``), so re-running a month leaves one copy of it and
never touches other months. Log-like tables (``run_log``) are written in ``append`` mode
instead: every write adds its rows to the snapshot and keeps the earlier ones, with the same
creation, comments, schema checks, row count and one-commit atomicity. Only
reader-protocol-1 table features are used (no deletion vectors, no column mapping), so
delta-rs, DuckDB and Polars read the tables directly.

Next to every table ``<database>.<table>`` the catalog gets a view
``<database>.<table>_latest`` over its newest snapshot, for BI tools that should not have to
know which month is current.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Any, Literal

from delta.exceptions import MetadataChangedException, ProtocolChangedException
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from cvm_spark.config import CATALOG_DIR, OutputConfig
from cvm_spark.schemas.inputs import SNAPSHOT_MONTH
from cvm_spark.schemas.outputs import TABLE_DESCRIPTIONS, column_comment
from cvm_spark.storage.locking import table_write_guard

log = logging.getLogger(__name__)

# Table properties set on creation. Deletion vectors and column mapping would raise the
# reader protocol above what non-Spark readers support; keep them off explicitly so a
# different cluster default cannot turn them on.
TABLE_PROPERTIES: dict[str, str] = {
    "delta.enableDeletionVectors": "false",
    "delta.columnMapping.mode": "none",
    "delta.autoOptimize.optimizeWrite": "false",
}

# <database>.<table><suffix> is the view over the newest snapshot of <table>.
LATEST_VIEW_SUFFIX = "_latest"


# Commit conflicts that concern the whole table, not our snapshot: another run (of another
# month) created the table or added columns while we were writing. The write is simply
# repeated against the new table version. Conflicts on our own partition
# (ConcurrentAppendException, ConcurrentDeleteReadException, ConcurrentDeleteDeleteException)
# are not retried: under the snapshot lock they mean a writer outside cvm_spark touched the
# month, and repeating the write would silently overrule it.
RETRYABLE_CONFLICTS: tuple[type[Exception], ...] = (MetadataChangedException,
                                                    ProtocolChangedException)
COMMIT_ATTEMPTS = 4
RETRY_PAUSE_SECONDS = 1.0
# After a failed create: how long to wait for a concurrent creator's first commit to appear.
CREATE_WAIT_SECONDS = 10.0
CREATE_POLL_SECONDS = 0.5

WriteMode = Literal["replace", "append"]
WRITE_MODES: tuple[str, ...] = ("replace", "append")


class OutputSchemaError(ValueError):
    """A DataFrame that cannot be written to its output table as it is."""


def table_path(output: OutputConfig, table: str) -> str:
    """Location of an output table: absolute for local paths, as given for URIs.

    Raises:
        ConfigError: the location would resolve outside ``output.warehouse`` (a symlink
            escape; see :meth:`cvm_spark.config.OutputConfig.location`).
    """
    return output.location(output.database, table)


def qualified_name(output: OutputConfig, table: str) -> str:
    return f"{output.database}.{table}"


def _sql_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _comments(df: DataFrame, table: str) -> dict[str, str]:
    comments = {}
    missing = []
    for name in df.columns:
        comment = column_comment(name)
        if comment is None:
            missing.append(name)
        else:
            comments[name] = comment
    if missing:
        raise OutputSchemaError(
            f"table {table}: column(s) {missing} have no comment in cvm_spark/schemas/outputs.py")
    return comments


def _create_table(spark: SparkSession, df: DataFrame, table: str, path: str,
                  properties: dict[str, str] | None = None) -> None:
    comments = _comments(df, table)
    builder = (DeltaTable.createIfNotExists(spark)
               .location(path)
               .comment(TABLE_DESCRIPTIONS.get(table, table))
               .partitionedBy(SNAPSHOT_MONTH))
    for fld in df.schema.fields:
        builder = builder.addColumn(fld.name, fld.dataType, nullable=True,
                                    comment=comments[fld.name])
    for key, value in {**(properties or {}), **TABLE_PROPERTIES}.items():
        builder = builder.property(key, value)
    try:
        builder.execute()
    except Exception as exc:
        # Another run (of another month) created the table between our check and our commit:
        # Delta says ProtocolChangedException, or, when the other commit is still being
        # written, "location is not empty and also not a Delta table". Its schema is checked
        # by _align_schema like any existing table's.
        if not _created_elsewhere(spark, path):
            raise
        log.info("table %s was created meanwhile by another writer; using it (%s)", table,
                 type(exc).__name__)
        return
    log.info("created Delta table %s at %s", table, path)


def _created_elsewhere(spark: SparkSession, path: str) -> bool:
    """Whether a Delta table is (or within a few seconds becomes) readable at ``path``."""
    deadline = time.monotonic() + CREATE_WAIT_SECONDS
    while not DeltaTable.isDeltaTable(spark, path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(CREATE_POLL_SECONDS)
    return True


def _align_schema(spark: SparkSession, df: DataFrame, table: str, path: str
                  ) -> tuple[DataFrame, bool]:
    """Add new columns (with comments) to an existing table; refuse incompatible changes.

    Returns ``df`` in the table's column order and whether columns were added."""
    existing = {f.name: f.dataType for f in spark.read.format("delta").load(path).schema.fields}
    incoming = {f.name: f.dataType for f in df.schema.fields}
    dropped = [c for c in existing if c not in incoming]
    if dropped:
        raise OutputSchemaError(
            f"table {table}: the output lacks column(s) {dropped} that the table at {path} "
            "has; a snapshot must carry every column of the table")
    changed = [c for c, t in incoming.items() if c in existing and existing[c] != t]
    if changed:
        raise OutputSchemaError(
            f"table {table}: column(s) {changed} changed type "
            f"({[(c, existing[c].simpleString(), incoming[c].simpleString()) for c in changed]})")
    added = [c for c in incoming if c not in existing]
    if added:
        comments = _comments(df.select(*added), table)
        cols = ", ".join(f"`{c}` {incoming[c].simpleString()} COMMENT {_sql_literal(comments[c])}"
                         for c in added)
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({cols})")
        log.info("table %s: added column(s) %s", table, added)
    return df.select(*existing, *added), bool(added)


def write_snapshot(df: DataFrame, table: str, output: OutputConfig, snapshot: date,
                   mode: WriteMode = "replace", properties: dict[str, str] | None = None) -> int:
    """:func:`write_observed` without extra metrics: returns the number of rows written."""
    rows, _ = write_observed(df, table, output, snapshot, mode, properties)
    return rows


def write_observed(df: DataFrame, table: str, output: OutputConfig, snapshot: date,
                   mode: WriteMode = "replace", properties: dict[str, str] | None = None,
                   observe: dict[str, Column] | None = None) -> tuple[int, dict[str, Any]]:
    """Write one snapshot month of an output table: replace it (default) or append to it.

    ``replace`` is ``overwrite`` with ``replaceWhere snapshot_month = <snapshot>``: the
    snapshot ends up holding exactly ``df``. ``append`` adds ``df`` to the snapshot and keeps
    the rows written before (used by ``run_log``, which keeps the history of every run). In
    both modes the write is one Delta commit, other snapshots are untouched, and a row whose
    ``snapshot_month`` is not ``snapshot`` fails the write before anything is committed
    (``replaceWhere`` checks this itself; in append mode a guard on the column does).

    Concurrent writers (runs of other months): on a local warehouse, processes writing the same
    table take turns (:func:`cvm_spark.storage.locking.table_write_guard`); a table created
    meanwhile by another writer is used as it is (schema checked); a commit that fails because
    another writer changed the table's metadata or protocol (creation, added columns) is
    repeated, at most ``COMMIT_ATTEMPTS`` times. Conflicts on this snapshot's own files are not
    retried.

    Args:
        df: rows of this snapshot only; must have a ``snapshot_month`` column equal to
            ``snapshot`` and a documented comment for every column.
        table: output table name (``features``, ``rfm``, ...).
        output: the warehouse settings.
        snapshot: first day of the snapshot month.
        mode: ``replace`` or ``append``.
        properties: extra table properties set when the write creates the table (e.g. the
            pseudonym key id, :func:`cvm_spark.storage.privacy.table_properties`).

        observe: extra aggregates computed over the rows while they are written (e.g. rows
            per segment), name -> aggregate expression; no extra pass over the data.

    Returns:
        The number of rows written and the ``observe`` values (both counted while writing,
        not by a second pass).

    Raises:
        OutputSchemaError: an undocumented column, or a schema change that would lose data.
        ValueError: an unknown mode.
        ConcurrentAppendException (and the other ``delta.exceptions``): a conflict that is
            not retried, or one that persisted through every attempt.
    """
    if mode not in WRITE_MODES:
        raise ValueError(f"write mode must be one of {WRITE_MODES}, got {mode!r}")
    if SNAPSHOT_MONTH not in df.columns:
        raise OutputSchemaError(f"table {table}: the output has no {SNAPSHOT_MONTH} column")
    spark = df.sparkSession
    path = table_path(output, table)
    month = F.col(SNAPSHOT_MONTH).cast("date")
    if mode == "append":
        # replaceWhere refuses rows outside the snapshot; an append has no such check, so the
        # partition column itself fails the task (hence the job, before the commit) on a row
        # of another month or a null month. No extra pass over the data.
        month = F.when(month == F.lit(snapshot), month).otherwise(F.raise_error(F.lit(
            f"table {table}: a row's {SNAPSHOT_MONTH} is not {snapshot.isoformat()}")))
    df = df.withColumn(SNAPSHOT_MONTH, month)
    with table_write_guard(output, table):
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                observed, changed = _write_once(df, table, path, output, snapshot, mode,
                                                attempt, properties, observe or {})
                break
            except RETRYABLE_CONFLICTS as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning("table %s: another writer changed the table's metadata or protocol "
                            "during the write of %s (%s); retrying (attempt %d of %d)", table,
                            snapshot.isoformat(), type(exc).__name__, attempt + 1,
                            COMMIT_ATTEMPTS)
                time.sleep(RETRY_PAUSE_SECONDS * attempt)
    _register(spark, output, table, path, changed)
    rows = int(observed.pop("rows"))
    log.info("wrote %s rows to %s for %s (%s)", rows, table, snapshot.isoformat(), mode)
    return rows, observed


def _write_once(df: DataFrame, table: str, path: str, output: OutputConfig, snapshot: date,
                mode: WriteMode, attempt: int, properties: dict[str, str] | None,
                observe: dict[str, Column]) -> tuple[dict[str, Any], bool]:
    """One attempt of :func:`write_snapshot`: create or check the table, then one commit.

    Returns the observed values and whether the table was created or gained columns."""
    spark = df.sparkSession
    created = not DeltaTable.isDeltaTable(spark, path)
    if created:
        _create_table(spark, df, table, path, properties)
    # also after creating: the table may come from a concurrent writer
    df, added = _align_schema(spark, df, table, path)
    observation = Observation(f"write_{table}_{attempt}")
    observed = df.observe(observation, F.count(F.lit(1)).alias("rows"),
                          *[agg.alias(name) for name, agg in observe.items()])
    writer = (observed.write.format("delta")
              .option("maxRecordsPerFile", output.target_file_rows))
    if mode == "replace":
        writer = (writer.mode("overwrite")
                  .option("replaceWhere", f"{SNAPSHOT_MONTH} = DATE'{snapshot.isoformat()}'"))
    else:
        writer = writer.mode("append")
    writer.save(path)
    return dict(observation.get), created or added


def _normalise_location(location: str) -> str:
    for prefix in ("file://", "file:"):
        if location.startswith(prefix):
            location = location[len(prefix):]
            break
    return location.rstrip("/")


def create_database(spark: SparkSession, output: OutputConfig) -> None:
    """``CREATE DATABASE IF NOT EXISTS <database>`` with its folder inside the warehouse.

    The catalog creates a folder for a new database (under ``spark.sql.warehouse.dir``,
    which ``cvm`` points at ``<warehouse>/_catalog``; Spark's default is ``./spark-warehouse``
    of the working directory); it is put at ``<warehouse>/_catalog/<database>.db`` so every
    write stays inside ``output.warehouse``. The tables themselves are external (their own
    locations), and that folder stays empty.
    """
    location = output.location(CATALOG_DIR, f"{output.database}.db")
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {output.database} "
              f"LOCATION {_sql_literal(location)}")


# (application id, qualified table name) -> the location this process registered it at.
# Registration costs Delta log reads and a view analysis (~0.6 s a table); within one Spark
# application it is needed once per table and location, and again only when a write
# created the table or added columns (the view's stored schema and comments follow).
_REGISTERED: dict[tuple[str, str], str] = {}


def _register(spark: SparkSession, output: OutputConfig, table: str, path: str,
              changed: bool = True) -> None:
    """Point ``<database>.<table>`` at ``path`` (an external table: dropping it keeps data).

    Also (re)creates the ``<table>_latest`` view, so it carries columns added by a write.
    Skipped when this application already registered the table at ``path``, it is still in
    the catalog and ``changed`` is false (the write neither created the table nor added
    columns).
    """
    name = qualified_name(output, table)
    key = (spark.sparkContext.applicationId, name)
    here = _normalise_location(path)
    if (not changed and _REGISTERED.get(key) == here
            and spark.catalog.tableExists(name)
            and spark.catalog.tableExists(latest_view_name(output, table))):
        return
    create_database(spark, output)
    registered = False
    if spark.catalog.tableExists(name):
        location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
        registered = _normalise_location(location) == _normalise_location(path)
        if not registered:
            # registered earlier in this session for another warehouse: re-point it
            spark.sql(f"DROP TABLE {name}")
    if not registered:
        spark.sql(f"CREATE TABLE {name} USING DELTA LOCATION {_sql_literal(path)}")
    _create_latest_view(spark, output, table)
    _REGISTERED[key] = here


def latest_view_name(output: OutputConfig, table: str) -> str:
    """Name of the view over the newest snapshot of a table, e.g. ``cvm.tiers_latest``."""
    return f"{qualified_name(output, table)}{LATEST_VIEW_SUFFIX}"


def latest_view_sql(output: OutputConfig, table: str) -> str:
    """The ``CREATE OR REPLACE VIEW`` statement of :func:`latest_view_name`.

    The newest month is the table's own ``max(snapshot_month)``; Spark answers it from the
    Delta log (partition values) and then reads only that partition. ``WITH SCHEMA
    EVOLUTION`` makes the view follow columns added to the table later, with their comments,
    also when another session (a running Thrift server) adds them.
    """
    name = qualified_name(output, table)
    comment = (f"{TABLE_DESCRIPTIONS.get(table, table)} Newest snapshot only: rows of {name} "
               f"where {SNAPSHOT_MONTH} = max({SNAPSHOT_MONTH}).")
    return (f"CREATE OR REPLACE VIEW {latest_view_name(output, table)} "
            f"WITH SCHEMA EVOLUTION COMMENT {_sql_literal(comment)} "
            f"AS SELECT * FROM {name} "
            f"WHERE {SNAPSHOT_MONTH} = (SELECT max({SNAPSHOT_MONTH}) FROM {name})")


def _create_latest_view(spark: SparkSession, output: OutputConfig, table: str) -> None:
    # Re-created on every registration and write (reads the Delta log, no data files): it
    # is how the view appears in a new session's in-memory catalog at all, and it refreshes
    # the stored schema that DESCRIBE shows with the column comments.
    spark.sql(latest_view_sql(output, table))


def register_tables(spark: SparkSession, output: OutputConfig) -> list[str]:
    """Register every output table that exists in the warehouse by name (``cvm.<table>``).

    Each table also gets its newest-snapshot view ``cvm.<table>_latest``. The catalog is
    in-memory, so each new session calls this; it works for any file system Spark can read
    (local, HDFS, object stores).

    Returns:
        The names of the tables found and registered (without the database).
    """
    names = []
    for table in TABLE_DESCRIPTIONS:
        path = table_path(output, table)
        if DeltaTable.isDeltaTable(spark, path):
            _register(spark, output, table, path, changed=False)
            names.append(table)
    return names


def read_table(spark: SparkSession, output: OutputConfig, table: str) -> DataFrame:
    """Read an output table by location (all snapshots)."""
    return spark.read.format("delta").load(table_path(output, table))

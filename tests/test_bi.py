"""BI access to the pipeline's tables: without Spark (delta-rs, DuckDB, Polars), the latest
views and column comments, and the reader protocol (JDBC: test_thrift.py).

Works on a copy of the warehouse of the shared pipeline run (tests/conftest.py) to which an
older, smaller snapshot is added, so partition filters and "latest" have something to tell
apart.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType, StructType

from cvm_spark.schemas.inputs import SNAPSHOT_MONTH
from cvm_spark.schemas.outputs import TABLE_DESCRIPTIONS
from cvm_spark.storage.delta import (
    latest_view_name,
    qualified_name,
    read_table,
    register_tables,
    table_path,
    write_snapshot,
)

deltalake = pytest.importorskip("deltalake")
duckdb = pytest.importorskip("duckdb")
pl = pytest.importorskip("polars")
pc = pytest.importorskip("pyarrow.compute")

pytestmark = pytest.mark.e2e

TABLES = list(TABLE_DESCRIPTIONS)
EARLIER = date(2024, 6, 1)  # the added older snapshot; before any month the e2e tests write

Totals = tuple[int, dict[str, float | None]]


@pytest.fixture(scope="module")
def bi_output(spark, e2e_config, e2e_summary, tmp_path_factory):
    """The pipeline's tables copied to a new warehouse (database ``cvm_bi``), plus snapshot
    ``EARLIER`` holding about two thirds of the rows of the pipeline's snapshot."""
    source = Path(e2e_config.output.warehouse) / e2e_config.output.database
    output = replace(e2e_config.output, warehouse=str(tmp_path_factory.mktemp("bi") / "wh"),
                     database="cvm_bi")
    shutil.copytree(source, Path(output.warehouse) / output.database)
    for table in TABLES:
        rows = read_table(spark, output, table).where(
            F.col(SNAPSHOT_MONTH) == F.lit(e2e_config.snapshot))
        older = (rows.where(F.xxhash64(*rows.columns) % 3 != 0)
                 .withColumn(SNAPSHOT_MONTH, F.lit(EARLIER)))
        write_snapshot(older, table, output, EARLIER)
    assert register_tables(spark, output) == TABLES
    return output


def _numeric(schema: StructType) -> list[str]:
    return [f.name for f in schema.fields if isinstance(f.dataType, NumericType)]


def _number(value: object) -> float | None:
    if value is None:
        return None
    return float(value) if isinstance(value, (int, float, Decimal)) else float("nan")


def _spark_totals(spark, output, table: str) -> dict[date, Totals]:
    """Rows and the sum of every numeric column per snapshot month, by Spark."""
    df = spark.table(qualified_name(output, table))
    columns = _numeric(df.schema)
    rows = df.groupBy(SNAPSHOT_MONTH).agg(
        F.count(F.lit(1)).alias("__rows"), *[F.sum(c).alias(c) for c in columns]).collect()
    return {r[SNAPSHOT_MONTH]: (r["__rows"], {c: _number(r[c]) for c in columns})
            for r in rows}


def _assert_same(reader: str, table: str, month: date, got: Totals, want: Totals) -> None:
    where = f"{reader}: {table} {month}"
    assert got[0] == want[0], f"{where}: row count"
    assert set(got[1]) == set(want[1]), f"{where}: numeric columns"
    for column, expected in want[1].items():
        value = got[1][column]
        if expected is None:
            assert value is None, f"{where}: sum({column})"
        elif math.isnan(expected):
            assert value is not None and math.isnan(value), f"{where}: sum({column})"
        else:
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-6), \
                f"{where}: sum({column})"


def _deltalake_totals(path: str, month: date, columns: list[str]) -> Totals:
    # partition filter: delta-rs prunes the files of other months before reading
    arrow = deltalake.DeltaTable(path).to_pyarrow_table(
        filters=[(SNAPSHOT_MONTH, "=", month)])
    return arrow.num_rows, {c: _number(pc.sum(arrow[c]).as_py()) for c in columns}


def _duckdb_totals(path: str, month: date, columns: list[str]) -> Totals:
    con = duckdb.connect()
    try:
        # the Arrow dataset of delta-rs: DuckDB pushes the snapshot_month filter into it
        con.register("t", deltalake.DeltaTable(path).to_pyarrow_dataset())
        sums = "".join(f', sum("{c}")' for c in columns)
        row = con.execute(f"select count(*){sums} from t where {SNAPSHOT_MONTH} = ?",
                          [month]).fetchone()
    finally:
        con.close()
    return row[0], {c: _number(v) for c, v in zip(columns, row[1:], strict=True)}


def _polars_totals(path: str, month: date, columns: list[str]) -> Totals:
    frame = (pl.scan_delta(path).filter(pl.col(SNAPSHOT_MONTH) == month)
             .select(pl.len().alias("__rows"),
                     *[pl.col(c).sum().alias(c) for c in columns],
                     *[pl.col(c).count().alias(f"__n_{c}") for c in columns])
             .collect())
    row = frame.row(0, named=True)
    # Polars sums an all-null column to 0 where SQL engines say null
    return row["__rows"], {c: _number(row[c]) if row[f"__n_{c}"] else None for c in columns}


@pytest.mark.parametrize("table", TABLES)
def test_every_table_reads_the_same_without_spark(spark, bi_output, table):
    by_spark = _spark_totals(spark, bi_output, table)
    assert EARLIER in by_spark and len(by_spark) >= 2, sorted(by_spark)
    path = table_path(bi_output, table)
    for month, want in sorted(by_spark.items()):
        columns = sorted(want[1])
        _assert_same("deltalake", table, month, _deltalake_totals(path, month, columns), want)
        _assert_same("duckdb", table, month, _duckdb_totals(path, month, columns), want)
        _assert_same("polars", table, month, _polars_totals(path, month, columns), want)
    assert deltalake.DeltaTable(path).to_pyarrow_dataset().count_rows() == \
        sum(rows for rows, _ in by_spark.values())


def test_every_table_stays_at_reader_protocol_1(bi_output):
    for table in TABLES:
        path = Path(table_path(bi_output, table))
        protocol = deltalake.DeltaTable(str(path)).protocol()
        assert protocol.min_reader_version == 1, table
        assert not protocol.reader_features, table
        assert not {"deletionVectors", "columnMapping"} & set(protocol.writer_features or []), \
            table
        # the whole log, not only the current state: no commit ever raised the protocol
        commits = sorted((path / "_delta_log").glob("*.json"))
        assert commits, table
        for commit in commits:
            for line in commit.read_text().splitlines():
                action = json.loads(line)
                if "protocol" in action:
                    assert action["protocol"]["minReaderVersion"] == 1, (table, commit.name)
                    assert not action["protocol"].get("readerFeatures"), (table, commit.name)
                if "metaData" in action:
                    conf = action["metaData"].get("configuration", {})
                    assert conf.get("delta.enableDeletionVectors", "false") == "false", table
                    assert conf.get("delta.columnMapping.mode", "none") == "none", table
                if "add" in action:
                    assert not action["add"].get("deletionVector"), (table, commit.name)


def test_latest_views_show_only_the_newest_snapshot(spark, bi_output, e2e_config):
    for table in TABLES:
        months = {r[0]: r[1] for r in spark.table(qualified_name(bi_output, table))
                  .groupBy(SNAPSHOT_MONTH).count().collect()}
        newest = max(months)
        assert newest == e2e_config.snapshot, table
        latest = spark.table(latest_view_name(bi_output, table))
        assert latest.columns == spark.table(qualified_name(bi_output, table)).columns, table
        got = {r[0]: r[1] for r in latest.groupBy(SNAPSHOT_MONTH).count().collect()}
        assert got == {newest: months[newest]}, table


@pytest.mark.parametrize("name", ["tiers", "tiers_latest"])
def test_describe_shows_a_comment_for_every_column(spark, bi_output, name):
    described = [r for r in spark.sql(f"describe {bi_output.database}.{name}").collect()
                 if r.col_name and not r.col_name.startswith("#")]
    columns = spark.table(qualified_name(bi_output, "tiers")).columns
    comments = {r.col_name: r.comment for r in described}
    assert set(columns) <= set(comments)
    assert all(comments[c] and comments[c].strip() for c in columns), \
        [c for c in columns if not comments[c]]


def test_latest_snapshot_recipes_without_spark(spark, bi_output):
    """The newest-snapshot queries of docs/bi.md for readers that do not see Spark views."""
    for table in TABLES:
        expected = spark.table(latest_view_name(bi_output, table)).count()
        path = table_path(bi_output, table)
        dt = deltalake.DeltaTable(path)
        # delta-rs: the newest month from the partition list (the log only), then one month
        newest = max(date.fromisoformat(p[SNAPSHOT_MONTH]) for p in dt.partitions())
        assert dt.to_pyarrow_table(filters=[(SNAPSHOT_MONTH, "=", newest)]).num_rows == \
            expected, table
        con = duckdb.connect()
        try:
            con.register("t", dt.to_pyarrow_dataset())
            got = con.execute(f"select count(*) from t where {SNAPSHOT_MONTH} = "
                              f"(select max({SNAPSHOT_MONTH}) from t)").fetchone()[0]
        finally:
            con.close()
        assert got == expected, table
        latest = pl.scan_delta(path).filter(
            pl.col(SNAPSHOT_MONTH) == pl.col(SNAPSHOT_MONTH).max())
        assert latest.select(pl.len()).collect().item() == expected, table

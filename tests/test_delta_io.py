"""The Delta writer: snapshot replacement, comments, catalog names, non-Spark readers."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from cvm_spark.storage.delta import (
    OutputSchemaError,
    latest_view_name,
    register_tables,
    table_path,
    write_snapshot,
)

JAN, FEB = date(2024, 1, 1), date(2024, 2, 1)


@pytest.fixture
def output(base_config, tmp_path):
    return replace(base_config.output, warehouse=str(tmp_path / "wh"), database="cvm_test")


def _frame(spark, month, rows):
    return spark.createDataFrame([(month, a, s) for a, s in rows],
                                 "snapshot_month date, account_id string, segment string")


def test_rerun_replaces_exactly_its_snapshot(spark, output):
    jan = _frame(spark, JAN, [("a", "Lost"), ("b", "New")])
    assert write_snapshot(jan, "rfm", output, JAN) == 2
    write_snapshot(_frame(spark, FEB, [("a", "Loyal")]), "rfm", output, FEB)
    write_snapshot(jan, "rfm", output, JAN)          # same snapshot again
    again = _frame(spark, JAN, [("a", "Champions")])
    write_snapshot(again, "rfm", output, JAN)        # and once more with new content
    table = spark.read.format("delta").load(table_path(output, "rfm"))
    expected = _frame(spark, JAN, [("a", "Champions")]).unionByName(
        _frame(spark, FEB, [("a", "Loyal")]))
    assertDataFrameEqual(table, expected)


def test_tables_are_registered_with_comments(spark, output):
    write_snapshot(_frame(spark, JAN, [("a", "Lost")]), "rfm", output, JAN)
    assert spark.sql("select count(*) as n from cvm_test.rfm").first().n == 1
    spark.sql("drop table cvm_test.rfm")
    assert register_tables(spark, output) == ["rfm"]
    comments = {r.col_name: r.comment for r in spark.sql("describe table cvm_test.rfm")
                .collect() if not r.col_name.startswith("#")}
    assert all(comments[c] for c in ("snapshot_month", "account_id", "segment"))


def test_readable_without_spark_at_reader_protocol_1(spark, output):
    deltalake = pytest.importorskip("deltalake")
    write_snapshot(_frame(spark, JAN, [("a", "Lost"), ("b", "New")]), "rfm", output, JAN)
    write_snapshot(_frame(spark, FEB, [("c", "New")]), "rfm", output, FEB)
    write_snapshot(_frame(spark, FEB, [("c", "New")]), "rfm", output, FEB)
    dt = deltalake.DeltaTable(table_path(output, "rfm"))
    assert dt.protocol().min_reader_version == 1
    assert dt.metadata().partition_columns == ["snapshot_month"]
    rows = dt.to_pyarrow_table().to_pylist()
    assert sorted((r["snapshot_month"], r["account_id"]) for r in rows) == \
        [(JAN, "a"), (JAN, "b"), (FEB, "c")]
    feb = dt.to_pyarrow_table(partitions=[("snapshot_month", "=", "2024-02-01")])
    assert feb.num_rows == 1
    schema = dt.schema()
    fields = {f.name: f for f in schema.fields}
    assert fields["segment"].metadata.get("comment")


def test_undocumented_column_is_refused(spark, output):
    df = _frame(spark, JAN, [("a", "Lost")]).withColumn("mystery", F.lit(1))
    with pytest.raises(OutputSchemaError, match="mystery"):
        write_snapshot(df, "rfm", output, JAN)


def test_new_columns_are_added_with_comments_and_lost_columns_refused(spark, output):
    write_snapshot(_frame(spark, JAN, [("a", "Lost")]), "rfm", output, JAN)
    wider = _frame(spark, FEB, [("b", "New")]).withColumn("rfm_score", F.lit(3))
    write_snapshot(wider, "rfm", output, FEB)
    table = spark.read.format("delta").load(table_path(output, "rfm"))
    assert table.where("snapshot_month = DATE'2024-01-01'").first().rfm_score is None
    with pytest.raises(OutputSchemaError, match="lacks column"):
        write_snapshot(_frame(spark, JAN, [("a", "x")]).drop("segment"), "rfm", output, JAN)


def test_append_keeps_earlier_rows_and_other_snapshots(spark, output):
    jan = _frame(spark, JAN, [("a", "Lost")])
    assert write_snapshot(jan, "rfm", output, JAN, mode="append") == 1
    write_snapshot(_frame(spark, FEB, [("b", "New")]), "rfm", output, FEB)
    assert write_snapshot(_frame(spark, JAN, [("c", "New"), ("d", "New")]), "rfm", output,
                          JAN, mode="append") == 2
    table = spark.read.format("delta").load(table_path(output, "rfm"))
    expected = _frame(spark, JAN, [("a", "Lost"), ("c", "New"), ("d", "New")]).unionByName(
        _frame(spark, FEB, [("b", "New")]))
    assertDataFrameEqual(table, expected)


def test_append_refuses_rows_of_another_snapshot_and_writes_nothing(spark, output):
    write_snapshot(_frame(spark, JAN, [("a", "Lost")]), "rfm", output, JAN, mode="append")
    path = table_path(output, "rfm")
    version = spark.sql(f"describe history delta.`{path}`").agg(F.max("version")).first()[0]
    mixed = _frame(spark, JAN, [("b", "New")]).unionByName(_frame(spark, FEB, [("c", "New")]))
    with pytest.raises(Exception, match="is not 2024-01-01"):
        write_snapshot(mixed, "rfm", output, JAN, mode="append")
    assert spark.sql(f"describe history delta.`{path}`").agg(F.max("version")).first()[0] \
        == version
    assert spark.read.format("delta").load(path).count() == 1
    with pytest.raises(ValueError, match="write mode"):
        write_snapshot(_frame(spark, JAN, [("a", "x")]), "rfm", output, JAN, mode="merge")


def test_latest_view_shows_the_newest_snapshot_with_comments(spark, output):
    write_snapshot(_frame(spark, FEB, [("a", "Lost"), ("b", "New")]), "rfm", output, FEB)
    write_snapshot(_frame(spark, JAN, [("c", "New")]), "rfm", output, JAN)  # older, later
    view = latest_view_name(output, "rfm")
    assert view == "cvm_test.rfm_latest"
    assertDataFrameEqual(spark.table(view), _frame(spark, FEB, [("a", "Lost"), ("b", "New")]))
    # a column added by a later write shows up in the view, with its comment
    wider = _frame(spark, FEB, [("a", "Loyal")]).withColumn("rfm_score", F.lit(7))
    write_snapshot(wider, "rfm", output, FEB)
    assert [tuple(r) for r in spark.table(view).collect()] == [(FEB, "a", "Loyal", 7)]
    comments = {r.col_name: r.comment for r in spark.sql(f"describe table {view}").collect()}
    assert set(comments) == {"snapshot_month", "account_id", "segment", "rfm_score"}
    assert all(comments.values())
    # a new session (empty in-memory catalog) gets the view from register_tables
    spark.sql(f"drop view {view}")
    spark.sql("drop table cvm_test.rfm")
    register_tables(spark, output)
    assert spark.table(view).count() == 1

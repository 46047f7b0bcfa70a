"""Duplicate keys without shuffling every row: the keys that occur more than once, found
by an aggregate of 8-byte key hashes, and the duplicate window over the rows that carry
one (docs/performance.md, "validation without shuffling the event rows").
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cvm_spark.contract.reading import check_schema
from cvm_spark.contract.rules import REASON, ROW_JSON, typed_columns
from cvm_spark.schemas.inputs import InputTable

KEY_HASH = "key_hash"
REPEATED = "_repeated"
ORDER_PREFIX = "_order_"


def key_hash(table: InputTable) -> Column:
    """A 64-bit hash of a row's typed key columns (equal keys, equal hashes)."""
    return F.xxhash64(*[F.col(c) for c in table.key])


def repeated_keys(raw: DataFrame, table: InputTable) -> DataFrame:
    """Hashes of the keys that occur on more than one row (one column, ``KEY_HASH``).

    An aggregate over the 8-byte hash of each row's typed key: the only shuffle of the
    event rows that finding duplicates needs. A row whose key hash is not in this set has
    no duplicate; two different keys that share a hash are both kept as candidates and told
    apart by the window of :func:`settle_duplicates`.
    """
    df = check_schema(table, raw)
    return (df.select(*typed_columns(table, only=table.key))
            .groupBy(key_hash(table).alias(KEY_HASH)).count()
            .where(F.col("count") > 1).select(KEY_HASH))


def source_json(table: InputTable, source_cols: list[str]) -> Column:
    """The original row, with its source column names, as JSON (from the ``_raw_`` contract
    columns and the ``_src_`` others)."""
    return F.to_json(F.struct(*[
        F.col(f"_raw_{c}" if c in table.columns else f"_src_{c}").alias(c)
        for c in source_cols]))


def settle_duplicates(candidates: DataFrame, table: InputTable,
                       json: Column | None = None) -> DataFrame:
    """Final reasons of the rows whose key occurs more than once.

    Among the rows with one key, the rows that are still accepted come first, then they are
    ordered by their source values (so the choice is deterministic); every accepted row
    after the first is a duplicate of an accepted row (``duplicate_event``). The window is
    partitioned by the key hash and the key (grouping treats nulls as equal, as the key
    comparison does); only these candidate rows are shuffled. ``json``: the JSON of a row
    when it is built here (from source columns); by default the ``ROW_JSON`` column.
    """
    order_by = [F.col(c) for c in candidates.columns if c.startswith(ORDER_PREFIX)]
    if json is None:
        json = F.col(ROW_JSON)
    else:  # the source columns themselves (small tables)
        order_by = [F.col(f"_raw_{c}") for c in table.columns
                    if sortable(candidates.schema, f"_raw_{c}")]
    window = Window.partitionBy(KEY_HASH, *table.key).orderBy(
        F.col(REASON).isNotNull(), *[c.asc_nulls_first() for c in order_by])
    key = F.struct(*[F.col(c) for c in table.key])
    duplicate = F.lag(key, 1).over(window).eqNullSafe(key)
    final = F.coalesce(F.col(REASON), F.when(duplicate, F.lit("duplicate_event")))
    with_reason = candidates.select(*table.columns, json.alias(ROW_JSON), final.alias(REASON))
    return with_reason.select(
        *table.columns, F.col(REASON),
        F.when(F.col(REASON).isNotNull(), F.col(ROW_JSON)).alias(ROW_JSON))


def sortable(schema: T.StructType, column: str) -> bool:
    """Whether a source column can take part in an ORDER BY (no maps)."""
    lower = {f.name.lower(): f.dataType for f in schema.fields}
    return not isinstance(lower.get(column), (T.MapType, T.StructType, T.ArrayType))

"""Reading the input tables and conforming them to the contract's schemas: a missing
or unreadable table, or a column that cannot be cast, stops the run before any work
(:class:`InputSchemaError`); CSV is read as text and cast like the other formats.
"""

from __future__ import annotations

import logging

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cvm_spark.common.jvm import hadoop_file
from cvm_spark.config import InputsConfig
from cvm_spark.schemas.inputs import INPUT_TABLES, MALFORMED_LINE, OPTIONAL_TABLES, InputTable

log = logging.getLogger(__name__)


class InputSchemaError(ValueError):
    """An input table that cannot be used as it is; the message names table and column."""


def read_inputs(spark: SparkSession, inputs: InputsConfig) -> dict[str, DataFrame]:
    """Read the input tables as they are (CSV columns as strings).

    A CSV table is read with its header's columns as strings plus the column
    ``schemas.MALFORMED_LINE``, which holds the text of a line that does not parse into
    those columns (and is null otherwise); validation quarantines such lines. An optional
    table (``schemas.OPTIONAL_TABLES``) whose default location does not exist is left out
    (logged); one named in ``inputs.tables`` must exist.

    Raises:
        InputSchemaError: a required (or configured optional) table's location does not
            exist or cannot be read.
    """
    raw = {}
    for name in INPUT_TABLES:
        path, fmt = inputs.location(name)
        if name in OPTIONAL_TABLES and name not in inputs.tables and not _exists(spark, path):
            log.info("input table %s: nothing at %s (optional: the figures that need it are "
                     "not computed)", name, path)
            continue
        try:
            if fmt == "csv":
                df = _read_csv(spark, path, inputs.csv_header)
            else:
                df = spark.read.format(fmt).load(path)
        # a missing path, unreadable files, a CSV without a header line (_read_csv)
        except (PySparkException, Py4JJavaError, ValueError) as exc:
            raise InputSchemaError(f"input table {name}: cannot read {fmt} at {path}: "
                                   f"{str(exc).splitlines()[0]}") from None
        raw[name] = df
    return raw


def _exists(spark: SparkSession, path: str) -> bool:
    fs, jpath = hadoop_file(spark, path)
    return bool(fs.exists(jpath))


def _read_csv(spark: SparkSession, path: str, header: bool) -> DataFrame:
    """A CSV table with every column a string, and malformed lines kept as text.

    Without an explicit schema Spark's PERMISSIVE mode fills a short line with nulls and
    drops the extra fields of a long one, silently. So the header is read first (Spark reads
    one line for it), then the table is read again with that header's columns as strings
    plus a corrupt-record column: a line with the wrong number of fields (which is also what
    an unterminated quote gives) then keeps its text there.
    """
    reader = (spark.read.option("header", header).option("inferSchema", False)
              .option("mode", "PERMISSIVE"))
    columns = reader.csv(path).columns
    if not columns:
        raise ValueError("no columns (the files are empty: no header line)")
    schema = T.StructType([T.StructField(c, T.StringType(), True) for c in columns]
                          + [T.StructField(MALFORMED_LINE, T.StringType(), True)])
    return (reader.schema(schema).option("columnNameOfCorruptRecord", MALFORMED_LINE)
            .csv(path))


def _castable(source: T.DataType, target: T.DataType) -> bool:
    if isinstance(source, (T.StructType, T.ArrayType, T.MapType, T.BinaryType)):
        return False
    if isinstance(source, (T.StringType, T.NullType)):
        return True
    numeric = (T.NumericType,)
    if isinstance(target, T.StringType):
        return isinstance(source, (*numeric, T.StringType))
    if isinstance(target, (T.DoubleType, T.IntegerType, T.LongType)):
        return isinstance(source, numeric)
    if isinstance(target, (T.DateType, T.TimestampType)):
        return isinstance(source, (T.DateType, T.TimestampType, T.TimestampNTZType))
    if isinstance(target, T.BooleanType):
        return isinstance(source, (T.BooleanType, T.IntegerType, T.LongType))
    return False  # pragma: no cover - the contract has no other types


def check_schema(table: InputTable, df: DataFrame) -> DataFrame:
    """Check required columns and castable types; return ``df`` with lower-case names.

    Raises:
        InputSchemaError: naming the table and the column.
    """
    df = df.toDF(*[c.lower() for c in df.columns])
    present = {f.name: f.dataType for f in df.schema.fields}
    if table.name == "accounts" and "birth_year" not in present and "age_band" in present:
        # The contract accepts an age band instead of the birth year.
        df = df.withColumn("birth_year", F.lit(None).cast("int"))
        present["birth_year"] = T.IntegerType()
    for fld in table.schema.fields:
        if fld.name not in present and fld.name in table.optional:
            # an optional column the source leaves out: nulls of its type
            df = df.withColumn(fld.name, F.lit(None).cast(fld.dataType))
            continue
        if fld.name not in present:
            raise InputSchemaError(
                f"input table {table.name}: required column {fld.name} is missing "
                f"(columns present: {sorted(set(present) - {MALFORMED_LINE})})")
        if not _castable(present[fld.name], fld.dataType):
            raise InputSchemaError(
                f"input table {table.name}: column {fld.name} has type "
                f"{present[fld.name].simpleString()}, which cannot be cast to "
                f"{fld.dataType.simpleString()}")
    return df

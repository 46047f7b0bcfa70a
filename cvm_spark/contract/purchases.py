"""A purchase log (customer, time, amount; optionally order id, quantity, channel) mapped
onto the six input tables of the contract (``cvm import-purchases``; docs/purchase-log.md).

* ``accounts``: one row per customer, opened on the day of the first purchase line (any
  amount), ``acquisition_channel`` = the channel of that line; never closed.
* ``transactions``: one row per log line, ``purchases.product_line`` and
  ``purchases.direction``. ``txn_id`` = the order id; a line without one gets an id of its
  own (``L<hash of its values>-<n>``, n = 1, 2, ... over the lines of that customer with
  the same values), so that repeated lines stay purchases instead of ``duplicate_event``.
  ``txn_ts`` and ``amount`` are written as text (ISO time, the double's shortest text), so a
  value that does not parse reaches validation as it was and is quarantined as
  ``malformed_value`` with its text.
* ``monthly_product``: per customer and month with a line, income = the month's spend (net of
  negative lines: returns), cost and average balance 0.
* ``marketing``, ``credit``, ``relations``: empty, with their declared schemas.

The log is read once for a profile (rows, unparsable values) and once to write the tables;
every grouping is by customer (or customer and month); nothing per customer reaches the
driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cvm_spark.config import CvmConfig, PurchaseLogConfig
from cvm_spark.contract.reading import InputSchemaError
from cvm_spark.schemas.inputs import ACCOUNT_ID, INPUT_TABLES, OPTIONAL_TABLES

TS_TEXT = "yyyy-MM-dd HH:mm:ss.SSSSSS"
EMPTY_TABLES = ("marketing", "credit", "relations")


class PurchaseLogError(InputSchemaError):
    """A purchase log that cannot be imported (missing, empty, a required column absent, or
    a timestamp/amount column none of whose values parse); the message says which."""


@dataclass(frozen=True)
class PurchaseLogProfile:
    """What one aggregate over the log found."""

    lines: int
    customers: int
    without_customer: int
    without_order_id: int
    zero_amount: int
    negative_amount: int
    bad_timestamp: int
    bad_amount: int
    first_day: date | None
    last_day: date | None


def read_purchase_log(spark: SparkSession, log_cfg: PurchaseLogConfig) -> DataFrame:
    """The log as it is (CSV: every column text), column names in lower case.

    Raises:
        PurchaseLogError: the path cannot be read, or a mapped column is missing.
    """
    reader = spark.read
    if log_cfg.format == "csv":
        reader = reader.option("header", True).option("inferSchema", False)
    try:
        df = reader.format(log_cfg.format).load(log_cfg.path)
    except (PySparkException, Py4JJavaError, ValueError) as exc:
        raise PurchaseLogError(f"purchase log: cannot read {log_cfg.format} at "
                               f"{log_cfg.path}: {str(exc).splitlines()[0]}") from None
    df = df.toDF(*[c.lower() for c in df.columns])
    for role, name in log_cfg.columns.items():
        if name.lower() not in df.columns:
            raise PurchaseLogError(
                f"purchase log {log_cfg.path}: column {name!r} (purchases.columns.{role}) is "
                f"missing (columns present: {sorted(df.columns)})")
    return df


def _parsed(log_cfg: PurchaseLogConfig) -> dict[str, Column]:
    """The log's values by role: raw text, parsed time and spend."""
    def text(role: str) -> Column:
        name = log_cfg.column(role)
        return (F.trim(F.col(name).cast("string")) if name is not None
                else F.lit(None).cast("string"))

    ts_raw, amount_raw = text("timestamp"), text("amount")
    ts_col = F.col(log_cfg.column("timestamp") or "")
    if log_cfg.timestamp_format is None:
        ts = ts_col.try_cast("timestamp")
    else:
        ts = F.when(ts_raw != "", F.try_to_timestamp(ts_raw, F.lit(log_cfg.timestamp_format)))
    amount = F.col(log_cfg.column("amount") or "").try_cast("double")
    if log_cfg.amount_per_unit:
        amount = amount * F.col(log_cfg.column("quantity") or "").try_cast("double")
    blank = F.lit("")
    return {
        "customer": F.when(text("customer_id") != blank, text("customer_id")),
        "order_id": F.when(text("order_id") != blank, text("order_id")),
        "ts_raw": F.when(ts_raw != blank, ts_raw), "ts": ts,
        "amount_raw": F.when(amount_raw != blank, amount_raw), "amount": amount,
        "quantity": text("quantity"), "channel": F.when(text("channel") != blank,
                                                        text("channel")),
    }


def normalised(log: DataFrame, log_cfg: PurchaseLogConfig) -> DataFrame:
    """One row per log line with the columns of :func:`_parsed` (one select)."""
    return log.select(*[c.alias(n) for n, c in _parsed(log_cfg).items()])


def profile_log(lines: DataFrame) -> PurchaseLogProfile:
    """Counts and the date range of a :func:`normalised` log, in one aggregate."""
    ok = F.col("ts").isNotNull() & F.col("amount").isNotNull()
    row = lines.agg(
        F.count(F.lit(1)).alias("lines"),
        F.countDistinct("customer").alias("customers"),
        F.count_if(F.col("customer").isNull()).alias("without_customer"),
        F.count_if(F.col("order_id").isNull()).alias("without_order_id"),
        F.count_if(ok & (F.col("amount") == 0)).alias("zero_amount"),
        F.count_if(ok & (F.col("amount") < 0)).alias("negative_amount"),
        F.count_if(F.col("ts_raw").isNotNull() & F.col("ts").isNull()).alias("bad_timestamp"),
        F.count_if(F.col("amount_raw").isNotNull() & F.col("amount").isNull())
        .alias("bad_amount"),
        F.min(F.to_date("ts")).alias("first_day"), F.max(F.to_date("ts")).alias("last_day"),
    ).first()
    assert row is not None
    return PurchaseLogProfile(**row.asDict())


def check_log(p: PurchaseLogProfile, log_cfg: PurchaseLogConfig, sample: DataFrame) -> None:
    """Refuse a log that cannot make the contract (before anything is written).

    Raises:
        PurchaseLogError: no lines; or no timestamp (or no amount) parses at all, naming
            the column and one of its values.
    """
    where = f"purchase log {log_cfg.path}"
    if p.lines == 0:
        raise PurchaseLogError(f"{where}: no lines (an empty file or only a header)")
    for role, bad, parsed, hint in (
            ("timestamp", p.bad_timestamp, "ts",
             "set purchases.timestamp_format to its Spark datetime pattern, e.g. "
             "dd/MM/yyyy HH:mm"),
            ("amount", p.bad_amount, "amount", "amounts are plain numbers such as 12.50")):
        if bad and sample.where(F.col(parsed).isNotNull()).limit(1).count() == 0:
            example = sample.where(F.col(f"{parsed}_raw").isNotNull()).first()
            value = None if example is None else example[f"{parsed}_raw"]
            raise PurchaseLogError(
                f"{where}: column {log_cfg.columns[role]!r} (purchases.columns.{role}): no "
                f"value parses as a {role} (e.g. {value!r}); {hint}")


def _line_ids(lines: DataFrame) -> Column:
    """``txn_id``: the order id, or for a line without one ``L<hash>-<n>``.

    n numbers the lines of one customer whose values are all equal (a window partitioned by
    the customer and those values; ranking needs no frame): equal lines are interchangeable,
    so the ids do not depend on the order of the file or its partitioning.
    """
    values = [F.col(c) for c in ("ts_raw", "amount_raw", "quantity", "channel")]
    same = Window.partitionBy(F.col("customer"), *values).orderBy(*values)
    own = F.concat(F.lit("L"), F.hex(F.xxhash64(F.col("customer"), *values)), F.lit("-"),
                   F.row_number().over(same).cast("string"))
    return F.coalesce(F.col("order_id"), own)


def contract_tables(lines: DataFrame, cfg: CvmConfig) -> dict[str, DataFrame]:
    """The six tables from a :func:`normalised` log (lazy)."""
    log_cfg = cfg.purchases
    assert log_cfg is not None
    spark = lines.sparkSession
    day = F.to_date("ts")
    first = F.min(F.struct(F.col("ts"), F.col("channel")))
    accounts = (lines.where(F.col("customer").isNotNull() & F.col("ts").isNotNull())
                .groupBy("customer").agg(first.alias("_first"))
                .select(F.col("customer").alias(ACCOUNT_ID),
                        F.to_date("_first.ts").alias("open_date"),
                        F.lit(None).cast("date").alias("close_date"),
                        F.lit(log_cfg.customer_type).alias("customer_type"),
                        F.lit(None).cast("string").alias("region"),
                        F.lit(None).cast("int").alias("birth_year"),
                        F.col("_first.channel").alias("acquisition_channel"),
                        F.lit(None).cast("double").alias("acquisition_cost")))
    transactions = lines.select(
        F.col("customer").alias(ACCOUNT_ID), _line_ids(lines).alias("txn_id"),
        F.coalesce(F.date_format("ts", TS_TEXT), F.col("ts_raw")).alias("txn_ts"),
        F.coalesce(F.col("amount").cast("string"), F.col("amount_raw")).alias("amount"),
        F.lit(log_cfg.product_line).alias("product_line"),
        F.lit(log_cfg.direction).alias("direction"),
        F.lit(None).cast("string").alias("counterparty_id"),
        F.col("quantity"), F.col("channel"))     # extra columns: kept in quarantine row_json
    monthly = (lines.where(F.col("customer").isNotNull() & F.col("ts").isNotNull()
                           & F.col("amount").isNotNull())
               .groupBy(F.col("customer").alias(ACCOUNT_ID),
                        F.trunc(day, "month").alias("month"))
               .agg(F.sum("amount").alias("income"))
               .select(ACCOUNT_ID, "month", F.lit(log_cfg.product_line).alias("product_line"),
                       F.lit(0.0).alias("avg_balance"), "income",
                       F.lit(0.0).alias("cost")))
    tables = {"accounts": accounts, "transactions": transactions, "monthly_product": monthly}
    for name in EMPTY_TABLES:
        tables[name] = spark.createDataFrame([], INPUT_TABLES[name].required_schema)
    assert set(tables) == set(INPUT_TABLES) - set(OPTIONAL_TABLES)
    return tables


def write_contract(tables: dict[str, DataFrame], cfg: CvmConfig) -> dict[str, str]:
    """Write each table where ``inputs`` of the config reads it (mode overwrite)."""
    paths = {}
    for name, df in tables.items():
        path, fmt = cfg.inputs.location(name)
        writer = df.write.mode("overwrite").format(fmt)
        if fmt == "csv":
            writer = writer.option("header", True)
        writer.save(path)
        paths[name] = path
    return paths


def import_purchases(spark: SparkSession, cfg: CvmConfig
                     ) -> tuple[PurchaseLogProfile, dict[str, str]]:
    """``cvm import-purchases``: read ``cfg.purchases``, check it, write the six tables to
    ``cfg.inputs``. Returns the log's profile and ``{table: path}``.

    Raises:
        PurchaseLogError: the config has no ``purchases`` section, or the log cannot be
            imported (:func:`read_purchase_log`, :func:`check_log`).
    """
    if cfg.purchases is None:
        raise PurchaseLogError("the config has no purchases section (see conf/retail.yaml)")
    lines = normalised(read_purchase_log(spark, cfg.purchases), cfg.purchases)
    profile = profile_log(lines)
    check_log(profile, cfg.purchases, lines)
    return profile, write_contract(contract_tables(lines, cfg), cfg)

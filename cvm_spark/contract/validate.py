"""Read the six input tables and enforce the data contract (spec section 1).

Two levels of problems:

* **Table level** (a required column is missing, or its type cannot be cast to the
  contract type): :class:`InputSchemaError` naming the table and column, raised while the
  plan is built, before anything is written. After classification,
  :func:`check_snapshot_data` raises :class:`InputDataError` (a subclass) when a table the
  snapshot needs has no accepted rows, or none in the snapshot month; the pipeline calls it
  before its first write.
* **Row level**: every row gets at most one reason code (the first failing check, in the
  order of ``schemas.REASONS``). Rows with a reason go to the quarantine table with the
  original row as JSON; the others are accepted, typed as in ``schemas``. Every row read is
  either accepted or quarantined, never both and never dropped. A CSV line that does not
  parse into the header's columns (too few or too many fields, an unterminated quote) is a
  row with reason ``malformed_line`` whose JSON keeps the line's text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cvm_spark.common.months import month_end
from cvm_spark.common.session import input_bytes
from cvm_spark.config import CvmConfig, InputsConfig
from cvm_spark.schemas.inputs import (
    ACCOUNT_ID,
    EVENT_DATE_COLUMN,
    INPUT_TABLES,
    MALFORMED_LINE,
    REASONS,
    SNAPSHOT_MONTH,
    InputTable,
)

log = logging.getLogger(__name__)

REASON = "_reason"
ROW_JSON = "_row_json"
EARLIEST_OPEN_DATE = date(1900, 1, 1)


# Tables a snapshot cannot be scored without: each needs accepted rows, and the dated ones
# accepted rows in the snapshot month itself. marketing, credit and relations may be empty.
REQUIRED_TABLES = ("accounts", "transactions", "monthly_product")
SNAPSHOT_MONTH_TABLES = ("transactions", "monthly_product")


class InputSchemaError(ValueError):
    """An input table that cannot be used as it is; the message names table and column."""


class InputDataError(InputSchemaError):
    """Readable inputs that cannot make a snapshot (a required table without accepted rows,
    or none in the snapshot month); the message names the table and the snapshot month."""


@dataclass(frozen=True)
class InputProfile:
    """What validation found, from one small aggregate per table.

    Attributes:
        counts: per table, rows per reason (``"accepted"`` for accepted rows).
        last_accepted: per table with an event date (``schemas.EVENT_DATE_COLUMN``), the
            latest event date among its accepted rows (None when it has none).
        first_accepted: the same, the earliest.
    """

    counts: dict[str, dict[str, int]]
    last_accepted: dict[str, date | None]
    first_accepted: dict[str, date | None] = field(default_factory=dict)


Materialize = Callable[[DataFrame, str], DataFrame]


def cache_materialize(df: DataFrame, name: str) -> DataFrame:
    """A materializer without a work area: cache ``df`` and fill the cache (one pass).

    The pipeline writes the classified rows to the run's work area instead
    (:meth:`cvm_spark.storage.workarea.WorkArea.materialize`); this keeps :func:`validate_inputs`
    usable on its own (tests, scripts).
    """
    del name
    cached = df.persist()
    cached.write.format("noop").mode("overwrite").save()
    return cached


@dataclass
class ValidatedInputs:
    """Classified input rows, materialised once per table.

    Attributes:
        classified: per table, every row read with the contract columns (typed), a reason
            column (null = accepted) and the original row as JSON (rejected rows only),
            read back from where :func:`validate_inputs` materialised it.
        profile_: counts per table and reason, observed while the rows were materialised.
    """

    classified: dict[str, DataFrame]
    profile_: InputProfile

    def accepted(self, table: str) -> DataFrame:
        """Accepted rows of a table, contract columns only, typed."""
        df = self.classified[table]
        return df.where(F.col(REASON).isNull()).select(*INPUT_TABLES[table].columns)

    def quarantine(self, snapshot: date, run_id: str) -> DataFrame:
        """All rejected rows of all tables in the quarantine table's shape."""
        parts = [
            df.where(F.col(REASON).isNotNull()).select(
                F.lit(snapshot).alias(SNAPSHOT_MONTH),
                F.lit(run_id).alias("run_id"),
                F.lit(name).alias("source_table"),
                F.col(REASON).alias("reason"),
                F.col(ROW_JSON).alias("row_json"),
            )
            for name, df in self.classified.items()
        ]
        out = parts[0]
        for part in parts[1:]:
            out = out.unionByName(part)
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per table and reason (``"accepted"`` for accepted rows)."""
        return self.profile_.counts

    def profile(self) -> InputProfile:
        """Counts per table and reason, and the earliest and latest accepted event date per
        dated table (observed while the rows were materialised: no pass of their own)."""
        return self.profile_

    def unpersist(self) -> None:
        """Release cached rows (materialised by :func:`cache_materialize`)."""
        for df in self.classified.values():
            df.unpersist()


def read_inputs(spark: SparkSession, inputs: InputsConfig) -> dict[str, DataFrame]:
    """Read the six input tables as they are (CSV columns as strings).

    A CSV table is read with its header's columns as strings plus the column
    ``schemas.MALFORMED_LINE``, which holds the text of a line that does not parse into
    those columns (and is null otherwise); validation quarantines such lines.

    Raises:
        InputSchemaError: a table's location does not exist or cannot be read.
    """
    raw = {}
    for name in INPUT_TABLES:
        path, fmt = inputs.location(name)
        try:
            if fmt == "csv":
                df = _read_csv(spark, path, inputs.csv_header)
            else:
                df = spark.read.format(fmt).load(path)
        except (PySparkException, Py4JJavaError) as exc:  # missing path, unreadable files
            raise InputSchemaError(f"input table {name}: cannot read {fmt} at {path}: "
                                   f"{str(exc).splitlines()[0]}") from None
        raw[name] = df
    return raw


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


def _typed(table: InputTable, only: tuple[str, ...] | None = None) -> list[Column]:
    """Contract columns (or the ``only`` ones) cast to their types (null where a value does
    not cast; strings trimmed)."""
    cols = []
    for fld in table.schema.fields:
        if only is not None and fld.name not in only:
            continue
        c = F.col(fld.name)
        if isinstance(fld.dataType, T.StringType):
            c = F.trim(c.cast("string"))
        cols.append(c.try_cast(fld.dataType).alias(fld.name))
    return cols


def _malformed(table: InputTable) -> Column:
    """A value present in the source that did not survive the cast."""
    conds = [F.col(f"_raw_{f.name}").isNotNull() & F.col(f.name).isNull()
             for f in table.schema.fields]
    return _any(conds)


def _any(conds: list[Column]) -> Column:
    out = F.lit(False)
    for cond in conds:
        out = out | F.coalesce(cond, F.lit(False))
    return out


def _non_finite(cols: list[str]) -> Column:
    return _any([F.isnan(F.col(c)) | (F.abs(F.col(c)) == float("inf")) for c in cols])


def _negative(cols: list[str]) -> Column:
    return _any([F.col(c) < 0 for c in cols])


def _row_reason(table: InputTable, cfg: CvmConfig, line_column: str | None = None) -> Column:
    """First failing row-level check (order of schemas.REASONS), or null.

    ``line_column`` names the column holding the text of a CSV line that did not parse
    (None for sources that have no such column).
    """
    snapshot_end = month_end(cfg.snapshot)
    data_start = cfg.validation.data_start_date
    identity = [c for c in (ACCOUNT_ID, "related_account_id", "month", "txn_ts")
                if c in table.columns]
    null_key = _any([F.col(f"_raw_{c}").isNull()
                     | (F.trim(F.col(f"_raw_{c}").cast("string")) == "")
                     for c in identity])
    missing = _any([F.col(c).isNull() & F.col(f"_raw_{c}").isNull() for c in table.columns
                    if c not in table.nullable and c not in identity])
    doubles = [f.name for f in table.schema.fields if isinstance(f.dataType, T.DoubleType)]
    checks: list[tuple[str, Column]] = []
    if line_column is not None:
        checks.append(("malformed_line", F.col(line_column).isNotNull()))
    checks += [
        ("null_key", null_key),
        ("missing_value", missing),
        ("malformed_value", _malformed(table)),
        ("non_finite_value", _non_finite(doubles)),
    ]
    if table.name == "transactions":
        checks.append(("non_positive_amount", F.col("amount") <= 0))
    negatives = {
        "accounts": ["acquisition_cost"],
        "monthly_product": ["avg_balance"],
        "marketing": ["spend", "contacts"],
        "credit": ["days_past_due", "overdue_amount", "credit_limit", "utilisation"],
    }.get(table.name, [])
    if negatives:
        checks.append(("negative_value", _negative(negatives)))
    if table.name == "accounts":
        checks.append(("date_out_of_window",
                       (F.col("open_date") < F.lit(EARLIEST_OPEN_DATE))
                       | (F.col("open_date") > F.lit(snapshot_end))
                       | (F.col("close_date") < F.col("open_date"))))
    elif table.name == "transactions":
        txn_date = F.to_date("txn_ts")
        checks.append(("date_out_of_window",
                       (txn_date < F.lit(data_start)) | (txn_date > F.lit(snapshot_end))))
    elif "month" in table.columns:
        checks.append(("date_out_of_window",
                       (F.col("month") < F.lit(data_start))
                       | (F.col("month") > F.lit(snapshot_end))))
        checks.append(("month_not_month_start", F.dayofmonth("month") != 1))
    if "product_line" in table.columns:
        checks.append(("unknown_product_line",
                       ~F.col("product_line").isin(cfg.validation.product_lines)))
    if table.name == "transactions":
        checks.append(("unknown_category", ~F.col("direction").isin(cfg.validation.directions)))
    if table.name == "relations":
        checks.append(("unknown_category", ~F.col("relation").isin(cfg.validation.relations)))
        checks.append(("self_relation", F.col(ACCOUNT_ID) == F.col("related_account_id")))
    return F.coalesce(*[F.when(F.coalesce(cond, F.lit(False)), F.lit(code))
                        for code, cond in checks])


KEY_HASH = "_key_hash"
REPEATED = "_repeated"
ORDER_PREFIX = "_order_"


def _key_hash(table: InputTable) -> Column:
    """A 64-bit hash of a row's typed key columns (equal keys, equal hashes)."""
    return F.xxhash64(*[F.col(c) for c in table.key])


def _repeated_keys(raw: DataFrame, table: InputTable) -> DataFrame:
    """Hashes of the keys that occur on more than one row (one column, ``KEY_HASH``).

    An aggregate over the 8-byte hash of each row's typed key: the only shuffle of the
    event rows that finding duplicates needs. A row whose key hash is not in this set has
    no duplicate; two different keys that share a hash are both kept as candidates and told
    apart by the window of :func:`_settle_duplicates`.
    """
    df = check_schema(table, raw)
    return (df.select(*_typed(table, only=table.key))
            .groupBy(_key_hash(table).alias(KEY_HASH)).count()
            .where(F.col("count") > 1).select(KEY_HASH))


def _classify(raw: DataFrame, table: InputTable, cfg: CvmConfig,
              known_accounts: DataFrame | None, broadcast_known: bool = True,
              repeated: DataFrame | None = None, broadcast_repeated: bool = True,
              every_row: bool = False) -> DataFrame:
    """Typed contract columns + reason + original row JSON (rejected rows only) for a table.

    One pass over the rows, without a shuffle of them: the row-level checks, the orphan
    check against the accepted account ids (broadcast to every task up to
    ``performance.broadcast_accounts`` of them). The original row is carried as its source
    columns and turned into JSON only for rows that are rejected.

    ``repeated`` (from :func:`_repeated_keys`) marks the rows whose key occurs more than
    once: they get the column ``REPEATED`` (true), their JSON, their key hash and their
    source values in sortable columns, which :func:`_settle_duplicates` orders to decide
    which of them is a duplicate. ``every_row`` treats every row so (small tables, settled in
    the same job) and keeps the source columns instead of ``ROW_JSON``:
    :func:`_settle_duplicates` turns them into JSON (:func:`_source_json`) for rejected rows
    only. With neither, the table has no repeated key and no duplicate.
    """
    df = check_schema(table, raw)
    source_cols = df.columns
    raw_cols = [F.col(c).alias(f"_raw_{c}") for c in table.columns]
    # the source columns beyond the contract ones, kept for the quarantine JSON
    extra = [c for c in source_cols if c not in table.columns]
    line_column = f"_src_{MALFORMED_LINE}" if MALFORMED_LINE in extra else None
    typed = df.select(*_typed(table), *raw_cols,
                      *[F.col(c).alias(f"_src_{c}") for c in extra])
    rows = typed.select("*", _row_reason(table, cfg, line_column).alias(REASON))
    refs = [ACCOUNT_ID] + (["related_account_id"] if table.name == "relations" else [])
    if known_accounts is not None:
        for i, ref in enumerate(refs):
            known = known_accounts.select(F.col(ACCOUNT_ID).alias(ref),
                                          F.lit(True).alias(f"_known{i}"))
            rows = rows.join(F.broadcast(known) if broadcast_known else known, on=ref,
                             how="left")
        orphan = _any([F.col(f"_known{i}").isNull() for i in range(len(refs))])
        rows = rows.select(*[c for c in rows.columns if not c.startswith("_known")
                             and c != REASON],
                           F.coalesce(F.col(REASON), F.when(orphan, F.lit("orphan_account")))
                           .alias(REASON))
    if every_row:
        # settled in the same job: the source values travel as they are (the window orders
        # by them) and become JSON only for the rows that end up rejected
        return rows.select(*table.columns, F.col(REASON), _key_hash(table).alias(KEY_HASH),
                           *[F.col(f"_raw_{c}") for c in table.columns],
                           *[F.col(f"_src_{c}") for c in extra])
    original = _source_json(table, source_cols)
    if repeated is None:
        return rows.select(*table.columns, F.col(REASON),
                           F.when(F.col(REASON).isNotNull(), original).alias(ROW_JSON))
    marks = repeated.select(KEY_HASH, F.lit(True).alias(REPEATED))
    rows = rows.select("*", _key_hash(table).alias(KEY_HASH)).join(
        F.broadcast(marks) if broadcast_repeated else marks, on=KEY_HASH, how="left")
    candidate = F.col(REPEATED).isNotNull()
    order = [c for c in table.columns if _sortable(raw.schema, c)]
    return rows.select(
        *table.columns,
        F.col(REASON),
        F.when(F.col(REASON).isNotNull() | candidate, original).alias(ROW_JSON),
        candidate.alias(REPEATED),
        F.when(candidate, F.col(KEY_HASH)).alias(KEY_HASH),
        *[F.when(candidate, F.col(f"_raw_{c}")).alias(f"{ORDER_PREFIX}{c}") for c in order],
    )


def _source_json(table: InputTable, source_cols: list[str]) -> Column:
    """The original row, with its source column names, as JSON (from the ``_raw_`` contract
    columns and the ``_src_`` others)."""
    return F.to_json(F.struct(*[
        F.col(f"_raw_{c}" if c in table.columns else f"_src_{c}").alias(c)
        for c in source_cols]))


def _settle_duplicates(candidates: DataFrame, table: InputTable,
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
                    if _sortable(candidates.schema, f"_raw_{c}")]
    window = Window.partitionBy(KEY_HASH, *table.key).orderBy(
        F.col(REASON).isNotNull(), *[c.asc_nulls_first() for c in order_by])
    key = F.struct(*[F.col(c) for c in table.key])
    duplicate = F.lag(key, 1).over(window).eqNullSafe(key)
    final = F.coalesce(F.col(REASON), F.when(duplicate, F.lit("duplicate_event")))
    with_reason = candidates.select(*table.columns, json.alias(ROW_JSON), final.alias(REASON))
    return with_reason.select(
        *table.columns, F.col(REASON),
        F.when(F.col(REASON).isNotNull(), F.col(ROW_JSON)).alias(ROW_JSON))


def _sortable(schema: T.StructType, column: str) -> bool:
    """Whether a source column can take part in an ORDER BY (no maps)."""
    lower = {f.name.lower(): f.dataType for f in schema.fields}
    return not isinstance(lower.get(column), (T.MapType, T.StructType, T.ArrayType))


def _observations(name: str, rows: Column | None = None) -> tuple[Observation, list[Column]]:
    """Rows per reason (and accepted), and the earliest and latest accepted event date,
    over the rows where ``rows`` holds (all rows when None)."""
    within = F.lit(True) if rows is None else rows
    reason = F.col(REASON)
    aggs = [F.count_if(within & reason.isNull()).alias("accepted"),
            *[F.count_if(within & (reason == F.lit(r))).alias(r) for r in REASONS]]
    column = EVENT_DATE_COLUMN.get(name)
    if column is not None:
        day = F.when(within & reason.isNull(), F.to_date(column))
        aggs += [F.max(day).alias("_latest"), F.min(day).alias("_earliest")]
    return Observation(f"validate_{name}_{0 if rows is None else 1}"), aggs


def _merge_observed(parts: list[dict], dated: bool) -> tuple[dict[str, int], date | None,
                                                                 date | None]:
    """Counts added up, and the latest/earliest dates, over the observed parts."""
    counts = {r: sum(int(p.get(r) or 0) for p in parts) for r in ("accepted", *REASONS)}
    counts = {r: n for r, n in counts.items() if n}
    if not dated:
        return counts, None, None
    latest = [p["_latest"] for p in parts if p.get("_latest") is not None]
    earliest = [p["_earliest"] for p in parts if p.get("_earliest") is not None]
    return counts, max(latest, default=None), min(earliest, default=None)


# In-memory bytes per byte of input files, an upper bound over the formats
# (session.EXPANSION): a table is "small" when this many times its files fit one partition.
SMALL_TABLE_EXPANSION = 4.0


def _is_small(df: DataFrame, limit_bytes: float) -> bool:
    size = input_bytes(df)
    return size is not None and size * SMALL_TABLE_EXPANSION <= limit_bytes


def validate_inputs(raw: dict[str, DataFrame], cfg: CvmConfig,
                    materialize: Materialize = cache_materialize,
                    small_table_bytes: float | None = None) -> ValidatedInputs:
    """Classify every input row as accepted or quarantined (with a reason).

    Schema problems raise :class:`InputSchemaError` before any Spark job runs. Then each
    table is classified (the accounts first, whose accepted ids check every other table's
    account references), in one of two plans that give the same rows:

    * **small tables** (files that fit one shuffle partition in memory,
      ``small_table_bytes``, by default ``performance.partition_mb``): every row is
      classified and ordered by the duplicate window in one job, and materialised
      (``materialize``: the pipeline writes it to the run's work area);
    * **larger tables**, so that no event row is shuffled with its columns:

      1. the hashes of keys that occur on more than one row, by an aggregate of 8-byte
         hashes (:func:`_repeated_keys`; materialised, small);
      2. every row classified in one pass without a shuffle (:func:`_classify`, the rows of
         a repeated key marked), materialised;
      3. only when some key is repeated: those rows ordered by the duplicate window
         (:func:`_settle_duplicates`), materialised. The classified table is the rows
         without a repeated key plus the settled ones.

    Rows are counted per reason while they are materialised (``DataFrame.observe``), so no
    pass of their own reads them again.
    """
    if small_table_bytes is None:
        small_table_bytes = cfg.performance.partition_mb * 1024 * 1024
    for name in INPUT_TABLES:
        if name not in raw:
            raise InputSchemaError(f"input table {name} was not provided")
        check_schema(INPUT_TABLES[name], raw[name])
    classified: dict[str, DataFrame] = {}
    counts: dict[str, dict[str, int]] = {}
    last: dict[str, date | None] = {}
    first: dict[str, date | None] = {}
    known: DataFrame | None = None
    broadcast_known = True
    limit = cfg.performance.broadcast_accounts
    for name, table in INPUT_TABLES.items():
        if _is_small(raw[name], small_table_bytes):
            obs, aggs = _observations(name)
            json = _source_json(table, check_schema(table, raw[name]).columns)
            df = _settle_duplicates(
                _classify(raw[name], table, cfg, known, broadcast_known, repeated=None,
                          every_row=True), table, json).observe(obs, *aggs)
            classified[name] = materialize(df, f"validated_{name}")
            observed = [obs.get]
        else:
            classified[name], observed = _classify_large(raw[name], name, table, cfg, known,
                                                         broadcast_known, materialize)
        counts[name], last_day, first_day = _merge_observed(observed,
                                                            name in EVENT_DATE_COLUMN)
        if name in EVENT_DATE_COLUMN:
            last[name], first[name] = last_day, first_day
        if name == "accounts":
            known = classified[name].where(F.col(REASON).isNull()).select(ACCOUNT_ID)
            broadcast_known = counts[name].get("accepted", 0) <= limit
    return ValidatedInputs(classified, InputProfile(counts, last, first))


def _classify_large(raw: DataFrame, name: str, table: InputTable, cfg: CvmConfig,
                    known: DataFrame | None, broadcast_known: bool, materialize: Materialize
                    ) -> tuple[DataFrame, list[dict]]:
    """The plan for larger tables of :func:`validate_inputs`: repeated keys first, then the
    rows in one pass, then the rows of repeated keys. Returns the classified rows and the
    observed counts of each materialised part."""
    limit = cfg.performance.broadcast_accounts
    keys_obs = Observation(f"validate_{name}_keys")
    repeated = materialize(
        _repeated_keys(raw, table).observe(keys_obs, F.count("*").alias("n")),
        f"repeated_keys_{name}")
    n_repeated = int(keys_obs.get.get("n") or 0)
    if n_repeated == 0:
        obs, aggs = _observations(name)
        df = _classify(raw, table, cfg, known, broadcast_known).observe(obs, *aggs)
        result = materialize(df, f"validated_{name}")
        observed = [obs.get]
    else:
        obs, aggs = _observations(name, ~F.col(REPEATED))
        df = _classify(raw, table, cfg, known, broadcast_known, repeated,
                       n_repeated <= limit).observe(obs, *aggs)
        rows = materialize(df, f"validated_{name}")
        settled_obs, settled_aggs = _observations(name)
        settled = materialize(
            _settle_duplicates(rows.where(F.col(REPEATED)), table)
            .observe(settled_obs, *settled_aggs), f"validated_{name}_repeated")
        unique = rows.where(~F.col(REPEATED)).select(*table.columns, REASON, ROW_JSON)
        result = unique.unionByName(settled)
        observed = [obs.get, settled_obs.get]
    return result, observed


def check_snapshot_data(profile: InputProfile, snapshot: date) -> None:
    """Stop a run whose accepted inputs cannot make the snapshot, before anything is written.

    Every table of ``REQUIRED_TABLES`` needs accepted rows, and transactions and
    monthly_product need accepted rows in the snapshot month itself: without them the
    snapshot would be written empty, or scored as if the bank had no activity that month
    (an extract that ends before the snapshot, or a snapshot_month set past the data).
    marketing, credit and relations may be empty. Pure Python on the profile: no Spark job.

    Raises:
        InputDataError: naming every table that fails, and the snapshot month.
    """
    month = snapshot.strftime("%Y-%m")
    problems = []
    for name in REQUIRED_TABLES:
        per_reason = profile.counts.get(name, {})
        if per_reason.get("accepted", 0) == 0:
            read = sum(per_reason.values())
            why = ", ".join(f"{r}={n:,}" for r, n in sorted(per_reason.items()))
            problems.append(f"input table {name}: no accepted rows ({read:,} read"
                            + (f", all quarantined: {why})" if read else ")"))
    for name in SNAPSHOT_MONTH_TABLES:
        latest = profile.last_accepted.get(name)
        if latest is not None and latest < snapshot:
            problems.append(
                f"input table {name}: no accepted rows in the snapshot month {month} (the "
                f"latest accepted {EVENT_DATE_COLUMN[name]} is {latest.isoformat()})")
    if problems:
        raise InputDataError(
            f"snapshot_month {month} cannot be scored from these inputs: "
            + "; ".join(problems)
            + f". A snapshot needs accepted rows of {', '.join(REQUIRED_TABLES)}, with "
            f"transactions and monthly_product rows in {month}.")

"""Read the input tables and enforce the data contract (spec section 1).

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

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F

from cvm_spark.common.session import input_bytes
from cvm_spark.config import CvmConfig
from cvm_spark.contract.duplicates import (
    KEY_HASH,
    ORDER_PREFIX,
    REPEATED,
    key_hash,
    repeated_keys,
    settle_duplicates,
    sortable,
    source_json,
)
from cvm_spark.contract.reading import InputSchemaError, check_schema
from cvm_spark.contract.rules import REASON, ROW_JSON, any_of, row_reason, typed_columns
from cvm_spark.schemas.inputs import (
    ACCOUNT_ID,
    EVENT_DATE_COLUMN,
    INPUT_TABLES,
    MALFORMED_LINE,
    OPTIONAL_TABLES,
    REASONS,
    SNAPSHOT_MONTH,
    InputTable,
)

# Tables a snapshot cannot be scored without: each needs accepted rows, and the dated ones
# accepted rows in the snapshot month itself. marketing, credit and relations may be empty.
REQUIRED_TABLES = ("accounts", "transactions", "monthly_product")
SNAPSHOT_MONTH_TABLES = ("transactions", "monthly_product")


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

    def has(self, table: str) -> bool:
        """Whether the run read the table (an optional table may be absent)."""
        return table in self.classified

    def accepted(self, table: str) -> DataFrame:
        """Accepted rows of a table, contract columns only, typed.

        Raises:
            KeyError: an optional table the run did not read (see :meth:`has`).
        """
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


def _classify(raw: DataFrame, table: InputTable, cfg: CvmConfig,
              known_accounts: DataFrame | None, broadcast_known: bool = True,
              repeated: DataFrame | None = None, broadcast_repeated: bool = True,
              every_row: bool = False) -> DataFrame:
    """Typed contract columns + reason + original row JSON (rejected rows only) for a table.

    One pass over the rows, without a shuffle of them: the row-level checks, the orphan
    check against the accepted account ids (broadcast to every task up to
    ``performance.broadcast_accounts`` of them). The original row is carried as its source
    columns and turned into JSON only for rows that are rejected.

    ``repeated`` (from :func:`repeated_keys`) marks the rows whose key occurs more than
    once: they get the column ``REPEATED`` (true), their JSON, their key hash and their
    source values in sortable columns, which :func:`settle_duplicates` orders to decide
    which of them is a duplicate. ``every_row`` treats every row so (small tables, settled in
    the same job) and keeps the source columns instead of ``ROW_JSON``:
    :func:`settle_duplicates` turns them into JSON (:func:`source_json`) for rejected rows
    only. With neither, the table has no repeated key and no duplicate.
    """
    df = check_schema(table, raw)
    source_cols = df.columns
    raw_cols = [F.col(c).alias(f"_raw_{c}") for c in table.columns]
    # the source columns beyond the contract ones, kept for the quarantine JSON
    extra = [c for c in source_cols if c not in table.columns]
    line_column = f"_src_{MALFORMED_LINE}" if MALFORMED_LINE in extra else None
    typed = df.select(*typed_columns(table), *raw_cols,
                      *[F.col(c).alias(f"_src_{c}") for c in extra])
    rows = typed.select("*", row_reason(table, cfg, line_column).alias(REASON))
    refs = [ACCOUNT_ID] + (["related_account_id"] if table.name == "relations" else [])
    if known_accounts is not None:
        for i, ref in enumerate(refs):
            known = known_accounts.select(F.col(ACCOUNT_ID).alias(ref),
                                          F.lit(True).alias(f"_known{i}"))
            rows = rows.join(F.broadcast(known) if broadcast_known else known, on=ref,
                             how="left")
        orphan = any_of([F.col(f"_known{i}").isNull() for i in range(len(refs))])
        rows = rows.select(*[c for c in rows.columns if not c.startswith("_known")
                             and c != REASON],
                           F.coalesce(F.col(REASON), F.when(orphan, F.lit("orphan_account")))
                           .alias(REASON))
    if every_row:
        # settled in the same job: the source values travel as they are (the window orders
        # by them) and become JSON only for the rows that end up rejected
        return rows.select(*table.columns, F.col(REASON), key_hash(table).alias(KEY_HASH),
                           *[F.col(f"_raw_{c}") for c in table.columns],
                           *[F.col(f"_src_{c}") for c in extra])
    original = source_json(table, source_cols)
    if repeated is None:
        return rows.select(*table.columns, F.col(REASON),
                           F.when(F.col(REASON).isNotNull(), original).alias(ROW_JSON))
    marks = repeated.select(KEY_HASH, F.lit(True).alias(REPEATED))
    rows = rows.select("*", key_hash(table).alias(KEY_HASH)).join(
        F.broadcast(marks) if broadcast_repeated else marks, on=KEY_HASH, how="left")
    candidate = F.col(REPEATED).isNotNull()
    order = [c for c in table.columns if sortable(raw.schema, c)]
    return rows.select(
        *table.columns,
        F.col(REASON),
        F.when(F.col(REASON).isNotNull() | candidate, original).alias(ROW_JSON),
        candidate.alias(REPEATED),
        F.when(candidate, F.col(KEY_HASH)).alias(KEY_HASH),
        *[F.when(candidate, F.col(f"_raw_{c}")).alias(f"{ORDER_PREFIX}{c}") for c in order],
    )


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
         hashes (:func:`repeated_keys`; materialised, small);
      2. every row classified in one pass without a shuffle (:func:`_classify`, the rows of
         a repeated key marked), materialised;
      3. only when some key is repeated: those rows ordered by the duplicate window
         (:func:`settle_duplicates`), materialised. The classified table is the rows
         without a repeated key plus the settled ones.

    Rows are counted per reason while they are materialised (``DataFrame.observe``), so no
    pass of their own reads them again.
    """
    if small_table_bytes is None:
        small_table_bytes = cfg.performance.partition_mb * 1024 * 1024
    for name in INPUT_TABLES:
        if name not in raw:
            if name in OPTIONAL_TABLES:
                continue
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
        if name not in raw:
            continue                        # an optional table this run goes without
        if _is_small(raw[name], small_table_bytes):
            obs, aggs = _observations(name)
            json = source_json(table, check_schema(table, raw[name]).columns)
            df = settle_duplicates(
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
        repeated_keys(raw, table).observe(keys_obs, F.count("*").alias("n")),
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
            settle_duplicates(rows.where(F.col(REPEATED)), table)
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

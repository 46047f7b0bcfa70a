"""The row-level rules of the data contract: each input row's quarantine reason (or
none), as one column expression per table (docs/data-contract.md).
"""

from __future__ import annotations

from datetime import date
from functools import reduce

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cvm_spark.common.months import month_end
from cvm_spark.config import CvmConfig
from cvm_spark.schemas.inputs import ACCOUNT_ID, SCORE_RANGES, InputTable

REASON = "_reason"
ROW_JSON = "_row_json"
EARLIEST_OPEN_DATE = date(1900, 1, 1)


def typed_columns(table: InputTable, only: tuple[str, ...] | None = None) -> list[Column]:
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
    return any_of(conds)


def any_of(conds: list[Column]) -> Column:
    out = F.lit(False)
    for cond in conds:
        out = out | F.coalesce(cond, F.lit(False))
    return out


def _non_finite(cols: list[str]) -> Column:
    return any_of([F.isnan(F.col(c)) | (F.abs(F.col(c)) == float("inf")) for c in cols])


def _negative(cols: list[str]) -> Column:
    return any_of([F.col(c) < 0 for c in cols])


def row_reason(table: InputTable, cfg: CvmConfig, line_column: str | None = None) -> Column:
    """First failing row-level check (order of schemas.REASONS), or null.

    ``line_column`` names the column holding the text of a CSV line that did not parse
    (None for sources that have no such column).
    """
    identity = [c for c in (ACCOUNT_ID, "related_account_id", "month", "txn_ts")
                if c in table.columns]
    null_key = any_of([F.col(f"_raw_{c}").isNull()
                     | (F.trim(F.col(f"_raw_{c}").cast("string")) == "")
                     for c in identity])
    missing = any_of([F.col(c).isNull() & F.col(f"_raw_{c}").isNull() for c in table.columns
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
    checks += _table_checks(table, cfg)
    return F.coalesce(*[F.when(F.coalesce(cond, F.lit(False)), F.lit(code))
                        for code, cond in checks])


def _table_checks(table: InputTable, cfg: CvmConfig) -> list[tuple[str, Column]]:
    """The checks that depend on the table, in the order of ``schemas.REASONS``."""
    snapshot_end = month_end(cfg.snapshot)
    data_start = cfg.validation.event_floor     # validation.data_start, or 1900-01-01 unset
    checks: list[tuple[str, Column]] = []
    if table.name == "transactions":
        refused = (F.col("amount") < 0) if cfg.validation.accept_zero_amount else (
            F.col("amount") <= 0)
        checks.append(("non_positive_amount", refused))
    negatives = {
        "accounts": ["acquisition_cost"],
        "monthly_product": ["avg_balance"],
        "marketing": ["spend", "contacts"],
        "credit": ["days_past_due", "overdue_amount", "credit_limit", "utilisation"],
    }.get(table.name, [])
    if negatives:
        checks.append(("negative_value", _negative(negatives)))
    if table.name in SCORE_RANGES:
        checks.append(("value_out_of_range", any_of(
            [(F.col(c) < lo) | (F.col(c) > hi) for c, lo, hi in SCORE_RANGES[table.name]])))
        # a response that answers none of the questions
        checks.append(("missing_value", reduce(
            lambda a, b: a & b, [F.col(c).isNull() for c, _, _ in SCORE_RANGES[table.name]])))
    if table.name == "accounts":
        checks.append(("date_out_of_window",
                       (F.col("open_date") < F.lit(EARLIEST_OPEN_DATE))
                       | (F.col("open_date") > F.lit(snapshot_end))
                       | (F.col("close_date") < F.col("open_date"))))
    elif table.name == "surveys":
        checks.append(("date_out_of_window",
                       (F.col("survey_date") < F.lit(data_start))
                       | (F.col("survey_date") > F.lit(snapshot_end))))
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
    return checks

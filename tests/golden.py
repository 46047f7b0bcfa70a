"""The golden copy: every output table of a small seeded run, kept in ``tests/golden/``.

A change that is meant to leave the numbers alone (a faster plan, a moved module) must leave
every table of this run equal to the copy: ids, labels and counts exactly, numbers to
``REL_TOL`` relative (sums of doubles may add up in another order). A deliberate change to the
numbers updates the copy in the same commit (``CVM_UPDATE_GOLDEN=1 pytest
tests/test_golden.py``) and says why in the commit message.

Stored as one gzipped JSON-lines file per table (``json`` writes doubles with ``repr``, which
reads back to the same double), rows in a canonical order, and ``schema.json`` with each
table's column names and types.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
RUN_ID = "golden"
ACCOUNTS = 3000
MONTHS = 24
BAD_ROW_SHARE = 0.005
REL_TOL = 1e-9
ABS_TOL = 1e-9
TABLES = ("quarantine", "features", "rfm", "value_scores", "tiers", "campaign_targets",
          "model_metrics", "tier_summary", "kpi_summary", "run_log")
# rows are sorted by these columns first (then by the whole row)
KEYS = {
    "quarantine": ("source_table", "reason", "row_json"),
    "features": ("account_id",),
    "rfm": ("account_id",),
    "value_scores": ("account_id",),
    "tiers": ("account_id",),
    "campaign_targets": ("account_id", "campaign"),
    "model_metrics": ("model", "scope", "metric"),
    "tier_summary": ("tier", "segment", "abc_class"),
    "kpi_summary": ("dimension", "group_name", "period_month", "kpi"),
    "run_log": ("item_kind", "item_name"),
}
# run_log: only the rows and columns that describe the data (not timings, the start time,
# the code version or the config fingerprint, which a new config key changes)
RUN_LOG_COLUMNS = ("snapshot_month", "run_id", "run_seq", "item_kind", "item_name",
                   "rows_in", "rows_quarantined", "rows_out")


def golden_config(base_config: Any, root: Path) -> Any:
    """The seeded run's config: the shipped one with a small generated bank under ``root``."""
    from banks import bank_config

    return bank_config(base_config, root, accounts=ACCOUNTS, months=MONTHS,
                       database="cvm_golden", generator={"bad_row_share": BAD_ROW_SHARE})


def _plain(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def table_rows(spark: Any, cfg: Any, table: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(schema lines, rows in canonical order) of the run's month of one output table."""
    from cvm_spark.storage.delta import table_path

    df = (spark.read.format("delta").load(table_path(cfg.output, table))
          .where(F.col("snapshot_month") == F.lit(cfg.snapshot)))
    if table == "run_log":
        df = df.where(F.col("item_kind") != "stage").select(*RUN_LOG_COLUMNS)
    schema = [f"{f.name} {f.dataType.simpleString()}" for f in df.schema.fields]
    rows = [{k: _plain(v) for k, v in r.asDict().items()} for r in df.collect()]
    keys = KEYS[table]
    rows.sort(key=lambda r: (tuple(str(r[k]) for k in keys),
                             json.dumps(r, sort_keys=True, default=str)))
    return schema, rows


def save(spark: Any, cfg: Any) -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    schemas = {}
    for table in TABLES:
        schema, rows = table_rows(spark, cfg, table)
        schemas[table] = schema
        with gzip.open(GOLDEN_DIR / f"{table}.jsonl.gz", "wt", encoding="utf-8",
                       compresslevel=9) as fh:
            for row in rows:
                fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
    (GOLDEN_DIR / "schema.json").write_text(json.dumps(schemas, indent=1) + "\n")


def load(table: str) -> tuple[list[str], list[dict[str, Any]]]:
    schemas = json.loads((GOLDEN_DIR / "schema.json").read_text())
    with gzip.open(GOLDEN_DIR / f"{table}.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return schemas[table], rows


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
        return False
    return a == b


def differences(table: str, expected: list[dict[str, Any]], actual: list[dict[str, Any]],
                limit: int = 10) -> list[str]:
    """Human-readable differences between two canonical row lists (at most ``limit``)."""
    out = []
    if len(expected) != len(actual):
        out.append(f"{table}: {len(actual)} rows, the golden copy has {len(expected)}")
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if set(e) != set(a):
            out.append(f"{table} row {i}: columns {sorted(set(a) ^ set(e))} differ")
            continue
        bad = [c for c in e if not _same(e[c], a[c])]
        if bad:
            key = {k: e.get(k) for k in KEYS[table]}
            out.append(f"{table} row {i} {key}: " + ", ".join(
                f"{c}: golden {e[c]!r}, now {a[c]!r}" for c in bad[:5]))
        if len(out) >= limit:
            break
    return out

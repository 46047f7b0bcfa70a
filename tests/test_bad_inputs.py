"""The bad-input corpus of docs/reliability.md, section "bad inputs": each case id is a row there.

Four groups, each a parametrised test:

* row-level cases (CSV): one tiny bank in CSV holds every case's rows, each row tagged with
  its case id in an extra ``case_id`` column (extra columns are allowed and kept in the
  quarantine ``row_json``). It is read with ``read_inputs`` and classified once; each case
  then asserts the exact reasons its rows got, and every table balances: data lines written
  = rows read = accepted + quarantined.
* row-level cases (Parquet): typed values a CSV cannot hold (NaN and infinity as doubles,
  -0.0, timestamps before 1970 and in year 9999).
* table-level cases: the pipeline stops in its validate stage with an error naming the
  table, column or snapshot month, and nothing is written to the warehouse.
* config cases: ``ConfigError`` naming the key, before Spark.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pytest
import yaml

from cvm_spark.config import ConfigError, load_config, load_config_dict, to_dict
from cvm_spark.contract.reading import InputSchemaError, read_inputs
from cvm_spark.contract.validate import (
    InputDataError,
    InputProfile,
    check_snapshot_data,
    validate_inputs,
)
from cvm_spark.pipeline.runner import run_snapshot
from cvm_spark.schemas.inputs import INPUT_TABLES, MALFORMED_LINE, REASONS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "cvm.yaml"
SNAPSHOT = "2024-06"
CASE = "case_id"

# One good row per table; a case row is this row with some values replaced. Every case gets
# its own account (K-<case id>, added to accounts as a good row) so no two cases share a
# key, and an orphan or duplicate in one case cannot touch another.
GOOD: dict[str, dict[str, str]] = {
    "accounts": {"account_id": "A1", "open_date": "2020-01-01", "close_date": "",
                 "customer_type": "individual", "region": "north", "birth_year": "1980",
                 "acquisition_channel": "branch", "acquisition_cost": "100.0",
                 "plan_type": "", "payment_type": ""},
    "transactions": {"account_id": "A1", "txn_id": "g1", "txn_ts": "2024-06-03 10:00:00",
                     "amount": "10.0", "product_line": "card", "direction": "debit",
                     "counterparty_id": ""},
    "monthly_product": {"account_id": "A1", "month": "2024-06-01", "product_line": "card",
                        "avg_balance": "100.0", "income": "1.0", "cost": "0.5"},
    "marketing": {"account_id": "A1", "month": "2024-06-01", "spend": "10.0", "contacts": "1"},
    "credit": {"account_id": "A1", "month": "2024-06-01", "days_past_due": "0",
               "overdue_amount": "0.0", "credit_limit": "1000.0", "utilisation": "0.2",
               "payment_method": "direct_debit", "bad_debt": "false"},
    "relations": {"account_id": "A1", "related_account_id": "A2", "relation": "family"},
    "surveys": {"account_id": "A1", "survey_date": "2024-06-10", "csat": "4", "recommend": "9",
                "channel": "app"},
}
BASE_ACCOUNTS = ("A1", "A2")


@dataclass(frozen=True)
class RowCase:
    """Rows of one table and the outcome of each: a reason code, or None for accepted.

    ``rows`` are value overrides of the table's good row, or a raw CSV line (a str, written
    as it is after ``<case id>,``) for lines that must not parse.
    """

    id: str
    table: str
    bad_input: str
    rows: tuple[dict[str, str] | str, ...]
    expect: tuple[str | None, ...]

    def account(self) -> str:
        return f"K-{self.id}"


def case(id: str, table: str, bad_input: str, *rows: dict[str, str] | str,
         expect: str | tuple[str | None, ...] | None) -> RowCase:
    if not isinstance(expect, tuple):
        expect = (expect,)
    rows = rows or ({},)
    assert len(rows) == len(expect), id
    return RowCase(id, table, bad_input, rows, expect)


DUP = "duplicate_event"
ROW_CASES = [
    # accounts
    case("acc-null-id", "accounts", "account_id empty", {"account_id": ""}, expect="null_key"),
    case("acc-blank-id", "accounts", "account_id blank", {"account_id": "   "},
         expect="null_key"),
    case("acc-duplicate", "accounts", "same account twice", {}, {}, expect=(None, DUP)),
    case("acc-open-future", "accounts", "open_date after the snapshot month end",
         {"open_date": "2024-07-01"}, expect="date_out_of_window"),
    case("acc-open-before-1900", "accounts", "open_date 1899-12-31",
         {"open_date": "1899-12-31"}, expect="date_out_of_window"),
    case("acc-open-1965", "accounts", "open_date before 1970 (1965-05-01)",
         {"open_date": "1965-05-01"}, expect=None),
    case("acc-open-invalid-date", "accounts", "open_date 2024-02-30",
         {"open_date": "2024-02-30"}, expect="malformed_value"),
    case("acc-close-before-open", "accounts", "close_date before open_date",
         {"close_date": "2019-12-31"}, expect="date_out_of_window"),
    case("acc-close-future", "accounts", "close_date after the snapshot month end",
         {"close_date": "2025-01-31"}, expect=None),
    case("acc-cost-negative", "accounts", "acquisition_cost -5",
         {"acquisition_cost": "-5"}, expect="negative_value"),
    case("acc-cost-text", "accounts", "acquisition_cost 'abc'", {"acquisition_cost": "abc"},
         expect="malformed_value"),
    case("acc-line-too-few-fields", "accounts", "CSV line with 3 of 9 fields",
         "K-acc-line-too-few-fields,2020-01-01", expect="malformed_line"),
    # transactions
    case("txn-null-account", "transactions", "account_id empty", {"account_id": ""},
         expect="null_key"),
    case("txn-blank-account", "transactions", "account_id blank", {"account_id": "  "},
         expect="null_key"),
    case("txn-null-ts", "transactions", "txn_ts empty", {"txn_ts": ""}, expect="null_key"),
    case("txn-amount-negative", "transactions", "amount -3", {"amount": "-3"},
         expect="non_positive_amount"),
    case("txn-amount-zero", "transactions", "amount 0", {"amount": "0"},
         expect="non_positive_amount"),
    case("txn-amount-neg-zero", "transactions", "amount -0.0", {"amount": "-0.0"},
         expect="non_positive_amount"),
    case("txn-amount-nan", "transactions", "amount NaN", {"amount": "NaN"},
         expect="non_finite_value"),
    case("txn-amount-inf", "transactions", "amount Infinity", {"amount": "Infinity"},
         expect="non_finite_value"),
    case("txn-amount-neg-inf", "transactions", "amount -Infinity", {"amount": "-Infinity"},
         expect="non_finite_value"),
    case("txn-amount-overflow", "transactions", "amount 1e400 (overflows a double)",
         {"amount": "1e400"}, expect="non_finite_value"),
    case("txn-amount-text", "transactions", "amount 'ten'", {"amount": "ten"},
         expect="malformed_value"),
    case("txn-amount-empty", "transactions", "amount empty", {"amount": ""},
         expect="missing_value"),
    case("txn-ts-future", "transactions", "txn_ts the second after the snapshot month end",
         {"txn_ts": "2024-07-01 00:00:00"}, expect="date_out_of_window"),
    case("txn-ts-month-end", "transactions", "txn_ts the last second of the snapshot month",
         {"txn_ts": "2024-06-30 23:59:59"}, expect=None),
    case("txn-ts-1969", "transactions", "txn_ts 1969-12-31 (before 1970)",
         {"txn_ts": "1969-12-31 23:59:59"}, expect="date_out_of_window"),
    case("txn-ts-before-data-start", "transactions", "txn_ts before validation.data_start",
         {"txn_ts": "1999-12-31 23:59:59"}, expect="date_out_of_window"),
    case("txn-ts-invalid", "transactions", "txn_ts 2024-06-31", {"txn_ts": "2024-06-31 10:00:00"},
         expect="malformed_value"),
    case("txn-unknown-account", "transactions", "account not in accounts",
         {"account_id": "ZZ-unknown"}, expect="orphan_account"),
    case("txn-quarantined-account", "transactions", "account whose accounts row is quarantined",
         {"account_id": "K-acc-open-future"}, expect="orphan_account"),
    case("txn-duplicate", "transactions", "same event twice", {}, {}, expect=(None, DUP)),
    case("txn-duplicate-no-id", "transactions", "same event twice, no txn_id",
         {"txn_id": ""}, {"txn_id": ""}, expect=(None, DUP)),
    case("txn-unknown-product-line", "transactions", "product_line 'crypto'",
         {"product_line": "crypto"}, expect="unknown_product_line"),
    case("txn-product-line-case", "transactions", "product_line 'Card' (case differs)",
         {"product_line": "Card"}, expect="unknown_product_line"),
    case("txn-unknown-direction", "transactions", "direction 'sideways'",
         {"direction": "sideways"}, expect="unknown_category"),
    case("txn-line-too-many-fields", "transactions", "CSV line with one field too many",
         "K-txn-line-too-many-fields,t1,2024-06-03 10:00:00,10.0,card,debit,,surplus",
         expect="malformed_line"),
    case("txn-line-too-few-fields", "transactions", "CSV line cut after the amount",
         "K-txn-line-too-few-fields,t1,2024-06-03 10:00:00,10.0", expect="malformed_line"),
    case("txn-line-unterminated-quote", "transactions", "CSV line with an unterminated quote",
         'K-txn-line-unterminated-quote,"t1,2024-06-03 10:00:00,10.0,card,debit,',
         expect="malformed_line"),
    # monthly_product
    case("mp-null-month", "monthly_product", "month empty", {"month": ""}, expect="null_key"),
    case("mp-month-not-start", "monthly_product", "month 2024-06-15",
         {"month": "2024-06-15"}, expect="month_not_month_start"),
    case("mp-month-future", "monthly_product", "month after the snapshot month",
         {"month": "2024-07-01"}, expect="date_out_of_window"),
    case("mp-month-1969", "monthly_product", "month 1969-12-01 (before 1970)",
         {"month": "1969-12-01"}, expect="date_out_of_window"),
    case("mp-unknown-product-line", "monthly_product", "product_line 'crypto'",
         {"product_line": "crypto"}, expect="unknown_product_line"),
    case("mp-income-nan", "monthly_product", "income NaN", {"income": "NaN"},
         expect="non_finite_value"),
    case("mp-balance-negative", "monthly_product", "avg_balance -1", {"avg_balance": "-1"},
         expect="negative_value"),
    case("mp-income-negative", "monthly_product", "income -2 (a refund)", {"income": "-2"},
         expect=None),
    case("mp-duplicate", "monthly_product", "same account, month and line twice",
         {}, {"avg_balance": "200.0"}, expect=(None, DUP)),
    case("mp-unknown-account", "monthly_product", "account not in accounts",
         {"account_id": "ZZ-unknown"}, expect="orphan_account"),
    # marketing
    case("mkt-spend-negative", "marketing", "spend -10", {"spend": "-10"},
         expect="negative_value"),
    case("mkt-contacts-fraction", "marketing", "contacts 1.5 (not an integer)",
         {"contacts": "1.5"}, expect="malformed_value"),
    case("mkt-month-future", "marketing", "month after the snapshot month",
         {"month": "2025-01-01"}, expect="date_out_of_window"),
    case("mkt-unknown-account", "marketing", "account not in accounts",
         {"account_id": "ZZ-unknown"}, expect="orphan_account"),
    # credit
    case("cr-dpd-negative", "credit", "days_past_due -1", {"days_past_due": "-1"},
         expect="negative_value"),
    case("cr-utilisation-inf", "credit", "utilisation Infinity", {"utilisation": "Infinity"},
         expect="non_finite_value"),
    case("cr-bad-debt-text", "credit", "bad_debt 'maybe' (the optional telecom column)",
         {"bad_debt": "maybe"}, expect="malformed_value"),
    case("cr-bad-debt-true", "credit", "bad_debt 'true' and payment method cash",
         {"bad_debt": "true", "payment_method": "cash"}, expect=None),
    case("cr-month-1969", "credit", "month 1969-01-01 (before 1970)", {"month": "1969-01-01"},
         expect="date_out_of_window"),
    # relations
    case("rel-self", "relations", "account related to itself",
         {"related_account_id": "K-rel-self"}, expect="self_relation"),
    case("rel-self-unknown", "relations", "unknown account related to itself",
         {"account_id": "ZZ-self", "related_account_id": "ZZ-self"}, expect="self_relation"),
    case("rel-unknown-account", "relations", "account_id not in accounts",
         {"account_id": "ZZ-unknown"}, expect="orphan_account"),
    case("rel-unknown-related", "relations", "related_account_id not in accounts",
         {"related_account_id": "ZZ-unknown"}, expect="orphan_account"),
    case("rel-null-related", "relations", "related_account_id empty",
         {"related_account_id": ""}, expect="null_key"),
    case("rel-unknown-relation", "relations", "relation 'friend'", {"relation": "friend"},
         expect="unknown_category"),
    case("rel-duplicate", "relations", "same pair and relation twice", {}, {},
         expect=(None, DUP)),
    # surveys (optional)
    case("sv-csat-6", "surveys", "csat 6 (scale 1..5)", {"csat": "6"},
         expect="value_out_of_range"),
    case("sv-csat-0", "surveys", "csat 0 (scale 1..5)", {"csat": "0"},
         expect="value_out_of_range"),
    case("sv-recommend-11", "surveys", "recommend 11 (scale 0..10)", {"recommend": "11"},
         expect="value_out_of_range"),
    case("sv-recommend-0", "surveys", "recommend 0 (a detractor)", {"recommend": "0"},
         expect=None),
    case("sv-csat-only", "surveys", "recommend empty (one question answered)",
         {"recommend": ""}, expect=None),
    case("sv-no-answer", "surveys", "csat and recommend empty", {"csat": "", "recommend": ""},
         expect="missing_value"),
    case("sv-csat-text", "surveys", "csat 'good'", {"csat": "good"}, expect="malformed_value"),
    case("sv-date-future", "surveys", "survey_date after the snapshot month",
         {"survey_date": "2024-07-01"}, expect="date_out_of_window"),
    case("sv-null-date", "surveys", "survey_date empty", {"survey_date": ""},
         expect="missing_value"),
    case("sv-unknown-account", "surveys", "account not in accounts",
         {"account_id": "ZZ-unknown"}, expect="orphan_account"),
    case("sv-duplicate", "surveys", "same account, date and channel twice", {}, {},
         expect=(None, DUP)),
]


def _line(table: str, case_id: str, row: dict[str, str] | str, account: str) -> str:
    if isinstance(row, str):
        return f"{case_id},{row}"
    values = {**GOOD[table], "account_id": account, **row}
    if table == "transactions" and "txn_id" not in row:
        values["txn_id"] = case_id
    return ",".join([case_id, *(values[c] for c in INPUT_TABLES[table].columns)])


def write_csv_bank(root: Path, cases: Sequence[RowCase] = (), *,
                   replace: dict[str, str | None] | None = None) -> dict[str, int]:
    """The good base bank plus the cases' rows as CSV, one directory per table.

    ``replace`` gives a table's whole file text instead (None: no file, no directory).
    Returns the number of data lines written per table (blank lines not counted).
    """
    lines: dict[str, list[str]] = {t: [] for t in INPUT_TABLES}
    for account in BASE_ACCOUNTS:
        lines["accounts"].append(_line("accounts", "base", {}, account))
    lines["transactions"].append(_line("transactions", "base", {"txn_id": "g2"}, "A2"))
    for table in INPUT_TABLES:
        if table != "accounts":
            lines[table].append(_line(table, "base", {}, "A1"))
    for c in cases:
        if c.table != "accounts":
            lines["accounts"].append(_line("accounts", "base", {}, c.account()))
        if c.table not in (replace or {}):
            lines[c.table] += [_line(c.table, c.id, row, c.account()) for row in c.rows]
    written = {}
    for table, rows in lines.items():
        text = (replace or {}).get(table, "\n".join([_header(table), *rows]) + "\n")
        written[table] = sum(1 for line in (text or "").splitlines()[1:] if line.strip())
        if text is not None:
            (root / table).mkdir(parents=True)
            (root / table / "part-0.csv").write_text(text)
    return written


def _header(table: str) -> str:
    return ",".join([CASE, *INPUT_TABLES[table].columns])


def _config(base_config, data: Path, warehouse: Path, snapshot: str = SNAPSHOT,
            tables: dict | None = None):
    cfg = to_dict(base_config)
    cfg["snapshot_month"] = snapshot
    cfg["inputs"].update(root=str(data), format="csv", tables=tables or {})
    cfg["output"].update(warehouse=str(warehouse), database="cvm_bad_inputs")
    return load_config_dict(cfg)


@dataclass
class Classified:
    """What validation made of a corpus: per case, the reason and row JSON of each of its
    quarantined rows; per table, rows read (validation's counts) and rows accepted."""

    quarantined: dict[str, list[tuple[str, dict]]] = field(default_factory=dict)
    quarantined_per_table: Counter = field(default_factory=Counter)
    read: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    profile: InputProfile | None = None

    def check(self, case: RowCase) -> None:
        """The case's rows got exactly the expected reasons (the others were accepted)."""
        got = self.quarantined.get(case.id, [])
        assert Counter(r for r, _ in got) == Counter(r for r in case.expect if r is not None)
        for reason, data in got:
            if reason == "malformed_line":
                # the line's text is kept as it was in the file
                assert data[MALFORMED_LINE] == f"{case.id},{case.rows[0]}"

    def totals(self, table: str) -> tuple[int, int, int]:
        """(data lines written, rows read, accepted + quarantined): all three must agree."""
        return (self.written[table], self.read[table],
                self.accepted[table] + self.quarantined_per_table[table])


def _classify(spark, cfg, written: dict[str, int]) -> Classified:
    validated = validate_inputs(read_inputs(spark, cfg.inputs), cfg)
    out = Classified(written=written)
    try:
        for row in validated.quarantine(cfg.snapshot, "bad-inputs").collect():
            data = json.loads(row.row_json)
            out.quarantined.setdefault(data[CASE], []).append((row.reason, data))
            out.quarantined_per_table[row.source_table] += 1
        out.profile = validated.profile()
        out.read = {t: sum(n.values()) for t, n in out.profile.counts.items()}
        out.accepted = {t: validated.accepted(t).count() for t in INPUT_TABLES
                        if validated.has(t)}
    finally:
        validated.unpersist()
    return out


@pytest.fixture(scope="module")
def csv_corpus(spark, base_config, tmp_path_factory) -> Classified:
    root = tmp_path_factory.mktemp("bad-inputs-csv")
    written = write_csv_bank(root / "data", ROW_CASES)
    return _classify(spark, _config(base_config, root / "data", root / "wh"), written)


# Cases tested by a test of their own (named in the docstring) rather than a parametrised one.
SINGLE_CASES = ["csv-blank-line", "cfg-unquoted-date", "tbl-surveys-absent"]
DOC_ID = re.compile(r"^\| `((?:acc|txn|mp|mkt|cr|rel|sv|pq|tbl|cfg|csv)-[a-z0-9-]+)` \|",
                    re.M)


def _all_ids() -> list[str]:
    return ([c.id for c in ROW_CASES + PARQUET_CASES] + [c.id for c in STOP_CASES]
            + [c[0] for c in CONFIG_CASES] + [c[0] for c in PROCEED_CASES] + SINGLE_CASES)


def test_corpus_ids_are_unique_and_cover_the_reasons():
    ids = _all_ids()
    assert len(ids) == len(set(ids))
    assert {r for c in ROW_CASES + PARQUET_CASES for r in c.expect} - {None} == set(REASONS)


def test_corpus_table_in_the_docs_matches_the_cases():
    """The corpus table (docs/reliability.md, section "bad inputs", or assembled into
    docs/reliability.md) lists exactly the cases of this module, each once."""
    docs = [ROOT / "docs" / "reliability.md", ROOT / "docs" / "reliability" / "bad-inputs.md"]
    texts = [p.read_text() for p in docs if p.is_file()]
    documented = Counter(i for text in texts for i in DOC_ID.findall(text))
    ids = set(_all_ids())
    assert set(documented) == ids
    # once per file (the section may be both in its own file and in the assembled doc)
    assert max(documented.values()) <= len(texts)


@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: c.id)
def test_row_level_csv(csv_corpus, case):
    csv_corpus.check(case)
    assert len(set(csv_corpus.totals(case.table))) == 1, csv_corpus.totals(case.table)


def test_csv_tables_balance(csv_corpus):
    """Every data line written is a row read, and accepted or quarantined, per table; as
    every case's quarantined rows are exactly the expected ones, the accepted rows are
    exactly the rest. The base rows (and each case's own account) were all accepted."""
    for table in INPUT_TABLES:
        assert len(set(csv_corpus.totals(table))) == 1, (table, csv_corpus.totals(table))
    assert "base" not in csv_corpus.quarantined


def test_blank_lines_are_not_rows(spark, base_config, tmp_path):
    """csv-blank-line: Spark skips empty lines; they hold no data and are not counted."""
    text = _header("marketing") + "\n\n" + _line("marketing", "base", {}, "A1") + "\n\n"
    written = write_csv_bank(tmp_path / "data", replace={"marketing": text})
    raw = read_inputs(spark, _config(base_config, tmp_path / "data", tmp_path / "wh").inputs)
    rows = raw["marketing"].collect()
    assert written["marketing"] == len(rows) == 1
    assert rows[0][MALFORMED_LINE] is None


# Typed values only a typed source can hold: transactions from Parquet.
PARQUET_CASES = [
    case("pq-txn-amount-nan", "transactions", "amount NaN (double)", {"amount": math.nan},
         expect="non_finite_value"),
    case("pq-txn-amount-inf", "transactions", "amount +infinity (double)",
         {"amount": math.inf}, expect="non_finite_value"),
    case("pq-txn-amount-neg-inf", "transactions", "amount -infinity (double)",
         {"amount": -math.inf}, expect="non_finite_value"),
    case("pq-txn-amount-neg-zero", "transactions", "amount -0.0 (double)",
         {"amount": -0.0}, expect="non_positive_amount"),
    case("pq-txn-amount-null", "transactions", "amount null", {"amount": None},
         expect="missing_value"),
    case("pq-txn-ts-1969", "transactions", "txn_ts 1969-07-20 (timestamp before 1970)",
         {"txn_ts": datetime(1969, 7, 20, 20, 17)}, expect="date_out_of_window"),
    case("pq-txn-ts-9999", "transactions", "txn_ts 9999-12-31 (timestamp)",
         {"txn_ts": datetime(9999, 12, 31, 23, 59, 59)}, expect="date_out_of_window"),
    case("pq-txn-ok", "transactions", "a good typed row", expect=None),
]


@pytest.fixture(scope="module")
def parquet_corpus(spark, base_config, tmp_path_factory) -> Classified:
    root = tmp_path_factory.mktemp("bad-inputs-parquet")
    # the optional tables are empty here too, and there is no surveys directory:
    # test_optional_tables_may_be_empty uses this run
    empty = {table: _header(table) + "\n" for _, table in PROCEED_CASES}
    written = write_csv_bank(root / "data", PARQUET_CASES,
                             replace={"transactions": None, "surveys": None, **empty})
    good = {"account_id": "A1", "txn_id": "g1", "txn_ts": datetime(2024, 6, 3, 10),
            "amount": 10.0, "product_line": "card", "direction": "debit",
            "counterparty_id": None}
    rows = [{CASE: "base", **good}]
    for c in PARQUET_CASES:
        rows += [{CASE: c.id, **good, "account_id": c.account(), "txn_id": c.id, **r}
                 for r in c.rows]
    schema = ", ".join([f"{CASE} string", *(f"{f.name} {f.dataType.simpleString()}"
                                             for f in INPUT_TABLES["transactions"].schema)])
    spark.createDataFrame([tuple(r.values()) for r in rows], schema).coalesce(1) \
        .write.parquet(str(root / "transactions"))
    cfg = _config(base_config, root / "data", root / "wh",
                  tables={"transactions": {"path": str(root / "transactions"),
                                           "format": "parquet"}})
    return _classify(spark, cfg, {**written, "transactions": len(rows)})


@pytest.mark.parametrize("case", PARQUET_CASES, ids=lambda c: c.id)
def test_row_level_parquet(parquet_corpus, case):
    parquet_corpus.check(case)
    assert len(set(parquet_corpus.totals(case.table))) == 1, parquet_corpus.totals(case.table)


@dataclass(frozen=True)
class StopCase:
    """Inputs that stop the run in its validate stage, before anything is written."""

    id: str
    table: str
    bad_input: str
    message: str                       # regex the error message must match
    replace: dict[str, str | None] = field(default_factory=dict)
    snapshot: str = SNAPSHOT
    parquet: dict[str, str] = field(default_factory=dict)  # table -> SQL of its rows
    error: type[Exception] = InputSchemaError
    tables: dict[str, dict[str, str]] = field(default_factory=dict)  # inputs.tables entries


def _without(table: str, column: str) -> str:
    cols = [c for c in [CASE, *INPUT_TABLES[table].columns] if c != column]
    good = {CASE: "base", **GOOD[table]}
    return ",".join(cols) + "\n" + ",".join(good[c] for c in cols) + "\n"


STOP_CASES = [
    StopCase("tbl-accounts-missing-column", "accounts", "accounts without open_date",
             r"input table accounts: required column open_date is missing",
             replace={"accounts": _without("accounts", "open_date")}),
    StopCase("tbl-transactions-missing-column", "transactions",
             "transactions without amount",
             r"input table transactions: required column amount is missing",
             replace={"transactions": _without("transactions", "amount")}),
    StopCase("tbl-transactions-uncastable-type", "transactions",
             "Parquet transactions whose amount is boolean",
             r"input table transactions: column amount has type boolean, which cannot be "
             r"cast to double",
             parquet={"transactions": "select 'A1' account_id, 't1' txn_id, "
                      "timestamp'2024-06-03 10:00:00' txn_ts, true amount, 'card' product_line,"
                      " 'debit' direction, cast(null as string) counterparty_id"}),
    StopCase("tbl-credit-uncastable-type", "credit", "Parquet credit whose month is an int",
             r"input table credit: column month has type int, which cannot be cast to date",
             parquet={"credit": "select 'A1' account_id, 202406 month, 0 days_past_due, "
                      "0.0 overdue_amount, 1000.0 credit_limit, 0.2 utilisation"}),
    StopCase("tbl-relations-missing", "relations", "no relations directory",
             r"input table relations: cannot read csv at .*relations",
             replace={"relations": None}),
    StopCase("tbl-surveys-configured-missing", "surveys",
             "inputs.tables names a surveys path that does not exist",
             r"input table surveys: cannot read csv at .*no-such-surveys",
             tables={"surveys": {"path": "no-such-surveys"}}),
    StopCase("tbl-marketing-zero-bytes", "marketing", "marketing file of zero bytes",
             r"input table marketing: cannot read csv at .*marketing: no columns \(the files "
             r"are empty: no header line\)", replace={"marketing": ""}),
    StopCase("tbl-accounts-empty", "accounts", "accounts with a header and no rows",
             r"input table accounts: no accepted rows \(0 read\)",
             replace={"accounts": _header("accounts") + "\n"}, error=InputDataError),
    StopCase("tbl-accounts-all-quarantined", "accounts", "every accounts row is bad",
             r"input table accounts: no accepted rows \(2 read, all quarantined: "
             r"null_key=2\)",
             # the header without the optional columns (plan_type, payment_type)
             replace={"accounts": ",".join([CASE, *INPUT_TABLES["accounts"].required])
                      + "\nbase,,2020-01-01,,,,,,\nbase,  ,2020-01-01,,,,,,\n"},
             error=InputDataError),
    StopCase("tbl-transactions-empty", "transactions", "transactions with no rows",
             r"input table transactions: no accepted rows \(0 read\)",
             replace={"transactions": _header("transactions") + "\n"}, error=InputDataError),
    StopCase("tbl-monthly-empty", "monthly_product", "monthly_product with no rows",
             r"input table monthly_product: no accepted rows \(0 read\)",
             replace={"monthly_product": _header("monthly_product") + "\n"},
             error=InputDataError),
    StopCase("cfg-snapshot-after-data", "transactions, monthly_product",
             "snapshot_month 2024-08, data ends 2024-06",
             r"snapshot_month 2024-08 cannot be scored.*input table transactions: no accepted "
             r"rows in the snapshot month 2024-08 \(the latest accepted txn_ts is 2024-06-03\)"
             r"; input table monthly_product: no accepted rows in the snapshot month 2024-08",
             snapshot="2024-08", error=InputDataError),
    StopCase("cfg-snapshot-before-data", "accounts, transactions, monthly_product",
             "snapshot_month 2019-06, before every account opened",
             r"snapshot_month 2019-06 cannot be scored.*input table accounts: no accepted "
             r"rows \(2 read, all quarantined: date_out_of_window=2\)",
             snapshot="2019-06", error=InputDataError),
    StopCase("tbl-monthly-missing-snapshot-month", "monthly_product",
             "monthly_product rows only up to the month before the snapshot",
             r"input table monthly_product: no accepted rows in the snapshot month 2024-06 "
             r"\(the latest accepted month is 2024-05-01\)",
             replace={"monthly_product": _header("monthly_product") + "\n"
                      + _line("monthly_product", "base", {"month": "2024-05-01"}, "A1") + "\n"},
             error=InputDataError),
]


@pytest.mark.parametrize("case", STOP_CASES, ids=lambda c: c.id)
def test_stops_before_any_write(spark, base_config, tmp_path, case):
    tables = dict(case.tables)
    for table, sql in case.parquet.items():
        path = tmp_path / f"{table}.parquet"
        spark.sql(sql).write.parquet(str(path))
        tables[table] = {"path": str(path), "format": "parquet"}
    write_csv_bank(tmp_path / "data", replace=case.replace)
    warehouse = tmp_path / "wh"
    cfg = _config(base_config, tmp_path / "data", warehouse, case.snapshot, tables)
    with pytest.raises(case.error, match=case.message):
        run_snapshot(spark, cfg, run_id="bad-inputs")
    assert not warehouse.exists() or not any(p.is_file() for p in warehouse.rglob("*"))


# Tables the snapshot can do without: empty, the checks pass (the run goes on).
PROCEED_CASES = [
    ("tbl-marketing-empty", "marketing"),
    ("tbl-credit-empty", "credit"),
    ("tbl-relations-empty", "relations"),
]


def test_optional_tables_may_be_empty(parquet_corpus):
    """tbl-marketing-empty, tbl-credit-empty, tbl-relations-empty: all three are empty in the
    Parquet corpus's bank, and the snapshot check passes on its profile. tbl-surveys-absent:
    the bank has no surveys directory and the config names none: the table is left out."""
    profile = parquet_corpus.profile
    check_snapshot_data(profile, date(2024, 6, 1))  # does not raise
    for _, table in PROCEED_CASES:
        assert profile.counts[table] == {}
    assert "surveys" not in profile.counts and "surveys" not in parquet_corpus.accepted
    assert profile.counts["transactions"]["accepted"] == 2  # base and pq-txn-ok
    assert profile.last_accepted["transactions"] == date(2024, 6, 3)
    assert profile.last_accepted["monthly_product"] == date(2024, 6, 1)


# Config: (id, what is wrong, edit, message regex). The edit is dotted overrides (as
# `--set`), ("text", old, new) on the shipped file's text, or ("delete", top-level key).
def _text(old: str, new: str) -> tuple[str, str, str]:
    return ("text", old, new)


CONFIG_CASES = [
    ("cfg-unknown-key", "rfm.binz: 4 (misspelt key)", {"rfm.binz": 4},
     r"rfm\.binz: unknown key \(allowed under rfm: \[.*\]\)$"),
    ("cfg-unknown-top-key", "snapshot: ... at the top level", {"snapshot": "2024-06"},
     r"^snapshot: unknown key \(allowed under the top level: \[.*\]\)$"),
    ("cfg-wrong-type-int", "rfm.bins: five", {"rfm.bins": "five"},
     r"rfm\.bins: expected an integer, got 'five'"),
    ("cfg-wrong-type-bool", "inputs.csv_header: 'maybe'", {"inputs.csv_header": "maybe"},
     r"inputs\.csv_header: expected true/false"),
    ("cfg-wrong-type-list", "validation.product_lines: card", {"validation.product_lines": "card"},
     r"validation\.product_lines: expected a list, got 'card'"),
    ("cfg-wrong-type-mapping", "value.influence_weights: 0.5",
     {"value.influence_weights": 0.5}, r"value\.influence_weights: expected a mapping"),
    ("cfg-weights-sum", "contribution weights summing to 1.1",
     {"value.contribution_weights.historical": 0.30},
     r"value\.contribution_weights must sum to 1, got 1\.1"),
    ("cfg-weight-negative", "influence weight -0.2",
     {"value.influence_weights.family": -0.2},
     r"value\.influence_weights\.family must be in 0\.\.1, got -0\.2"),
    ("cfg-weight-nan", "influence weight .nan", {"value.influence_weights.family": math.nan},
     r"value\.influence_weights\.family must be in 0\.\.1, got nan"),
    ("cfg-weight-unknown", "influence weight for an unknown component",
     {"value.influence_weights.friends": 0.0},
     r"value\.influence_weights\.friends: unknown key"),
    ("cfg-snapshot-format", "snapshot_month: 2024/06", {"snapshot_month": "2024/06"},
     r"snapshot_month: expected a month as 'YYYY-MM', got '2024/06'"),
    ("cfg-snapshot-mid-month", "snapshot_month: 2024-06-15",
     {"snapshot_month": "2024-06-15"},
     r"snapshot_month: expected a month as 'YYYY-MM', got '2024-06-15'"),
    ("cfg-snapshot-month-13", "snapshot_month: 2024-13", {"snapshot_month": "2024-13"},
     r"snapshot_month: month out of range in '2024-13'"),
    ("cfg-snapshot-number", "snapshot_month: 202406 (a number)", {"snapshot_month": 202406},
     r"snapshot_month: expected a string, got 202406"),
    ("cfg-snapshot-missing", "no snapshot_month", ("delete", "snapshot_month"),
     r"snapshot_month: required key is missing"),
    ("cfg-data-start-after-snapshot", "validation.data_start after snapshot_month",
     {"validation.data_start": "2030-01-01"},
     r"validation\.data_start must be before snapshot_month"),
    ("cfg-duplicate-key", "rfm.bins given twice",
     _text("\nrfm:\n  bins: 5", "\nrfm:\n  bins: 5\n  bins: 4"),
     r"(?s)not valid YAML: .*found duplicate key 'bins' \(first given on line \d+\)"),
    ("cfg-not-yaml", "a tab-indented, unbalanced line", _text("\nrfm:\n", "\nrfm: [\n\t"),
     r"not valid YAML"),
]


@pytest.mark.parametrize(("cid", "bad_input", "edit", "message"), CONFIG_CASES,
                         ids=[c[0] for c in CONFIG_CASES])
def test_config(tmp_path, cid, bad_input, edit, message):
    text = CONF.read_text()
    overrides = None
    if isinstance(edit, dict):
        overrides = edit
    elif edit[0] == "text":
        _, old, new = edit
        assert text.count(old) == 1, cid
        text = text.replace(old, new)
    else:
        data = yaml.safe_load(text)
        del data[edit[1]]
        text = yaml.safe_dump(data, allow_unicode=True)
    path = tmp_path / "cvm.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_config_unquoted_dates_are_strings(tmp_path):
    """cfg-unquoted-date: `snapshot_month: 2024-06-01` without quotes is the month."""
    text = CONF.read_text()
    old = next(line for line in text.splitlines() if line.startswith("snapshot_month:"))
    path = tmp_path / "cvm.yaml"
    path.write_text(text.replace(old, "snapshot_month: 2024-06-01")
                    .replace('data_start: "2000-01-01"', "data_start: 2000-01-01"))
    cfg = load_config(path)
    assert cfg.snapshot == date(2024, 6, 1)
    assert cfg.validation.data_start_date == date(2000, 1, 1)

"""Input validation: every bad-row kind is quarantined with its reason; schema errors stop."""

from __future__ import annotations

import json
from datetime import date

import pytest
from pyspark.sql import functions as F

from cvm_spark.contract.reading import InputSchemaError
from cvm_spark.contract.validate import validate_inputs
from cvm_spark.schemas.inputs import INPUT_TABLES


def _raw(spark, table, rows):
    """A CSV-like table: every contract column as a string."""
    cols = INPUT_TABLES[table].required
    return spark.createDataFrame(rows, ", ".join(f"{c} string" for c in cols))


GOOD_TXN = ("A1", "t1", "2024-05-01 10:00:00", "10.0", "card", "debit", None)


@pytest.fixture(scope="module")
def raw(spark):
    return {
        "accounts": _raw(spark, "accounts", [
            ("A1", "2020-01-01", None, "individual", "north", "1980", "branch", "100.0"),
            ("A2", "2021-03-04", None, "individual", "south", "1990", "online", None),
            ("  ", "2021-03-04", None, "individual", "south", "1990", "online", None),
            ("A1", "2020-01-01", None, "individual", "north", "1980", "branch", "100.0"),
            ("A9", "2025-01-01", None, "individual", "north", "1980", "branch", None),
            ("A8", "2020-01-01", None, "individual", "north", "1980", "branch", "-5"),
            ("A7", "2020-01-01", None, "individual", "north", "1980", "branch", "abc"),
            ("A6", "2020-01-01", "2019-01-01", "individual", "north", "1980", "branch", None),
        ]),
        "transactions": _raw(spark, "transactions", [
            GOOD_TXN,
            GOOD_TXN,                                                          # duplicate
            (None, "t2", "2024-05-01 10:00:00", "10.0", "card", "debit", None),  # null key
            ("A1", "t3", "2024-05-01 10:00:00", "0", "card", "debit", None),
            ("A1", "t4", "2024-05-01 10:00:00", "-3", "card", "debit", None),
            ("A1", "t5", "2024-05-01 10:00:00", "NaN", "card", "debit", None),
            ("A1", "t6", "2024-05-01 10:00:00", "Infinity", "card", "debit", None),
            ("A1", "t7", "2030-01-01 00:00:00", "1.0", "card", "debit", None),  # future
            ("A1", "t8", "1999-12-31 00:00:00", "1.0", "card", "debit", None),  # too old
            ("A1", "t9", "2024-05-01 10:00:00", "1.0", "crypto", "debit", None),
            ("A1", "t10", "2024-05-01 10:00:00", "1.0", "card", "sideways", None),
            ("ZZ", "t11", "2024-05-01 10:00:00", "1.0", "card", "debit", None),  # orphan
            ("A1", "t12", "not a time", "1.0", "card", "debit", None),
            ("A1", "t13", "2024-05-01 10:00:00", None, "card", "debit", None),
            ("A2", "t14", "2024-06-30 23:59:59", "5.0", "loan", "credit", "A1"),
        ]),
        "monthly_product": _raw(spark, "monthly_product", [
            ("A1", "2024-05-01", "card", "100", "1", "0.5"),
            ("A1", "2024-05-01", "card", "200", "2", "0.5"),     # same key: duplicate
            ("A1", "2024-05-15", "card", "100", "1", "0.5"),     # not a month start
            ("A1", "2024-04-01", "card", "-1", "1", "0.5"),      # negative balance
            ("ZZ", "2024-05-01", "card", "100", "1", "0.5"),
            ("A1", "2024-07-01", "card", "100", "1", "0.5"),     # after the snapshot
        ]),
        "marketing": _raw(spark, "marketing", [
            ("A1", "2024-05-01", "10", "1"),
            ("A2", "2024-05-01", "-10", "1"),
            ("ZZ", "2024-05-01", "10", "1"),
        ]),
        "credit": _raw(spark, "credit", [
            ("A1", "2024-05-01", "0", "0", "1000", "0.5"),
            ("A2", "2024-05-01", "-1", "0", "1000", "0.5"),
        ]),
        "relations": _raw(spark, "relations", [
            ("A1", "A2", "family"),
            ("A1", "A1", "family"),
            ("A1", "ZZ", "employer"),
            ("A2", "A1", "friend"),
        ]),
    }


@pytest.fixture(scope="module")
def validated(raw, base_config):
    cfg = base_config.with_snapshot("2024-06")
    out = validate_inputs(raw, cfg)
    yield out
    out.unpersist()


def test_each_bad_row_kind_gets_its_reason(validated):
    assert validated.counts() == {
        "accounts": {"accepted": 2, "null_key": 1, "duplicate_event": 1,
                     "date_out_of_window": 2, "negative_value": 1, "malformed_value": 1},
        "transactions": {"accepted": 2, "duplicate_event": 1, "null_key": 1,
                         "non_positive_amount": 2, "non_finite_value": 2,
                         "date_out_of_window": 2, "unknown_product_line": 1,
                         "unknown_category": 1, "orphan_account": 1, "malformed_value": 1,
                         "missing_value": 1},
        "monthly_product": {"accepted": 1, "duplicate_event": 1, "month_not_month_start": 1,
                            "negative_value": 1, "orphan_account": 1,
                            "date_out_of_window": 1},
        "marketing": {"accepted": 1, "negative_value": 1, "orphan_account": 1},
        "credit": {"accepted": 1, "negative_value": 1},
        "relations": {"accepted": 1, "self_relation": 1, "orphan_account": 1,
                      "unknown_category": 1},
    }


def test_accepted_plus_quarantined_equals_read(raw, validated):
    quarantine = validated.quarantine(date(2024, 6, 1), "run-1")
    for name, df in raw.items():
        accepted = validated.accepted(name).count()
        rejected = quarantine.where(F.col("source_table") == name).count()
        assert accepted + rejected == df.count(), name


def test_quarantine_keeps_the_original_row(validated):
    quarantine = validated.quarantine(date(2024, 6, 1), "run-1")
    row = quarantine.where(F.col("reason") == "malformed_value") \
        .where(F.col("source_table") == "accounts").first()
    assert json.loads(row.row_json)["acquisition_cost"] == "abc"
    assert (row.snapshot_month, row.run_id) == (date(2024, 6, 1), "run-1")


def test_accepted_rows_are_typed_and_deduplicated(validated):
    txns = validated.accepted("transactions")
    assert dict(txns.dtypes)["amount"] == "double"
    assert sorted(r.txn_id for r in txns.collect()) == ["t1", "t14"]
    monthly = validated.accepted("monthly_product").collect()
    assert [(r.avg_balance, r.income) for r in monthly] == [(100.0, 1.0)]


def test_missing_required_column_names_table_and_column(raw, base_config):
    broken = dict(raw, transactions=raw["transactions"].drop("amount"))
    with pytest.raises(InputSchemaError, match=r"input table transactions: required column "
                                               r"amount is missing"):
        validate_inputs(broken, base_config)


def test_uncastable_type_names_table_and_column(raw, base_config):
    broken = dict(raw, credit=raw["credit"].withColumn("utilisation", F.array(F.lit(1.0))))
    with pytest.raises(InputSchemaError, match=r"input table credit: column utilisation has "
                                               r"type array<double>"):
        validate_inputs(broken, base_config)


def test_age_band_may_replace_birth_year(raw, base_config):
    accounts = raw["accounts"].drop("birth_year").withColumn("age_band", F.lit("30-39"))
    out = validate_inputs(dict(raw, accounts=accounts), base_config.with_snapshot("2024-06"))
    try:
        assert out.accepted("accounts").where(F.col("birth_year").isNull()).count() == 2
    finally:
        out.unpersist()


def test_larger_table_plan_classifies_alike(raw, base_config, validated):
    """The plan for larger tables (repeated keys by an aggregate, rows in one pass, the
    window only over rows of a repeated key) gives the rows, reasons, JSON and counts of
    the one-job plan, with and without repeated keys (accounts have some, marketing none)."""
    large = validate_inputs(raw, base_config.with_snapshot("2024-06"), small_table_bytes=0)
    try:
        assert large.profile() == validated.profile()
        for name in raw:
            def rows(v, name=name):  # as text: NaN amounts compare equal
                return sorted(repr(r) for r in v.classified[name].collect())
            assert rows(large) == rows(validated), name
    finally:
        large.unpersist()

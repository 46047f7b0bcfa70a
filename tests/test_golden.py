"""Every output table of a seeded 3,000-account run equals the golden copy (tests/golden.py).

Update the copy only for a deliberate change to the numbers, in the same commit, saying why:
``CVM_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py``.
"""

from __future__ import annotations

import os

import golden
import pytest

pytestmark = pytest.mark.e2e

UPDATE = os.environ.get("CVM_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def golden_tables(spark, golden_run):
    """The golden run (conftest.py); with CVM_UPDATE_GOLDEN=1 its tables become the copy."""
    cfg = golden_run[0]
    if UPDATE:
        golden.save(spark, cfg)
    return cfg


@pytest.mark.parametrize("table", golden.TABLES)
def test_table_equals_the_golden_copy(spark, golden_tables, table):
    cfg = golden_tables
    schema, rows = golden.table_rows(spark, cfg, table)
    expected_schema, expected = golden.load(table)
    assert schema == expected_schema, f"{table}: columns or types changed"
    problems = golden.differences(table, expected, rows)
    assert not problems, "\n".join(problems)


def test_the_golden_copy_is_not_trivial():
    """The copy holds every table with rows, and the run scored thousands of accounts."""
    counts = {t: len(golden.load(t)[1]) for t in golden.TABLES}
    assert counts["features"] > 0.9 * golden.ACCOUNTS, counts
    assert counts["rfm"] == counts["value_scores"] == counts["tiers"] == counts["features"]
    assert all(n > 0 for n in counts.values()), counts
    reasons = {r["reason"] for r in golden.load("quarantine")[1]}
    assert {"duplicate_event", "orphan_account", "null_key"} <= reasons

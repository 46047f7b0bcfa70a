"""The declared output schemas (cvm_spark/storage/tables.py) and the check before each write.

The golden copy's ``schema.json`` is what the pipeline really wrote for the shipped config,
so the declarations are held against it; the end-to-end runs then check every write.
"""

from __future__ import annotations

import json
from datetime import date

import golden  # tests/ is on sys.path (rootdir conftest)
import pytest
from pyspark.sql import types as T

from cvm_spark.config import load_config_dict, to_dict
from cvm_spark.schemas.outputs import TABLE_DESCRIPTIONS
from cvm_spark.storage.tables import (
    OutputSchemaError,
    check_output_schema,
    declared_schema,
    table_columns,
)


def _config(base_config, tmp_path, **changes):
    data = to_dict(golden.golden_config(base_config, tmp_path))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return load_config_dict(data)


def _plain(schema: T.StructType) -> list[str]:
    return [f"{f.name} {f.dataType.simpleString()}" for f in schema.fields]


@pytest.mark.parametrize("table", golden.TABLES)
def test_declared_schemas_are_what_the_golden_run_wrote(base_config, tmp_path, table):
    written = json.loads((golden.GOLDEN_DIR / "schema.json").read_text())[table]
    declared = _plain(declared_schema(table, _config(base_config, tmp_path)))
    if table == "run_log":   # the golden copy keeps the columns that describe the data
        declared = [c for c in declared if c.split()[0] in golden.RUN_LOG_COLUMNS]
    assert declared == written


def test_every_output_table_is_declared_and_every_column_has_a_comment(base_config, tmp_path):
    cfg = _config(base_config, tmp_path)
    assert set(golden.TABLES) == set(TABLE_DESCRIPTIONS)
    for table in TABLE_DESCRIPTIONS:
        fields = declared_schema(table, cfg).fields
        assert fields and len({f.name for f in fields}) == len(fields), table
        assert all(f.metadata["comment"].strip() for f in fields), table
    with pytest.raises(KeyError, match="not an output table"):
        declared_schema("nope", cfg)


def test_declarations_follow_the_config(base_config, tmp_path):
    cfg = _config(base_config, tmp_path, **{
        "features.windows_months": [2, 12], "rfm.window_months": 12,
        "tiers.dormancy_months": 12,
        "credit.quarter_months": 4, "privacy.pseudonymise": True})
    features = table_columns("features", cfg)
    assert "income_2m" in features and "income_3m" not in features
    assert "avg_balance_wealth_2m" in features
    scores = [f.name for f in declared_schema("value_scores", cfg).fields]
    assert "credit_grade_4m" in scores and "credit_grade_3m" not in scores
    # pseudonymised: the account key in the account id's place, the same everywhere
    assert scores[0] == "account_key" and "account_id" not in scores
    assert table_columns("value_scores", cfg)[0] == "account_id"   # as the stages build it


def test_a_frame_that_differs_is_refused_before_the_write(spark, base_config, tmp_path):
    cfg = _config(base_config, tmp_path)
    schema = declared_schema("campaign_targets", cfg)
    row = (date(2024, 12, 1), "a1", "upsell", "why")
    check_output_schema(spark.createDataFrame([row], schema), "campaign_targets", cfg)
    missing = spark.createDataFrame([row[:3]], T.StructType(schema.fields[:3]))
    with pytest.raises(OutputSchemaError, match=r"campaign_targets: .*missing \['reason'\]"):
        check_output_schema(missing, "campaign_targets", cfg)
    extra = spark.createDataFrame(
        [(*row, 1)], T.StructType([*schema.fields, T.StructField("score", T.IntegerType())]))
    with pytest.raises(OutputSchemaError, match=r"not declared \['score'\]"):
        check_output_schema(extra, "campaign_targets", cfg)
    retyped = spark.createDataFrame(
        [(row[0], 1, "upsell", "why")],
        T.StructType([schema.fields[0], T.StructField("account_id", T.LongType()),
                      *schema.fields[2:]]))
    with pytest.raises(OutputSchemaError, match=r"retyped \['account_id \(bigint, declared "
                                                r"string\)'\]"):
        check_output_schema(retyped, "campaign_targets", cfg)
    # the order is free: Delta writes by name
    check_output_schema(spark.createDataFrame([row], schema).select(
        "reason", "campaign", "account_id", "snapshot_month"), "campaign_targets", cfg)

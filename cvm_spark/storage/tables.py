"""The output tables' declared schemas: every column of every table, its type and comment.

One registry (:func:`declared_schema`) for the nine tables BI reads. A table's columns follow
from the config (the feature windows, the product lines and groups, the credit roll-ups, the
loyalty dimensions) and from the privacy mode (``account_key`` in place of ``account_id``),
never from "whatever the plan produced": the runner checks every frame against its
declaration before writing it (:func:`check_output_schema`), so a column that goes missing,
appears or changes type is an error naming it, not a silent change to a BI table.

Comments come from :mod:`cvm_spark.schemas.outputs` and travel in each field's metadata
(``comment``), as Delta stores them.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from cvm_spark.config import CvmConfig
from cvm_spark.models.clv import CLV_COLUMNS
from cvm_spark.models.elasticity import group_elasticity_columns
from cvm_spark.models.future_value import FUTURE_COLUMNS
from cvm_spark.models.loyalty import loyalty_columns
from cvm_spark.models.value import SCALED
from cvm_spark.schemas.inputs import ACCOUNT_ID, SNAPSHOT_MONTH
from cvm_spark.schemas.outputs import TABLE_DESCRIPTIONS, column_comment
from cvm_spark.segments.tiers import TIER_COLUMNS, TIER_TYPES
from cvm_spark.storage.privacy import ACCOUNT_KEY

STRING, DATE, INT, LONG = T.StringType(), T.DateType(), T.IntegerType(), T.LongType()
DOUBLE, BOOLEAN, TIMESTAMP = T.DoubleType(), T.BooleanType(), T.TimestampType()

# the value_scores columns of the elasticity model that are numbers (its class is text)
ELASTICITY_NUMBERS = ("income_prev", "income_cur", "spend_prev", "spend_cur", "elasticity",
                      "return_on_spend")

RUN_LOG_COLUMNS: tuple[tuple[str, T.DataType], ...] = (
    (SNAPSHOT_MONTH, DATE), ("run_id", STRING), ("run_seq", INT),
    ("run_started_at", TIMESTAMP), ("config_fingerprint", STRING), ("code_version", STRING),
    ("git_commit", STRING), ("item_kind", STRING), ("item_name", STRING), ("stage", STRING),
    ("rows_in", LONG), ("rows_quarantined", LONG), ("rows_out", LONG),
    ("stage_seconds", DOUBLE),
)


class OutputSchemaError(ValueError):
    """A frame about to be written does not have its table's declared columns and types."""


def _features(cfg: CvmConfig) -> list[tuple[str, T.DataType]]:
    f = cfg.features
    columns = [(SNAPSHOT_MONTH, DATE), (ACCOUNT_ID, STRING), ("customer_type", STRING),
               ("region", STRING), ("acquisition_channel", STRING), ("open_date", DATE),
               ("close_date", DATE), ("is_closed", BOOLEAN), ("tenure_months", INT),
               ("recency_days", INT), ("last_txn_date", DATE),
               (f"active_months_{f.active_months}m", INT)]
    for w in f.windows:
        columns += [(f"months_open_{w}m", INT), (f"frequency_{w}m", LONG)]
        columns += [(f"{name}_{w}m", DOUBLE) for name in
                    ("monetary", "avg_ticket", "income", "cost", "profit", "arpu")]
        columns += [(f"avg_balance_{pl}_{w}m", DOUBLE) for pl in cfg.validation.product_lines]
    return [*columns, ("product_count", INT), (f"income_trend_{f.trend_months}m", DOUBLE),
            (f"income_volatility_{f.volatility_months}m", DOUBLE)]


def _rfm() -> list[tuple[str, T.DataType]]:
    return [(SNAPSHOT_MONTH, DATE), (ACCOUNT_ID, STRING), ("recency_days", INT),
            ("frequency", LONG), ("monetary", DOUBLE), ("r_score", INT), ("f_score", INT),
            ("m_score", INT), ("rfm_code", STRING), ("rfm_score", INT), ("segment", STRING),
            ("btyd_frequency", DOUBLE), ("btyd_recency", DOUBLE), ("btyd_t", DOUBLE),
            ("btyd_monetary", DOUBLE)]


def _value_scores(cfg: CvmConfig) -> list[tuple[str, T.DataType]]:
    groups = [f"current_value_{g}" for g in cfg.value.product_groups]
    future_groups = [f"future_value_{g}" for g in cfg.value.product_groups]
    q, h, d = (cfg.credit.quarter_months, cfg.credit.half_year_months,
               cfg.credit.delinquency_months)
    doubles = lambda *names: [(n, DOUBLE) for n in names]  # noqa: E731
    return [
        (ACCOUNT_ID, STRING), (SNAPSHOT_MONTH, DATE), *doubles("current_value", *groups),
        *doubles("historical_value", "historical_observed", "historical_backfill",
                 "a0_monthly_profit"),
        ("backfill_months", INT),
        *doubles("influence_enterprise", "influence_family", "influence_radiation",
                 "influence_value"),
        *[(c, STRING if c == "fv_cluster" else DOUBLE) for c in FUTURE_COLUMNS],
        *doubles(*[f"future_value_{g}" for g in cfg.value.product_groups]),
        ("credit_score", INT),
        ("credit_grade", STRING), (f"credit_grade_{q}m", STRING), (f"credit_grade_{h}m", STRING),
        (f"max_dpd_{d}m", INT), (f"delinquent_months_{d}m", INT), ("overdue_amount", DOUBLE),
        ("payment_method", STRING), ("bad_debt", BOOLEAN),
        *[(c, STRING if c == "loyalty_band" else DOUBLE) for c in loyalty_columns(cfg.loyalty)],
        *doubles(*ELASTICITY_NUMBERS, *CLV_COLUMNS), ("elasticity_class", STRING),
        *[(c, STRING if "_class_" in c else DOUBLE)
          for c in group_elasticity_columns(cfg.value.product_groups)],
        *doubles(*[f"{c}_pct" for c in [*SCALED, *groups, *future_groups]]),
        *doubles("contribution_value", "contribution_value_pct", "contribution_money"),
    ]


def _tiers() -> list[tuple[str, T.DataType]]:
    types = {"date": DATE, "double": DOUBLE, "boolean": BOOLEAN}
    return [(c, types[TIER_TYPES[c]] if c in TIER_TYPES else STRING) for c in TIER_COLUMNS]


def _columns(table: str, cfg: CvmConfig) -> list[tuple[str, T.DataType]]:
    if table == "features":
        return _features(cfg)
    if table == "rfm":
        return _rfm()
    if table == "value_scores":
        return _value_scores(cfg)
    if table == "tiers":
        return _tiers()
    fixed: dict[str, list[tuple[str, T.DataType]]] = {
        "quarantine": [(SNAPSHOT_MONTH, DATE), ("run_id", STRING), ("source_table", STRING),
                       ("reason", STRING), ("row_json", STRING)],
        "campaign_targets": [(SNAPSHOT_MONTH, DATE), (ACCOUNT_ID, STRING), ("campaign", STRING),
                             ("reason", STRING)],
        "model_metrics": [(SNAPSHOT_MONTH, DATE), ("run_id", STRING), ("model", STRING),
                          ("scope", STRING), ("metric", STRING), ("value", DOUBLE)],
        "tier_summary": [(SNAPSHOT_MONTH, DATE), ("tier", STRING), ("tier_label_en", STRING),
                         ("tier_label_zh", STRING), ("segment", STRING),
                         ("abc_class", STRING), ("accounts", LONG),
                         ("total_contribution_value", DOUBLE),
                         ("mean_contribution_value", DOUBLE),
                         ("total_contribution_money", DOUBLE),
                         ("mean_contribution_money", DOUBLE), ("total_current_value", DOUBLE),
                         ("mean_current_value", DOUBLE), ("total_future_value", DOUBLE),
                         ("share_of_accounts", DOUBLE),
                         ("share_of_contribution_money", DOUBLE)],
        "kpi_summary": [(SNAPSHOT_MONTH, DATE), ("dimension", STRING), ("group_name", STRING),
                        ("period_month", DATE), ("kpi", STRING), ("value", DOUBLE),
                        ("base", LONG), ("small_group", T.BooleanType())],
        "run_log": list(RUN_LOG_COLUMNS),
    }
    if table not in fixed:
        raise KeyError(f"{table} is not an output table (known: {sorted(TABLE_DESCRIPTIONS)})")
    return fixed[table]


def table_columns(table: str, cfg: CvmConfig) -> list[str]:
    """The column names of an output table as the stages build it (``account_id``; the
    writer pseudonymises), in order."""
    return [name for name, _ in _columns(table, cfg)]


def declared_schema(table: str, cfg: CvmConfig) -> T.StructType:
    """The columns of an output table as written for ``cfg``, in order, with comments.

    With ``privacy.pseudonymise`` the account column is ``account_key`` (same position).

    Raises:
        KeyError: ``table`` is not one of the output tables.
    """
    key = ACCOUNT_KEY if cfg.privacy.pseudonymise else ACCOUNT_ID
    fields = []
    for name, dtype in _columns(table, cfg):
        name = key if name == ACCOUNT_ID else name
        fields.append(T.StructField(name, dtype, True,
                                    metadata={"comment": column_comment(name) or ""}))
    return T.StructType(fields)


def check_output_schema(df: DataFrame, table: str, cfg: CvmConfig) -> None:
    """Refuse a frame whose columns or types differ from :func:`declared_schema` (the order
    is free: Delta writes by name).

    Raises:
        OutputSchemaError: names every missing, extra and retyped column.
    """
    want = {f.name: f.dataType for f in declared_schema(table, cfg).fields}
    have = {f.name: f.dataType for f in df.schema.fields}
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    retyped = [f"{c} ({have[c].simpleString()}, declared {want[c].simpleString()})"
               for c in want if c in have and have[c] != want[c]]
    if missing or extra or retyped:
        parts = [f"{label} {items}" for label, items in
                 (("missing", missing), ("not declared", extra), ("retyped", retyped)) if items]
        raise OutputSchemaError(
            f"{table}: the frame does not match the declared schema "
            f"(cvm_spark/storage/tables.py): {'; '.join(parts)}")

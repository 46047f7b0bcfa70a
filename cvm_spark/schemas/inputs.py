"""The data contract: input tables, their required columns and types, and column names.

Spec section 1. Every input table is described once here; the validator, the generator and
the tests all read these definitions, so a column is renamed in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

# Column names used across modules.
ACCOUNT_ID = "account_id"
SNAPSHOT_MONTH = "snapshot_month"
# Column added to a CSV input on read: the text of a line that did not parse into the
# header's columns (null for good lines). It is kept in the quarantine row_json.
MALFORMED_LINE = "_malformed_line"


@dataclass(frozen=True)
class InputTable:
    """One input table of the contract.

    Attributes:
        name: table name as used in config and in the quarantine table.
        schema: required columns with the Spark type each is cast to on read.
        nullable: required columns that may hold nulls.
        key: columns that identify one event/row (used for duplicate detection).
        description: what one row is.
        optional: columns of ``schema`` a source may leave out (the telecom profile's
            columns, docs/data-contract.md): when absent, reading adds them as nulls of
            their type; when present they are cast and checked like the others. They are
            always nullable.
    """

    name: str
    schema: T.StructType
    nullable: frozenset[str]
    key: tuple[str, ...]
    description: str
    optional: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        assert self.optional <= self.nullable, "optional columns must be nullable"
        assert self.optional <= set(self.columns), "optional columns must be in the schema"

    @property
    def columns(self) -> list[str]:
        """Every contract column, the optional ones included, in contract order."""
        return [f.name for f in self.schema.fields]

    @property
    def required(self) -> list[str]:
        """The columns a source must have."""
        return [c for c in self.columns if c not in self.optional]

    @property
    def required_schema(self) -> T.StructType:
        """``schema`` without the optional columns: what a source may minimally hold."""
        return T.StructType([f for f in self.schema.fields if f.name not in self.optional])


def _struct(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(n, t, True) for n, t in fields])


ACCOUNTS = InputTable(
    name="accounts",
    schema=_struct(
        ("account_id", T.StringType()),
        ("open_date", T.DateType()),
        ("close_date", T.DateType()),
        ("customer_type", T.StringType()),
        ("region", T.StringType()),
        ("birth_year", T.IntegerType()),
        ("acquisition_channel", T.StringType()),
        ("acquisition_cost", T.DoubleType()),
        # optional (telecom): the tariff plan and how it is paid
        ("plan_type", T.StringType()),
        ("payment_type", T.StringType()),
    ),
    nullable=frozenset({"close_date", "acquisition_cost", "birth_year", "region",
                        "acquisition_channel", "customer_type", "plan_type", "payment_type"}),
    key=("account_id",),
    description="one row per account",
    optional=frozenset({"plan_type", "payment_type"}),
)

TRANSACTIONS = InputTable(
    name="transactions",
    schema=_struct(
        ("account_id", T.StringType()),
        ("txn_id", T.StringType()),
        ("txn_ts", T.TimestampType()),
        ("amount", T.DoubleType()),
        ("product_line", T.StringType()),
        ("direction", T.StringType()),
        ("counterparty_id", T.StringType()),
    ),
    nullable=frozenset({"counterparty_id", "txn_id"}),
    # txn_id is optional in the contract; without it a duplicate event is the same account,
    # time, amount, product line, direction and counterparty.
    key=("account_id", "txn_id", "txn_ts", "amount", "product_line", "direction",
         "counterparty_id"),
    description="one row per transaction event",
)

MONTHLY_PRODUCT = InputTable(
    name="monthly_product",
    schema=_struct(
        ("account_id", T.StringType()),
        ("month", T.DateType()),
        ("product_line", T.StringType()),
        ("avg_balance", T.DoubleType()),
        ("income", T.DoubleType()),
        ("cost", T.DoubleType()),
    ),
    nullable=frozenset(),
    key=("account_id", "month", "product_line"),
    description="one row per account, month and product line",
)

MARKETING = InputTable(
    name="marketing",
    schema=_struct(
        ("account_id", T.StringType()),
        ("month", T.DateType()),
        ("spend", T.DoubleType()),
        ("contacts", T.IntegerType()),
    ),
    nullable=frozenset(),
    key=("account_id", "month"),
    description="one row per account and month with marketing activity",
)

CREDIT = InputTable(
    name="credit",
    schema=_struct(
        ("account_id", T.StringType()),
        ("month", T.DateType()),
        ("days_past_due", T.IntegerType()),
        ("overdue_amount", T.DoubleType()),
        ("credit_limit", T.DoubleType()),
        ("utilisation", T.DoubleType()),
        # optional (telecom): how the bill was paid that month, and whether the debt was
        # written off as bad debt
        ("payment_method", T.StringType()),
        ("bad_debt", T.BooleanType()),
    ),
    nullable=frozenset({"payment_method", "bad_debt"}),
    key=("account_id", "month"),
    description="one row per account and month with a credit facility",
    optional=frozenset({"payment_method", "bad_debt"}),
)

RELATIONS = InputTable(
    name="relations",
    schema=_struct(
        ("account_id", T.StringType()),
        ("related_account_id", T.StringType()),
        ("relation", T.StringType()),
    ),
    nullable=frozenset(),
    key=("account_id", "related_account_id", "relation"),
    description="one row per related pair (family member or employer)",
)

SURVEYS = InputTable(
    name="surveys",
    schema=_struct(
        ("account_id", T.StringType()),
        ("survey_date", T.DateType()),
        ("csat", T.IntegerType()),
        ("recommend", T.IntegerType()),
        ("channel", T.StringType()),
    ),
    # a response may answer one of the two questions; one that answers neither is
    # quarantined as missing_value
    nullable=frozenset({"csat", "recommend", "channel"}),
    key=("account_id", "survey_date", "channel"),
    description="one row per survey response: satisfaction 1-5 (CSAT) and likelihood to "
                "recommend 0-10 (NPS)",
)

INPUT_TABLES: dict[str, InputTable] = {
    t.name: t for t in (ACCOUNTS, TRANSACTIONS, MONTHLY_PRODUCT, MARKETING, CREDIT, RELATIONS,
                        SURVEYS)
}

# Tables a run may go without: when the table's location does not exist (and the config
# does not name it in inputs.tables), the run reads nothing for it and the figures that
# need it are not computed.
OPTIONAL_TABLES = frozenset({"surveys"})

# Ranges of bounded scores: (column, lowest, highest); outside is value_out_of_range.
SCORE_RANGES = {"surveys": (("csat", 1, 5), ("recommend", 0, 10))}

# Alternative to birth_year allowed by the contract.
ACCOUNTS_ALTERNATIVES = {"birth_year": "age_band"}

# The date or timestamp column of each table that must fall inside the data window.
EVENT_DATE_COLUMN = {
    "accounts": "open_date",
    "transactions": "txn_ts",
    "monthly_product": "month",
    "marketing": "month",
    "credit": "month",
    "surveys": "survey_date",
}

# Monthly tables whose month column must be the first day of a month.
MONTHLY_TABLES = ("monthly_product", "marketing", "credit")

# Quarantine reason codes (documented in docs/data-contract.md).
REASONS = (
    "malformed_line",      # CSV line with the wrong number of fields or an unterminated quote
    "null_key",            # account id (or other key column) null or blank
    "missing_value",       # a required non-key value is null
    "malformed_value",     # value present in the source but not castable to the contract type
    "non_finite_value",    # NaN or +/-infinity in a numeric column
    "non_positive_amount",  # transaction amount <= 0
    "negative_value",      # a balance, spend, count or days-past-due below zero
    "value_out_of_range",  # a bounded score outside its scale (CSAT 1..5, recommend 0..10)
    "date_out_of_window",  # before validation.data_start (accounts: 1900) or after the
                           # snapshot month end; accounts also when close_date < open_date
    "month_not_month_start",
    "unknown_product_line",
    "unknown_category",    # direction or relation outside the allowed values
    "orphan_account",      # account id (or related account id) not in the accepted accounts
    "self_relation",
    "duplicate_event",
)

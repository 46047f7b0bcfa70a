"""Where the inputs are read from, the data contract's row rules and the synthetic
sample's size (YAML sections ``inputs``, ``validation`` and ``generator``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from cvm_spark.config.checks import check, parse_date
from cvm_spark.schemas.inputs import INPUT_TABLES

INPUT_FORMATS = ("parquet", "csv", "delta")
# The product lines of monthly_product by default (validation.product_lines).
PRODUCT_LINES = ("demand_deposit", "time_deposit", "loan", "wealth", "card", "fee_other")
# generator.profile: the industries the generator imitates with the contract's tables (the
# profiles themselves are cvm_generate.profile.INDUSTRIES), and "purchases": a purchase log
# for `cvm import-purchases` (cvm_generate.purchases).
INDUSTRY_PROFILES = ("bank", "telecom")
GENERATOR_PROFILES = (*INDUSTRY_PROFILES, "purchases")
# The events before this date are refused whatever the config says (an open date before it
# is refused too): the floor of the data window when ``validation.data_start`` is unset.
EARLIEST_DATE = date(1900, 1, 1)


@dataclass(frozen=True)
class TableInput:
    """Where one input table is read from (overrides ``inputs.root``/``inputs.format``)."""

    path: str | None = None
    format: str | None = None

    def __post_init__(self) -> None:
        check(self.format is None or self.format in INPUT_FORMATS,
              f"format must be one of {INPUT_FORMATS}, got {self.format!r}")


@dataclass(frozen=True)
class InputsConfig:
    """Input locations. A table's path defaults to ``<root>/<table name>``."""

    root: str = "data/sample"
    format: str = "parquet"
    csv_header: bool = True
    tables: dict[str, TableInput] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.format in INPUT_FORMATS,
              f"format must be one of {INPUT_FORMATS}, got {self.format!r}")
        unknown = sorted(set(self.tables) - set(INPUT_TABLES))
        check(not unknown, f"tables has unknown table(s) {unknown}; "
              f"known: {sorted(INPUT_TABLES)}")

    def location(self, table: str) -> tuple[str, str]:
        """Return ``(path, format)`` of an input table.

        A URI root (``hdfs://namenode:8020/landing``, ``s3a://bucket/x``) is joined as text:
        ``pathlib`` would fold its ``//`` and lose the authority (``hdfs:/namenode:8020/...``).
        """
        override = self.tables.get(table, TableInput())
        if override.path:
            path = override.path
        elif "://" in self.root:
            path = f"{self.root.rstrip('/')}/{table}"
        else:
            path = str(Path(self.root) / table)
        return path, override.format or self.format


@dataclass(frozen=True)
class ValidationConfig:
    """Row-level rules of the data contract (spec section 1).

    ``data_start`` unset (null): the data window starts at the data's earliest accepted
    event (events are accepted from ``EARLIEST_DATE`` on); set, events before it are
    quarantined. ``accept_zero_amount``: a transaction of amount 0 is accepted (a purchase
    with zero spend, as lifetimes counts it) instead of quarantined as
    ``non_positive_amount``; negative amounts are refused either way.
    """

    data_start: str | None = None
    accept_zero_amount: bool = False
    product_lines: list[str] = field(default_factory=lambda: list(PRODUCT_LINES))
    directions: list[str] = field(default_factory=lambda: ["credit", "debit"])
    relations: list[str] = field(default_factory=lambda: ["family", "employer"])

    def __post_init__(self) -> None:
        if self.data_start is not None:
            try:
                start = parse_date(self.data_start)
            except ValueError as exc:
                raise ValueError(f"data_start: {exc}") from None
            check(start >= EARLIEST_DATE, f"data_start must be on or after {EARLIEST_DATE}, "
                  f"got {self.data_start}")
        for name in ("product_lines", "directions", "relations"):
            values = getattr(self, name)
            check(len(values) > 0, f"{name} must not be empty")
            check(len(set(values)) == len(values), f"{name} has duplicates: {values}")

    @property
    def data_start_date(self) -> date | None:
        """The configured start of the data window; None: derived from the data."""
        return None if self.data_start is None else parse_date(self.data_start)

    @property
    def event_floor(self) -> date:
        """Events before this date are quarantined (``date_out_of_window``)."""
        return self.data_start_date or EARLIEST_DATE


@dataclass(frozen=True)
class GeneratorConfig:
    """Synthetic bank or telecom data, or a purchase log (see docs/generator.md)."""

    profile: str = "bank"
    accounts: int = 20_000
    months: int = 24
    seed: int = 7
    bad_row_share: float = 0.002
    txn_per_month: float = 3.0
    partitions: int = 0

    def __post_init__(self) -> None:
        check(self.profile in GENERATOR_PROFILES,
              f"profile must be one of {list(GENERATOR_PROFILES)}, got {self.profile!r}")
        check(self.accounts >= 10, f"accounts must be >= 10, got {self.accounts}")
        check(3 <= self.months <= 240, f"months must be in 3..240, got {self.months}")
        check(0 <= self.bad_row_share <= 0.1, "bad_row_share must be in 0..0.1")
        check(0 < self.txn_per_month <= 100, "txn_per_month must be in (0, 100]")
        check(self.partitions >= 0, "partitions must be >= 0 (0 = from the data size)")

"""A purchase log as input (YAML section ``purchases``; docs/purchase-log.md): where the log
is, which of its columns hold the customer, the time, the amount (and optionally the order
id, quantity and channel), and how its lines become the contract's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cvm_spark.config.checks import check

if TYPE_CHECKING:
    from cvm_spark.config.sources import ValidationConfig
    from cvm_spark.config.stages import FeaturesConfig

LOG_FORMATS = ("csv", "parquet")
# the roles a log column can play; the first three are required
REQUIRED_ROLES = ("customer_id", "timestamp", "amount")
OPTIONAL_ROLES = ("order_id", "quantity", "channel")
DEFAULT_COLUMNS = {"customer_id": "customer_id", "timestamp": "timestamp", "amount": "amount"}


@dataclass(frozen=True)
class PurchaseLogConfig:
    """How ``cvm import-purchases`` reads a purchase log and maps it onto the contract.

    Attributes:
        path: the log (a file or a folder of files).
        format: ``csv`` (with a header line) or ``parquet``.
        columns: role -> column name in the log (matched case-insensitively); roles
            ``customer_id``, ``timestamp``, ``amount`` required, ``order_id``, ``quantity``,
            ``channel`` optional.
        timestamp_format: a Spark datetime pattern (``dd/MM/yyyy HH:mm``) for text
            timestamps; null = ISO 8601 (``2024-06-03 14:05:00``, ``2024-06-03``).
        amount_per_unit: the amount column is a unit price; spend = amount x quantity
            (needs a ``quantity`` column).
        product_line: the one product line of ``monthly_product`` and ``transactions``
            (must be in ``validation.product_lines``).
        direction: the direction of every purchase (must be in
            ``features.purchase_directions``, so that BTYD counts it).
        customer_type: ``accounts.customer_type`` of every customer.
    """

    path: str = "data/purchases"
    format: str = "csv"
    columns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    timestamp_format: str | None = None
    amount_per_unit: bool = False
    product_line: str = "purchases"
    direction: str = "debit"
    customer_type: str = "individual"

    def __post_init__(self) -> None:
        check(self.format in LOG_FORMATS,
              f"format must be one of {list(LOG_FORMATS)}, got {self.format!r}")
        unknown = sorted(set(self.columns) - set(REQUIRED_ROLES) - set(OPTIONAL_ROLES))
        check(not unknown, f"columns has unknown role(s) {unknown}; known: "
              f"{[*REQUIRED_ROLES, *OPTIONAL_ROLES]}")
        missing = [r for r in REQUIRED_ROLES if r not in self.columns]
        check(not missing, f"columns must name the log's column for {missing}")
        blank = sorted(r for r, c in self.columns.items() if not c.strip())
        check(not blank, f"columns: empty column name for {blank}")
        names = [c.lower() for c in self.columns.values()]
        check(len(set(names)) == len(names),
              f"columns: one log column for two roles: {self.columns}")
        check(not self.amount_per_unit or "quantity" in self.columns,
              "amount_per_unit needs a quantity column (columns.quantity)")
        check(bool(self.path.strip()), "path must not be empty")
        check(bool(self.product_line.strip()), "product_line must not be empty")

    def check_against(self, validation: ValidationConfig, features: FeaturesConfig) -> None:
        """The product line and direction the import writes pass the contract's rules and
        count as purchases (called by ``CvmConfig``; a ``purchases.`` prefixed error)."""
        check(self.product_line in validation.product_lines,
              f"purchases.product_line {self.product_line!r} is not in "
              f"validation.product_lines {validation.product_lines}")
        check(self.direction in features.purchase_directions,
              f"purchases.direction {self.direction!r} is not in "
              f"features.purchase_directions {features.purchase_directions}")

    def column(self, role: str) -> str | None:
        """The log column of a role (lower case), or None when the log has none."""
        name = self.columns.get(role)
        return None if name is None else name.lower()

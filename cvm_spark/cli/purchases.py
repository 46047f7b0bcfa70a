"""``cvm import-purchases``: a purchase log turned into the contract's tables
(docs/purchase-log.md), and ``cvm run --generate`` for the purchase-log profile.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from cvm_spark.config import CvmConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from cvm_spark.contract.purchases import PurchaseLogProfile

Generate = Callable[["SparkSession", CvmConfig], dict[str, str]]


def import_command(spark: SparkSession, args: argparse.Namespace, cfg: CvmConfig) -> int:
    """Import ``purchases.path`` into ``inputs.root`` and say what was found."""
    from cvm_spark.contract.purchases import import_purchases

    profile, paths = import_purchases(spark, cfg)
    print(render_import(profile, cfg, paths))
    return 0


def render_import(p: PurchaseLogProfile, cfg: CvmConfig, paths: dict[str, str]) -> str:
    """The summary ``cvm import-purchases`` prints."""
    assert cfg.purchases is not None
    span = (f"{p.first_day} .. {p.last_day}" if p.first_day is not None else "no valid time")
    lines = [
        f"imported {cfg.purchases.path}: {p.lines:,} lines, {p.customers:,} customers, "
        f"{span}",
        f"  lines without an order id (own id each): {p.without_order_id:,}",
        f"  zero-amount lines: {p.zero_amount:,}; negative (returns, net of income; "
        f"quarantined as transactions): {p.negative_amount:,}",
        f"  unparsable: timestamp {p.bad_timestamp:,}, amount {p.bad_amount:,}; "
        f"without a customer: {p.without_customer:,} (quarantined by the run)",
        "contract tables:",
        *[f"  {name:<16}{path}" for name, path in paths.items()],
    ]
    if p.last_day is not None:
        month = p.last_day.strftime("%Y-%m")
        lines.append(f"next: cvm run --config <this config> --snapshot {month}  (the log's "
                     "last month; take the month before if it is not complete)")
    return "\n".join(lines)


def generate_and_import(write_log: Generate) -> Generate:
    """``cvm run --generate`` with ``generator.profile: purchases``: ``write_log`` (the
    generator's ``write_sample``) writes the log, then it is imported, so the run reads the
    tables the log makes."""
    from cvm_spark.contract.purchases import import_purchases

    def generate(spark: SparkSession, cfg: CvmConfig) -> dict[str, str]:
        paths = write_log(spark, cfg)
        return {**paths, **import_purchases(spark, cfg)[1]}

    return generate

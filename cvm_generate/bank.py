"""Seeded synthetic data of a bank or a telecom operator (``generator.profile``): the seven
input tables of the data contract, built on Spark.

Every value is a pure function of ``(generator.seed, ids, a per-use salt)``: uniforms come from
bit slices of ``xxhash64`` and are shaped by inverse-CDF transforms (exponential, lognormal by
Box-Muller, counts by rounding a sum of uniforms). Nothing depends on partitioning, the clock or
Python's ``random``, so the same config and snapshot give the same rows on any cluster. The
plan starts from ``spark.range(accounts)`` and fans out with ``sequence`` + ``explode``
(months, product lines, transactions): no shuffle, nothing collected to the driver, no Python
UDFs and no higher-order functions (they are interpreted, not compiled).

What is planted (value groups, lifecycle patterns, marketing response, delinquency, relations,
frequent counterparties) and every bad-row kind with the reason code it should get are
described in ``docs/generator.md``.

The package, in the order a table is built: ``profile`` (what the customers look like: the
industry profiles with their groups, product lines and channels; the shared patterns and
bad-row kinds), ``draws`` (random numbers from hashes), ``plan`` (parameters derived once from
the config, the chosen profile included), ``accounts`` (hidden per-account parameters,
``accounts``, ``relations``), ``activity`` (account-months, ``transactions``,
``monthly_product``, ``marketing``, ``credit``), ``telecom`` (the telecom profile's own
columns), ``surveys`` and this module (the seven tables, writing them).
"""

from __future__ import annotations

import datetime
import logging

from pyspark.sql import DataFrame, SparkSession

from cvm_generate.accounts import account_base, accounts_table, relations_table
from cvm_generate.activity import (
    account_months,
    credit_table,
    marketing_table,
    monthly_product_table,
    transactions_table,
)
from cvm_generate.plan import Plan
from cvm_generate.purchases import write_purchase_log
from cvm_generate.surveys import surveys_table
from cvm_spark.config import CvmConfig, GeneratorConfig, ValidationConfig

log = logging.getLogger(__name__)


def generate_tables(spark: SparkSession, gen: GeneratorConfig, snapshot: datetime.date,
                    validation: ValidationConfig) -> dict[str, DataFrame]:
    """All seven input tables, the optional surveys included (keys = names in
    schemas.INPUT_TABLES) for gen.accounts accounts over
    gen.months months ending at `snapshot` (first day of the snapshot month).

    Args:
        spark: the active session.
        gen: industry profile, size, seed, bad-row share, transaction rate and partition
            count.
        snapshot: any day of the snapshot month (the month is what counts).
        validation: product lines, directions, relation types and ``data_start`` the good rows
            respect (and the bad rows break).

    Returns:
        ``{table name: DataFrame}``; each has exactly the contract columns and types of
        ``schemas.INPUT_TABLES[name]`` in order (the optional columns only where the profile
        writes them: telecom ``accounts`` and ``credit``), and ``accounts`` additionally
        carries ``planted_group`` and ``planted_pattern``. The frames are lazy: nothing runs until
        they are written or counted.

    Raises:
        ValueError: the snapshot month is before ``validation.data_start``.
    """
    plan = Plan.build(gen, snapshot, validation)
    log.info("generating %d accounts (%s profile) x %d months to %s (seed %d, bad share %g, "
             "%d partitions)", plan.accounts, plan.industry.name, plan.months, plan.snapshot,
             gen.seed, plan.share, plan.partitions)
    base = account_base(spark, plan)
    am = account_months(base, plan)
    return {
        "accounts": accounts_table(base, plan),
        "transactions": transactions_table(am, plan),
        "monthly_product": monthly_product_table(am, plan),
        "marketing": marketing_table(am, plan),
        "credit": credit_table(am, plan),
        "relations": relations_table(base, plan),
        "surveys": surveys_table(am, plan),
    }


def write_tables(tables: dict[str, DataFrame], root: str, fmt: str = "parquet") -> dict[str, str]:
    """Write each table to <root>/<name> (overwrite) in parquet | csv (header, ISO dates) | delta;
    returns name -> path.

    Args:
        tables: ``{name: DataFrame}`` as returned by :func:`generate_tables`.
        root: a directory or URI; each table goes to ``<root>/<name>``.
        fmt: ``parquet``, ``csv`` (header row, ``yyyy-MM-dd`` dates, ISO-8601 timestamps,
            whitespace kept) or ``delta``.

    Returns:
        ``{name: path}`` of what was written.

    Raises:
        ValueError: ``fmt`` is not one of the three formats.
    """
    if fmt not in ("parquet", "csv", "delta"):
        raise ValueError(f"fmt must be parquet, csv or delta, got {fmt!r}")
    paths = {}
    for name, df in tables.items():
        path = f"{root.rstrip('/')}/{name}"
        writer = df.write.mode("overwrite").format(fmt)
        if fmt == "csv":
            writer = (writer.option("header", "true")
                      .option("dateFormat", "yyyy-MM-dd")
                      .option("timestampFormat", "yyyy-MM-dd'T'HH:mm:ss")
                      .option("ignoreLeadingWhiteSpace", "false")
                      .option("ignoreTrailingWhiteSpace", "false"))
        elif fmt == "delta":
            writer = writer.option("overwriteSchema", "true")
        writer.save(path)
        log.info("wrote %s (%s) to %s", name, fmt, path)
        paths[name] = path
    return paths


def write_sample(spark: SparkSession, cfg: CvmConfig) -> dict[str, str]:
    """Generate the sample of ``cfg.generator`` for ``cfg.snapshot`` and write it where the job
    reads its inputs (``cfg.inputs.root`` in ``cfg.inputs.format``): what ``cvm generate``
    and ``cvm run --generate`` do. With ``generator.profile: purchases`` the sample is a
    purchase log written to ``purchases.path`` (:mod:`cvm_generate.purchases`).

    Returns:
        ``{name: path}`` of what was written.
    """
    if cfg.generator.profile == "purchases":
        # a purchase log, not the contract's tables: `cvm import-purchases` maps it
        return write_purchase_log(spark, cfg)
    tables = generate_tables(spark, cfg.generator, cfg.snapshot, cfg.validation)
    return write_tables(tables, cfg.inputs.root, cfg.inputs.format)

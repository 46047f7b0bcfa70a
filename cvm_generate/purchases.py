"""A seeded purchase log (``generator.profile: purchases``; docs/generator.md, "Purchase
log"): what a shop's export looks like, for ``cvm import-purchases``.

One line per purchase: customer, time, amount, and the optional order id, quantity and
channel, under the column names of ``purchases.columns``. The customers are a mix a retail
log has: many buy once, the others repeat at their own rate and spend level; a few first
bought in 1997 (far before ``generator.months``), about 2 % of lines cost 0.00, the
customers of one group (30 %) have lines without an order id, and some of those lines are
repeated exactly (the same thing bought twice in one second: real lines, not duplicates);
two thirds of the repeat buyers stop buying at some point (BG/NBD's dropout).
Every draw is a hash of (seed, salt, customer, line), so the log does not depend on
partitioning.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_generate.draws import Rng, int_between, normal_draw, pick_by_share, uniform
from cvm_spark.common.months import add_months, month_end
from cvm_spark.config import CvmConfig, GeneratorConfig, PurchaseLogConfig

OLD_FIRST_DAY = date(1997, 1, 1)
OLD_SHARE = 0.02          # customers whose first purchase is in 1997
REPEAT_SHARE = 0.40       # customers who buy more than once
NO_ID_SHARE = 0.30        # customers whose lines carry no order id
ZERO_SHARE = 0.02         # lines that cost 0.00
TWIN_SHARE = 0.10         # lines without an id that appear twice
STAY_SHARE = 0.33         # repeat buyers who keep buying to the end
CHANNELS = ("online", "store", "app")
CHANNEL_SHARES = (0.5, 0.35, 0.15)


def _customers(spark: SparkSession, gen: GeneratorConfig, start: date, end: date
               ) -> DataFrame:
    rng = Rng(gen.seed)
    h = rng.hash("customer", F.col("id"))
    old = uniform(h, 0, 4) < OLD_SHARE
    span = (end - start).days
    first = F.when(old, F.date_add(F.lit(OLD_FIRST_DAY), int_between(uniform(h, 1, 4), 0, 364))
                   ).otherwise(F.date_add(F.lit(start), int_between(uniform(h, 1, 4), 0, span)))
    repeat = old | (uniform(h, 2, 4) < REPEAT_SHARE)
    h2 = rng.hash("customer2", F.col("id"))
    h3 = rng.hash("customer3", F.col("id"))
    # repeat buyers: 2 + a geometric-like count (mean about 6 lines)
    count = F.least(F.lit(40), F.lit(2) + F.floor(-F.log(1.0 - uniform(h2, 0, 4)) * 4.0))
    return spark.range(gen.accounts, numPartitions=max(1, gen.partitions or 2)).select(
        F.col("id"),
        F.format_string("C%06d", F.col("id")).alias("customer"),
        first.alias("first_day"),
        F.when(repeat, count).otherwise(F.lit(1)).cast("int").alias("lines"),
        F.exp(F.lit(3.0) + normal_draw(h2, 1, 2, 4) * 0.8).alias("level"),
        (uniform(h, 3, 4) < NO_ID_SHARE).alias("no_id"),
        # the share of the days to the end the customer stays (BG/NBD's dropout): a third
        # stay to the end, the others leave after a share u^2 of it
        F.when(uniform(h3, 0, 2) < STAY_SHARE, F.lit(1.0))
        .otherwise(F.pow(uniform(h3, 1, 2), 2.0)).alias("alive"))


def _lines(customers: DataFrame, gen: GeneratorConfig, end: date) -> DataFrame:
    rng = Rng(gen.seed)
    rows = customers.select("*", F.explode(F.sequence(F.lit(1), F.col("lines"))).alias("j"))
    h = rng.hash("line", F.col("id"), F.col("j"))
    left = F.floor(F.datediff(F.lit(end), F.col("first_day")) * F.col("alive")).cast("int")
    day = F.when(F.col("j") == 1, F.col("first_day")).otherwise(
        F.date_add(F.col("first_day"), int_between(uniform(h, 0, 4), 0, left)))
    seconds = int_between(uniform(h, 1, 4), 8 * 3600, 21 * 3600 - 1)
    amount = F.round(F.col("level") * F.exp(normal_draw(h, 2, 3, 4) * 0.3), 2)
    h2 = rng.hash("line2", F.col("id"), F.col("j"))
    zero = uniform(h2, 0, 4) < ZERO_SHARE
    twin = F.col("no_id") & (uniform(h2, 1, 4) < TWIN_SHARE)
    return rows.select(
        "customer",
        (F.unix_timestamp(F.to_timestamp(day)) + seconds).cast("timestamp").alias("ts"),
        F.when(zero, F.lit(0.0)).otherwise(amount).alias("amount"),
        F.when(~F.col("no_id"), F.format_string("O%07d-%02d", F.col("id"), F.col("j")))
        .alias("order_id"),
        int_between(uniform(h2, 2, 4), 1, 4).alias("quantity"),
        pick_by_share(uniform(h2, 3, 4), CHANNELS, CHANNEL_SHARES).alias("channel"),
        F.explode(F.sequence(F.lit(1), F.when(twin, 2).otherwise(1))).alias("_copy"))


def generate_purchase_log(spark: SparkSession, gen: GeneratorConfig, snapshot: date,
                          log_cfg: PurchaseLogConfig | None = None) -> DataFrame:
    """The log (lazy) for ``gen.accounts`` customers: first purchases from the start of the
    ``gen.months`` months ending at ``snapshot`` (1997 for a few), lines to the snapshot's
    month end. Columns named by ``log_cfg.columns`` (text timestamp ``yyyy-MM-dd
    HH:mm:ss``, amount with two decimals)."""
    log_cfg = log_cfg or PurchaseLogConfig()
    start, end = add_months(snapshot, 1 - gen.months), month_end(snapshot)
    lines = _lines(_customers(spark, gen, start, end), gen, end)
    values: dict[str, Column] = {
        "customer_id": F.col("customer"),
        "timestamp": F.date_format("ts", "yyyy-MM-dd HH:mm:ss"),
        "amount": F.format_string("%.2f", F.col("amount")),
        "order_id": F.col("order_id"),
        "quantity": F.col("quantity").cast("string"),
        "channel": F.col("channel"),
    }
    return lines.select(*[values[role].alias(name) for role, name in log_cfg.columns.items()])


def write_purchase_log(spark: SparkSession, cfg: CvmConfig) -> dict[str, str]:
    """Generate the log of ``cfg.generator`` and write it to ``purchases.path`` (one CSV
    file with a header in that folder, or Parquet): what ``cvm generate`` does with
    ``generator.profile: purchases``. Returns ``{"purchases": path}``."""
    log_cfg = cfg.purchases or PurchaseLogConfig()
    df = generate_purchase_log(spark, cfg.generator, cfg.snapshot, log_cfg)
    writer = df.coalesce(1).write.mode("overwrite").format(log_cfg.format)
    if log_cfg.format == "csv":
        writer = writer.option("header", True)
    writer.save(log_cfg.path)
    return {"purchases": log_cfg.path}

"""A seeded purchase log (``generator.profile: purchases``; docs/generator.md, "Purchase
log"): what a shop's export looks like, for ``cvm import-purchases``.

One line per purchase: customer, time, amount, and the optional order id, quantity and
channel, under the column names of ``purchases.columns``. The customers follow BG/NBD's
story: each buys at a rate of their own while alive and may drop out after each repeat
purchase, so many buy once and never again; a few first bought in 1997 (far before
``generator.months``), about 2 % of lines cost 0.00, the customers of one group (30 %) have
lines without an order id, and some of those lines are repeated exactly (the same thing
bought twice in one second: real lines, not duplicates).
Every draw is a hash of (seed, salt, customer, line), so the log does not depend on
partitioning.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from cvm_generate.draws import Rng, int_between, normal_draw, pick_by_share, uniform
from cvm_spark.common.months import add_months, month_end
from cvm_spark.config import CvmConfig, GeneratorConfig, PurchaseLogConfig

OLD_FIRST_DAY = date(1997, 1, 1)
OLD_SHARE = 0.02          # customers whose first purchase is in 1997
RATE_MEDIAN = 0.02        # purchases a week while alive (median; log-normal)
RATE_SIGMA = 1.0
DROPOUT_B = 2.0           # dropout p ~ Beta(1, 2): mean 1/3 after each repeat purchase
MAX_REPEATS = 60
NO_ID_SHARE = 0.30        # customers whose lines carry no order id
ZERO_SHARE = 0.02         # lines that cost 0.00
TWIN_SHARE = 0.10         # lines without an id that appear twice
CHANNELS = ("online", "store", "app")
CHANNEL_SHARES = (0.5, 0.35, 0.15)


def _customers(spark: SparkSession, gen: GeneratorConfig, start: date, end: date
               ) -> DataFrame:
    """One row per customer: the first purchase day, the BG/NBD rate and the number of
    repeat purchases the customer lives for, the spend level, whether lines carry ids."""
    rng = Rng(gen.seed)
    h = rng.hash("customer", F.col("id"))
    h2 = rng.hash("customer2", F.col("id"))
    old = uniform(h, 0, 4) < OLD_SHARE
    span = (end - start).days
    first = F.when(old, F.date_add(F.lit(OLD_FIRST_DAY), int_between(uniform(h, 1, 4), 0, 364))
                   ).otherwise(F.date_add(F.lit(start), int_between(uniform(h, 1, 4), 0, span)))
    # dropout probability after each repeat purchase ~ Beta(1, DROPOUT_B) (inverse CDF);
    # the customer dies after the M-th repeat purchase, M ~ Geometric(p) on 1, 2, ...
    p = 1.0 - F.pow(1.0 - uniform(h2, 0, 4), 1.0 / DROPOUT_B)
    repeats = F.ceil(F.log(1.0 - uniform(h2, 1, 4)) / F.log(1.0 - p))
    return spark.range(gen.accounts, numPartitions=max(1, gen.partitions or 2)).select(
        F.col("id"),
        F.format_string("C%06d", F.col("id")).alias("customer"),
        first.alias("first_day"),
        F.least(F.lit(MAX_REPEATS), F.greatest(F.lit(1), repeats)).cast("int").alias("repeats"),
        # purchases per day while alive: log-normal around RATE_MEDIAN a week
        (F.lit(RATE_MEDIAN / 7.0) * F.exp(normal_draw(h, 2, 3, 4) * RATE_SIGMA)).alias("rate"),
        F.exp(F.lit(3.0) + normal_draw(h2, 2, 3, 4) * 0.8).alias("level"),
        (uniform(rng.hash("customer3", F.col("id")), 0, 1) < NO_ID_SHARE).alias("no_id"))


def _lines(customers: DataFrame, gen: GeneratorConfig, end: date) -> DataFrame:
    """The first purchase and the repeat purchases (exponential gaps at the customer's rate,
    summed by a window per customer from the first line to the current one) up to the
    snapshot's month end."""
    rng = Rng(gen.seed)
    rows = customers.select("*", F.explode(F.sequence(F.lit(0), F.col("repeats"))).alias("j"))
    h = rng.hash("line", F.col("id"), F.col("j"))
    gap = F.when(F.col("j") == 0, F.lit(0.0)).otherwise(
        -F.log(1.0 - uniform(h, 0, 4)) / F.col("rate"))
    so_far = Window.partitionBy("customer").orderBy("j").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    rows = rows.select("*", F.floor(F.sum(gap).over(so_far)).cast("int").alias("offset"))
    rows = rows.where(F.date_add(F.col("first_day"), F.col("offset")) <= F.lit(end))
    day = F.date_add(F.col("first_day"), F.col("offset"))
    seconds = int_between(uniform(h, 1, 4), 8 * 3600, 21 * 3600 - 1)
    amount = F.round(F.col("level") * F.exp(normal_draw(h, 2, 3, 4) * 0.3), 2)
    h2 = rng.hash("line2", F.col("id"), F.col("j"))
    zero = uniform(h2, 0, 4) < ZERO_SHARE
    twin = F.col("no_id") & (uniform(h2, 1, 4) < TWIN_SHARE)
    return rows.select(
        "customer",
        (F.unix_timestamp(F.to_timestamp(day)) + seconds).cast("timestamp").alias("ts"),
        F.when(zero, F.lit(0.0)).otherwise(amount).alias("amount"),
        F.when(~F.col("no_id"), F.format_string("O%07d-%02d", F.col("id"), F.col("j") + 1))
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

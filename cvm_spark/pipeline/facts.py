"""Account facts: every per-account statistic of the inputs, in one aggregation per table.

The features of the snapshot ``t``, the features of ``t - H`` (the future-value training
set), current and historical value, the elasticity's income and spend and the future-value
label all sum the same rows over different windows. Computed separately they read
transactions three times and the monthly facts five times. Here each table is read once:

* transactions: summed per account and day, then one ``groupBy(account_id)`` with the
  window aggregates of both as-of months
  (:func:`cvm_spark.features.windows.transaction_aggregates`);
* monthly_product: summed per account and month (with the month's index and whether the
  account was open), then one ``groupBy(account_id)`` with the features' aggregates of both
  as-of months, the value, elasticity-income and label aggregates;
* marketing: one ``groupBy(account_id)`` with the elasticity's spend aggregates.

The result has one row per account opened by the snapshot's month end, is materialised once
by the pipeline, and every consumer is a projection of it: :func:`features_of` (the
features table), :func:`cvm_spark.models.future_value.training_from_facts`, :func:`scored_base_of`
(features, values and elasticity together, for the value model).
Elasticity and the future value's split are also per product-line group
(``value.product_groups``): their income sums are in the same aggregate. docs/performance.md has
the measurements behind this layout.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.months import month_end
from cvm_spark.config import CvmConfig
from cvm_spark.features.windows import (
    account_attributes,
    account_base,
    account_columns,
    features_from_aggregates,
    monthly_aggregates,
    monthly_rows,
    transaction_aggregates,
    transaction_days,
)
from cvm_spark.models.elasticity import (
    elasticity_from_aggregates,
    income_aggregates,
    spend_aggregates,
)
from cvm_spark.models.future_value import as_of_aggregates, label_aggregates
from cvm_spark.models.value import (
    future_share_aggregates,
    future_share_columns,
    value_aggregates,
    values_from_aggregates,
)
from cvm_spark.schemas.inputs import ACCOUNT_ID


def build_account_facts(accepted: dict[str, DataFrame], cfg: CvmConfig,
                        k_data_start: int) -> DataFrame:
    """The account facts of ``cfg.snapshot`` from the accepted inputs (lazy; materialise it).

    Args:
        accepted: accepted rows of accounts, transactions, monthly_product and marketing.
        cfg: the run's configuration.
        k_data_start: months back from the snapshot of the earliest accepted monthly fact
            (counted during validation).
    """
    t = cfg.snapshot
    fcfg, lines = cfg.features, cfg.validation.product_lines
    attributes = account_attributes(accepted["accounts"], t)
    base = account_base(accepted["accounts"], t)
    # as of t-H and of the back-test's origins only what the training and back-test frames
    # read (by default income windows, trend, volatility, active months)
    fv_txn, fv_mon = as_of_aggregates(t, fcfg, lines, cfg.future_value)
    txn = (transaction_days(accepted["transactions"], month_end(t), fcfg).groupBy(ACCOUNT_ID)
           .agg(*transaction_aggregates(t, fcfg), *fv_txn))
    groups = list(cfg.value.product_groups)
    rows = monthly_rows(accepted["monthly_product"], base, t, lines, cfg.value.product_groups)
    mon = rows.groupBy(ACCOUNT_ID).agg(
        *monthly_aggregates(t, t, fcfg, lines),
        *fv_mon,
        *value_aggregates(t, cfg.value, k_data_start),
        *income_aggregates(cfg.elasticity, groups),
        *future_share_aggregates(groups, cfg.future_value.horizon_months),
        *label_aggregates(cfg.future_value))
    spend = accepted["marketing"].groupBy(ACCOUNT_ID).agg(*spend_aggregates(t, cfg.elasticity))
    return (attributes.join(txn, on=ACCOUNT_ID, how="left")
            .join(mon, on=ACCOUNT_ID, how="left")
            .join(spend, on=ACCOUNT_ID, how="left"))


def features_of(facts: DataFrame, cfg: CvmConfig) -> DataFrame:
    """The snapshot's features (and BTYD summary) from the facts: one row per account."""
    return facts.select(*features_from_aggregates(cfg.snapshot, cfg.features,
                                                  cfg.validation.product_lines))


def scored_base_of(facts: DataFrame, cfg: CvmConfig, k_data_start: int) -> DataFrame:
    """The snapshot's features, current and historical value and elasticity columns from the
    facts, in one projection (one row per account; no join)."""
    k_open = account_columns(cfg.snapshot, F.col("open_date"),
                             F.col("close_date_raw"))["_k_open"]
    return facts.select("*", k_open.alias("_k_open")).select(
        *features_from_aggregates(cfg.snapshot, cfg.features, cfg.validation.product_lines),
        *values_from_aggregates(cfg.value, k_data_start),
        *elasticity_from_aggregates(cfg.elasticity, list(cfg.value.product_groups)),
        *future_share_columns(cfg.value.product_groups))

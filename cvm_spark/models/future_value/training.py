"""The future-value training set: features as of ``t - H`` and, as label, the income of
the H months after (from the shared facts pass, or built from the inputs).
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.months import add_months, month_end
from cvm_spark.config import FeaturesConfig, FutureValueConfig
from cvm_spark.features.windows import (
    account_attributes,
    account_base,
    aggregates_for,
    features_from_aggregates,
    monthly_aggregates,
    monthly_rows,
    opened_by,
    transaction_aggregates,
    transaction_days,
)
from cvm_spark.models.future_value.model import BASELINE, LABEL
from cvm_spark.schemas.inputs import ACCOUNT_ID


def require_columns(df: DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: column(s) {missing} not found; future_value.features and "
                         f"future_value.cluster_features must name columns of the features "
                         f"table (have: {sorted(df.columns)})")


def feature_values(columns: list[str]) -> list[Column]:
    """Feature columns as doubles with nulls as 0 (documented in docs/future_value.md)."""
    return [F.coalesce(F.col(c).cast("double"), F.lit(0.0)).alias(c) for c in columns]


TRAINING_SUFFIX = "__h"


def label_aggregates(cfg: FutureValueConfig) -> list[Column]:
    """Aggregates over monthly rows with ``k`` (months back from the snapshot ``t``) and
    ``income`` (every month, open or not): the label (income of months ``t-H+1 .. t``) and
    the direct baseline (income of months ``t-2H+1 .. t-H``)."""
    h, k, income = cfg.horizon_months, F.col("k"), F.col("income")
    return [F.sum(F.when((k >= 0) & (k < h), income)).alias("_fv_label"),
            F.sum(F.when((k >= h) & (k < 2 * h), income)).alias("_fv_baseline")]


def training_columns(cfg: FutureValueConfig) -> list[str]:
    """The features columns (as of ``t-H``) the training set reads."""
    return [ACCOUNT_ID, "is_closed", *cfg.input_columns, cfg.baseline_column]


def training_aggregates(cfg: FutureValueConfig, features_cfg: FeaturesConfig,
                        product_lines: list[str]) -> set[str]:
    """The aggregates (as of ``t-H``) :func:`training_from_facts` reads."""
    return aggregates_for(training_columns(cfg), features_cfg, product_lines)


def training_from_facts(facts: DataFrame, snapshot: date, features_cfg: FeaturesConfig,
                        product_lines: list[str], cfg: FutureValueConfig) -> DataFrame:
    """The training set from account facts (``cvm_spark.pipeline.facts``): the features as of
    ``t-H`` (aggregates named with :data:`TRAINING_SUFFIX`) and :func:`label_aggregates`.

    The population is the accounts open at the end of month ``t-H`` (not closed by then).

    Returns:
        ``account_id``, the columns of ``cfg.input_columns`` (doubles, nulls as 0),
        ``label`` (sum of ``monthly_product.income`` over months ``t-H+1 .. t``, 0 without
        rows) and ``baseline`` (income of months ``t-2H+1 .. t-H``: the last H months
        repeated; the feature ``income_<H>m`` when H is a feature window, else the direct
        sum).

    Raises:
        ValueError: a configured feature is not a column of the features table, or
            ``target`` is ``change`` and ``income_<H>m`` is not a feature.
    """
    h = cfg.horizon_months
    as_of = add_months(snapshot, -h)
    features = facts.where(opened_by(as_of)).select(
        *features_from_aggregates(as_of, features_cfg, product_lines, TRAINING_SUFFIX,
                                  columns=training_columns(cfg)),
        "_fv_label", "_fv_baseline")
    columns = cfg.input_columns
    require_columns(features, columns, f"features as of {as_of:%Y-%m}")
    baseline_feature = cfg.baseline_column
    direct_baseline = baseline_feature not in features.columns
    if direct_baseline and cfg.target == "change":
        raise ValueError(f"future_value.target 'change' needs the feature {baseline_feature}: "
                         f"add {h} to features.windows_months or set future_value.target "
                         f"to 'income'")
    baseline = F.col("_fv_baseline") if direct_baseline else F.col(baseline_feature)
    return (features.where(~F.col("is_closed"))
            .select(ACCOUNT_ID, *feature_values(columns),
                    F.coalesce(F.col("_fv_label"), F.lit(0.0)).alias(LABEL),
                    F.coalesce(baseline.cast("double"), F.lit(0.0)).alias(BASELINE)))


def build_training_set(accounts: DataFrame, transactions: DataFrame,
                       monthly_product: DataFrame, snapshot: date,
                       features_cfg: FeaturesConfig, product_lines: list[str],
                       cfg: FutureValueConfig) -> DataFrame:
    """Features as of ``t-H``, the income of ``t-H+1 .. t`` (label) and the naive baseline.

    :func:`training_from_facts` over the account facts of these inputs (the pipeline builds
    the facts once for every model; this computes them for the training set alone).

    Args:
        accounts, transactions, monthly_product: accepted input rows (contract types).
        snapshot: first day of the snapshot month ``t``.
        features_cfg: window settings of the features.
        product_lines: product lines (as for :func:`cvm_spark.features.windows.compute_features`).
        cfg: future-value settings.

    Raises:
        ValueError: see :func:`training_from_facts`.
    """
    as_of = add_months(snapshot, -cfg.horizon_months)
    attributes = account_attributes(accounts, snapshot)
    base = account_base(accounts, snapshot)
    only = training_aggregates(cfg, features_cfg, product_lines)
    txn_aggs = transaction_aggregates(as_of, features_cfg, TRAINING_SUFFIX, only=only)
    mon = (monthly_rows(monthly_product, base, snapshot, product_lines).groupBy(ACCOUNT_ID)
           .agg(*monthly_aggregates(as_of, snapshot, features_cfg, product_lines,
                                    TRAINING_SUFFIX, only=only), *label_aggregates(cfg)))
    facts = attributes.join(mon, on=ACCOUNT_ID, how="left")
    if txn_aggs:
        txn = (transaction_days(transactions, month_end(as_of), features_cfg)
               .groupBy(ACCOUNT_ID).agg(*txn_aggs))
        facts = facts.join(txn, on=ACCOUNT_ID, how="left")
    return training_from_facts(facts, snapshot, features_cfg, product_lines, cfg)

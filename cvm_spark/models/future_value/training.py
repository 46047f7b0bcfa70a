"""The future-value training set: features as of ``t - H`` and, as label, the income of
the H months after (from the shared facts pass, or built from the inputs).
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.months import add_months, month_end
from cvm_spark.config import FeaturesConfig, FutureValueConfig
from cvm_spark.config.future_value import DERIVED, INTERACTION, RATIO
from cvm_spark.features.windows import (
    BTYD_COLUMNS,
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


def model_value(name: str) -> Column:
    """A model column as a double from the features-table columns, nulls as 0: a plain
    column, ``inactive_share_<n>m`` = ``1 - active_months_<n>m / n``,
    ``tenure_under_<n>m`` = 1 when ``tenure_months < n`` else 0, ``<a>_x_<b>`` = a * b or
    ``<a>_over_<b>`` = a / b (0 when b is 0)."""
    if INTERACTION in name:
        left, right = name.split(INTERACTION, 1)
        return model_value(left) * model_value(right)
    if RATIO in name:
        left, right = name.split(RATIO, 1)
        return F.coalesce(F.try_divide(model_value(left), model_value(right)), F.lit(0.0))
    pattern, source = DERIVED["inactive_share"]
    m = pattern.fullmatch(name)
    if m:
        n = int(m.group(1))
        return F.lit(1.0) - feature_values([source.format(n)])[0] / F.lit(float(n))
    pattern, source = DERIVED["tenure_under"]
    m = pattern.fullmatch(name)
    if m:
        tenure = feature_values([source])[0]
        return F.when(tenure < F.lit(float(m.group(1))), F.lit(1.0)).otherwise(F.lit(0.0))
    return feature_values([name])[0]


def model_values(cfg: FutureValueConfig) -> list[Column]:
    """:attr:`FutureValueConfig.model_columns` computed by :func:`model_value`."""
    return [model_value(c).alias(c) for c in cfg.model_columns]


TRAINING_SUFFIX = "__h"


def suffix_for(offset: int, cfg: FutureValueConfig) -> str:
    """Suffix of the aggregates as of ``t - offset`` (:data:`TRAINING_SUFFIX` for H)."""
    return TRAINING_SUFFIX if offset == cfg.horizon_months else f"__m{offset}"


def as_of_offsets(cfg: FutureValueConfig) -> list[int]:
    """Months back of every as-of month the future value reads besides ``t``: ``t-H``
    (training) and, per back-test origin ``T = t-o``, ``T`` (scoring) and ``T-H``
    (training)."""
    h = cfg.horizon_months
    return sorted({h, *[m for o in cfg.backtest_offsets for m in (o, o + h)]})


def next_income(offset: int) -> str:
    """Aggregate holding the income of the H months after ``t - offset``."""
    return f"_fv_next_{offset}"


def label_aggregates(cfg: FutureValueConfig) -> list[Column]:
    """Aggregates over monthly rows with ``k`` (months back from the snapshot ``t``) and
    ``income`` (every month, open or not): for every as-of month ``t-m`` of
    :func:`as_of_offsets` the income of its next H months (``k`` in ``m-H .. m-1``: the
    label, or the realised income of a back-test origin) and of its last H months (``k`` in
    ``m .. m+H-1``: the direct baseline)."""
    h, k, income = cfg.horizon_months, F.col("k"), F.col("income")
    ends = sorted({e for m in as_of_offsets(cfg) for e in (m, m + h)})
    return [F.sum(F.when((k >= e - h) & (k < e), income)).alias(next_income(e)) for e in ends]


def training_columns(cfg: FutureValueConfig) -> list[str]:
    """The features columns (as of ``t-H``) the training set reads (with the BTYD summary
    when ``btyd_spend`` is a candidate: the back-test fits it as of each origin)."""
    btyd = BTYD_COLUMNS if "btyd_spend" in cfg.candidates else []
    return [ACCOUNT_ID, "is_closed", *cfg.input_columns, cfg.baseline_column, *btyd]


def training_aggregates(cfg: FutureValueConfig, features_cfg: FeaturesConfig,
                        product_lines: list[str]) -> set[str]:
    """The aggregates (as of ``t-H``) :func:`training_from_facts` reads."""
    return aggregates_for(training_columns(cfg), features_cfg, product_lines)


def as_of_aggregates(snapshot: date, features_cfg: FeaturesConfig, product_lines: list[str],
                     cfg: FutureValueConfig) -> tuple[list[Column], list[Column]]:
    """(transaction, monthly) aggregates of every as-of month of :func:`as_of_offsets`, named
    with :func:`suffix_for`: only those the training and back-test frames read."""
    only = training_aggregates(cfg, features_cfg, product_lines)
    txn: list[Column] = []
    mon: list[Column] = []
    for m in as_of_offsets(cfg):
        as_of, suffix = add_months(snapshot, -m), suffix_for(m, cfg)
        txn += transaction_aggregates(as_of, features_cfg, suffix, only=only)
        mon += monthly_aggregates(as_of, snapshot, features_cfg, product_lines, suffix,
                                  only=only)
    return txn, mon


def training_from_facts(facts: DataFrame, snapshot: date, features_cfg: FeaturesConfig,
                        product_lines: list[str], cfg: FutureValueConfig,
                        offset: int | None = None) -> DataFrame:
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
    m = h if offset is None else offset
    as_of = add_months(snapshot, -m)
    features = facts.where(opened_by(as_of)).select(
        *features_from_aggregates(as_of, features_cfg, product_lines, suffix_for(m, cfg),
                                  columns=training_columns(cfg)),
        F.col(next_income(m)).alias("_fv_label"), F.col(next_income(m + h)).alias("_fv_baseline"))
    columns = cfg.input_columns
    require_columns(features, columns, f"features as of {as_of:%Y-%m}")
    baseline_feature = cfg.baseline_column
    direct_baseline = baseline_feature not in features.columns
    if direct_baseline and cfg.target == "change":
        raise ValueError(f"future_value.target 'change' needs the feature {baseline_feature}: "
                         f"add {h} to features.windows_months or set future_value.target "
                         f"to 'income'")
    baseline = F.col("_fv_baseline") if direct_baseline else F.col(baseline_feature)
    btyd = [c for c in BTYD_COLUMNS if c in features.columns]
    return (features.where(~F.col("is_closed"))
            .select(ACCOUNT_ID, *model_values(cfg), *btyd,
                    F.coalesce(F.col("_fv_label"), F.lit(0.0)).alias(LABEL),
                    F.coalesce(baseline.cast("double"), F.lit(0.0)).alias(BASELINE)))


def build_facts(accounts: DataFrame, transactions: DataFrame, monthly_product: DataFrame,
                snapshot: date, features_cfg: FeaturesConfig, product_lines: list[str],
                cfg: FutureValueConfig) -> DataFrame:
    """The account facts the future value reads (every as-of month of
    :func:`as_of_offsets` and :func:`label_aggregates`), from the inputs: what the
    pipeline's facts pass computes for every model, for the future value alone."""
    attributes = account_attributes(accounts, snapshot)
    base = account_base(accounts, snapshot)
    txn_aggs, mon_aggs = as_of_aggregates(snapshot, features_cfg, product_lines, cfg)
    mon = (monthly_rows(monthly_product, base, snapshot, product_lines).groupBy(ACCOUNT_ID)
           .agg(*mon_aggs, *label_aggregates(cfg)))
    facts = attributes.join(mon, on=ACCOUNT_ID, how="left")
    if txn_aggs:
        end = month_end(add_months(snapshot, -min(as_of_offsets(cfg))))
        txn = (transaction_days(transactions, end, features_cfg)
               .groupBy(ACCOUNT_ID).agg(*txn_aggs))
        facts = facts.join(txn, on=ACCOUNT_ID, how="left")
    return facts


def build_training_set(accounts: DataFrame, transactions: DataFrame,
                       monthly_product: DataFrame, snapshot: date,
                       features_cfg: FeaturesConfig, product_lines: list[str],
                       cfg: FutureValueConfig) -> DataFrame:
    """Features as of ``t-H``, the income of ``t-H+1 .. t`` (label) and the naive baseline.

    :func:`training_from_facts` over :func:`build_facts` of these inputs (the pipeline builds
    the facts once for every model).

    Args:
        accounts, transactions, monthly_product: accepted input rows (contract types).
        snapshot: first day of the snapshot month ``t``.
        features_cfg: window settings of the features.
        product_lines: product lines (as for :func:`cvm_spark.features.windows.compute_features`).
        cfg: future-value settings.

    Raises:
        ValueError: see :func:`training_from_facts`.
    """
    facts = build_facts(accounts, transactions, monthly_product, snapshot, features_cfg,
                        product_lines, cfg)
    return training_from_facts(facts, snapshot, features_cfg, product_lines, cfg)

"""Window features per account for one snapshot month (spec section 2).

Conventions (docs/features.md has the formulas):

* The snapshot month ``S`` is the first day of a month; features are as of its last day.
* A window of N months covers the calendar months ``S - (N-1) .. S``: a transaction on the
  first day of month ``S - (N-1)`` is inside, one on the last day of the month before is not.
* ``k`` is "months back" from ``S`` (0 = the snapshot month).
* An account is open in month k back when it was opened in or before that month and not
  closed before it. ARPU and average balances divide by the months open in the window.

Every input table is aggregated in one pass: transactions are first summed per account and
day, then all windows are computed with conditional aggregates in a single ``groupBy``;
monthly facts are summed per account and month, then all windows in a single ``groupBy``.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.config import FeaturesConfig
from cvm_spark.schemas import ACCOUNT_ID, SNAPSHOT_MONTH
from cvm_spark.validate import _month_end

BTYD_COLUMNS = ["btyd_frequency", "btyd_recency", "btyd_t", "btyd_monetary"]


def months_back(month: Column, snapshot: date) -> Column:
    """Whole calendar months from ``month`` (any date in it) back to the snapshot month."""
    s = F.lit(snapshot)
    return (F.year(s) - F.year(month)) * 12 + (F.month(s) - F.month(month))


def account_base(accounts: DataFrame, snapshot: date) -> DataFrame:
    """Accounts open by the snapshot month end, with tenure and open-month indices.

    ``_k_open`` is months back of the opening month; ``_k_close`` months back of the
    closing month (-1 when open, or closed after the snapshot). The account counts as open
    in every month k with ``_k_close <= k <= _k_open`` (its opening and closing months
    included).
    """
    end = _month_end(snapshot)
    closed = F.col("close_date").isNotNull() & (F.col("close_date") <= F.lit(end))
    return accounts.where(F.col("open_date") <= F.lit(end)).select(
        ACCOUNT_ID, "customer_type", "region", "acquisition_channel", "open_date",
        F.when(closed, F.col("close_date")).alias("close_date"),
        closed.alias("is_closed"),
        F.greatest(F.floor(F.months_between(
            F.when(closed, F.col("close_date")).otherwise(F.lit(end)), F.col("open_date"))),
            F.lit(0))
        .cast("int").alias("tenure_months"),
        months_back(F.col("open_date"), snapshot).alias("_k_open"),
        F.when(closed, months_back(F.col("close_date"), snapshot)).otherwise(F.lit(-1))
        .alias("_k_close"),
    )


def transaction_features(transactions: DataFrame, snapshot: date, cfg: FeaturesConfig,
                         observation_end: date | None = None) -> DataFrame:
    """Recency, frequency, monetary, activity and BTYD summary per account (one pass).

    Args:
        transactions: accepted transactions.
        snapshot: first day of the snapshot month (windows are counted back from it).
        cfg: window settings.
        observation_end: last day observed; defaults to the snapshot month end. Later
            transactions are ignored. Recency and BTYD ``T`` are measured to this day.

    BTYD columns follow the lifetimes convention with daily periods over purchase
    transactions only (direction in ``cfg.purchase_directions``; salary and transfers
    received are not purchases); they are null for accounts without a purchase.
    """
    end = observation_end or _month_end(snapshot)
    daily = (transactions
             .select(ACCOUNT_ID, F.to_date("txn_ts").alias("d"), "amount",
                     F.col("direction").isin(cfg.purchase_directions).alias("purchase"))
             .where(F.col("d") <= F.lit(end))
             .groupBy(ACCOUNT_ID, "d")
             .agg(F.count(F.lit(1)).alias("n"), F.sum("amount").alias("amt"),
                  F.sum(F.when(F.col("purchase"), F.col("amount"))).alias("pamt")))
    k = months_back(F.col("d"), snapshot)
    windows = []
    for w in cfg.windows:
        inside = k < w
        windows += [
            F.sum(F.when(inside, F.col("n")).otherwise(0)).alias(f"frequency_{w}m"),
            F.sum(F.when(inside, F.col("amt")).otherwise(0.0)).alias(f"monetary_{w}m"),
        ]
    active_bits = F.bit_or(F.when(k < cfg.active_months, F.pow(F.lit(2.0), k).cast("long")))
    agg = daily.groupBy(ACCOUNT_ID).agg(
        *windows,
        F.max("d").alias("last_txn_date"),
        F.min("d").alias("first_txn_date"),
        F.bit_count(F.coalesce(active_bits, F.lit(0).cast("long"))).cast("int")
        .alias("_active_months"),
        # BTYD: purchase days only (features.purchase_directions)
        F.count(F.col("pamt")).alias("_days"),
        F.sum("pamt").alias("_amt_all"),
        F.min_by("pamt", F.when(F.col("pamt").isNotNull(), F.col("d"))).alias("_amt_first_day"),
        F.min(F.when(F.col("pamt").isNotNull(), F.col("d"))).alias("_first_purchase"),
        F.max(F.when(F.col("pamt").isNotNull(), F.col("d"))).alias("_last_purchase"),
    )
    repeat_days = F.when(F.col("_days") > 0, F.col("_days") - 1)
    return agg.select(
        ACCOUNT_ID,
        *[F.col(f"{m}_{w}m") for w in cfg.windows for m in ("frequency", "monetary")],
        "last_txn_date", "first_txn_date", "_active_months",
        repeat_days.cast("double").alias("btyd_frequency"),
        F.datediff("_last_purchase", "_first_purchase").cast("double").alias("btyd_recency"),
        F.datediff(F.lit(end), "_first_purchase").cast("double").alias("btyd_t"),
        F.when(repeat_days > 0, (F.col("_amt_all") - F.col("_amt_first_day")) / repeat_days)
        .when(repeat_days == 0, F.lit(0.0)).alias("btyd_monetary"),
    )


def monthly_features(monthly_product: DataFrame, base: DataFrame, snapshot: date,
                     cfg: FeaturesConfig, product_lines: list[str]) -> DataFrame:
    """Income, cost, profit, balances per product line, trend and volatility (one pass).

    Only months in which the account was open count (rows outside are ignored).
    """
    lookback = cfg.lookback_months
    monthly = (monthly_product
               .where(F.col("month").between(F.add_months(F.lit(snapshot), -(lookback - 1)),
                                             F.lit(snapshot)))
               .groupBy(ACCOUNT_ID, "month")
               .agg(F.sum("income").alias("income"), F.sum("cost").alias("cost"),
                    *[F.sum(F.when(F.col("product_line") == pl, F.col("avg_balance")))
                      .alias(f"bal_{pl}") for pl in product_lines],
                    F.count(F.when((F.col("avg_balance") > 0) | (F.col("income") > 0), 1))
                    .alias("held")))
    k = months_back(F.col("month"), snapshot)
    open_months = base.select(ACCOUNT_ID, "_k_open", "_k_close")
    rows = (monthly.join(open_months, on=ACCOUNT_ID, how="inner")
            .select("*", k.alias("k"))
            .where((F.col("k") <= F.col("_k_open")) & (F.col("k") >= F.col("_k_close"))))

    def window_sum(value: Column, months: int) -> Column:
        return F.sum(F.when(F.col("k") < months, value).otherwise(F.lit(0.0)))

    aggs = []
    for w in cfg.windows:
        aggs += [window_sum(F.col("income"), w).alias(f"income_{w}m"),
                 window_sum(F.col("cost"), w).alias(f"cost_{w}m")]
        aggs += [window_sum(F.coalesce(F.col(f"bal_{pl}"), F.lit(0.0)), w)
                 .alias(f"_balsum_{pl}_{w}m") for pl in product_lines]
    tm, vm = cfg.trend_months, cfg.volatility_months
    aggs += [
        window_sum(F.col("income"), tm).alias("_ty"),
        window_sum(F.col("k") * F.col("income"), tm).alias("_tky"),
        window_sum(F.col("income"), vm).alias("_vy"),
        window_sum(F.col("income") * F.col("income"), vm).alias("_vyy"),
        F.sum(F.when(F.col("k") == 0, F.col("held")).otherwise(0)).alias("product_count"),
    ]
    return rows.groupBy(ACCOUNT_ID).agg(*aggs)


def _sum_k(lo: Column, hi: Column) -> Column:
    """Sum of the integers lo..hi (0 when hi < lo)."""
    return F.when(hi >= lo, (lo + hi) * (hi - lo + 1) / 2).otherwise(F.lit(0))


def _sum_k2(lo: Column, hi: Column) -> Column:
    """Sum of k^2 for k = lo..hi (0 when hi < lo), lo >= 0."""
    def upto(n: Column) -> Column:
        return n * (n + 1) * (2 * n + 1) / 6

    return F.when(hi >= lo, upto(hi) - upto(lo - 1)).otherwise(F.lit(0))


def compute_features(accounts: DataFrame, transactions: DataFrame, monthly_product: DataFrame,
                     snapshot: date, cfg: FeaturesConfig,
                     product_lines: list[str]) -> DataFrame:
    """All window features for one snapshot, one row per account open by the month end.

    Args:
        accounts, transactions, monthly_product: accepted input rows (contract types).
        snapshot: first day of the snapshot month.
        cfg: window settings.
        product_lines: product lines to report balances for.

    Returns:
        The features table's columns (plus the BTYD summary columns, see BTYD_COLUMNS).
    """
    base = account_base(accounts, snapshot)
    txn = transaction_features(transactions, snapshot, cfg)
    mon = monthly_features(monthly_product, base, snapshot, cfg, product_lines)
    end = _month_end(snapshot)
    joined = base.join(txn, on=ACCOUNT_ID, how="left").join(mon, on=ACCOUNT_ID, how="left")

    def zero(name: str) -> Column:
        return F.coalesce(F.col(name), F.lit(0.0))

    cols: list[Column] = [
        F.lit(snapshot).alias(SNAPSHOT_MONTH), F.col(ACCOUNT_ID), "customer_type", "region",
        "acquisition_channel", "open_date", "close_date", "is_closed", "tenure_months",
        F.datediff(F.lit(end), F.col("last_txn_date")).alias("recency_days"),
        "last_txn_date",
        F.coalesce(F.col("_active_months"), F.lit(0)).alias(f"active_months_{cfg.active_months}m"),
    ]
    for w in cfg.windows:
        months_open = _open_range(w)[2]
        cols += [
            months_open.alias(f"months_open_{w}m"),
            F.coalesce(F.col(f"frequency_{w}m"), F.lit(0)).cast("long").alias(f"frequency_{w}m"),
            zero(f"monetary_{w}m").alias(f"monetary_{w}m"),
            F.try_divide(F.col(f"monetary_{w}m"), F.col(f"frequency_{w}m"))
            .alias(f"avg_ticket_{w}m"),
            zero(f"income_{w}m").alias(f"income_{w}m"),
            zero(f"cost_{w}m").alias(f"cost_{w}m"),
            (zero(f"income_{w}m") - zero(f"cost_{w}m")).alias(f"profit_{w}m"),
            F.when(months_open > 0, zero(f"income_{w}m") / months_open)
            .alias(f"arpu_{w}m"),
        ]
        cols += [F.when(months_open > 0, zero(f"_balsum_{pl}_{w}m") / months_open)
                 .alias(f"avg_balance_{pl}_{w}m") for pl in product_lines]
    cols += [
        F.coalesce(F.col("product_count"), F.lit(0)).cast("int").alias("product_count"),
        _trend(cfg.trend_months).alias(f"income_trend_{cfg.trend_months}m"),
        _volatility(cfg.volatility_months).alias(f"income_volatility_{cfg.volatility_months}m"),
        *[F.col(c) for c in BTYD_COLUMNS],
    ]
    return joined.select(*cols)


def _open_range(window: int) -> tuple[Column, Column, Column]:
    """(lo, hi, n): the months-back range the account was open in the last ``window``."""
    lo = F.greatest(F.col("_k_close"), F.lit(0))
    hi = F.least(F.col("_k_open"), F.lit(window - 1))
    return lo, hi, F.greatest(hi - lo + 1, F.lit(0))


def _trend(months: int) -> Column:
    """OLS slope of monthly income against time over the months open in the window.

    With x = -k (time runs forward as k falls), slope = (n*Sxy - Sx*Sy) / (n*Sxx - Sx^2);
    missing months inside the open range count as zero income.
    """
    lo, hi, n = _open_range(months)
    sy = F.coalesce(F.col("_ty"), F.lit(0.0))
    sxy = -F.coalesce(F.col("_tky"), F.lit(0.0))
    sx = -_sum_k(lo, hi)
    sxx = _sum_k2(lo, hi)
    denom = n * sxx - sx * sx
    return F.when(n >= 2, (n * sxy - sx * sy) / denom)


def _volatility(months: int) -> Column:
    """Coefficient of variation of monthly income over the months open in the window."""
    _, _, n = _open_range(months)
    sy = F.coalesce(F.col("_vy"), F.lit(0.0))
    syy = F.coalesce(F.col("_vyy"), F.lit(0.0))
    mean = sy / n
    var = F.greatest(syy / n - mean * mean, F.lit(0.0))
    return F.when((n >= 2) & (mean > 0), F.sqrt(var) / mean)

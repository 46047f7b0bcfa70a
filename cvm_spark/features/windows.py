"""Window features per account for one snapshot month (spec section 2).

Conventions (docs/features.md has the formulas):

* The snapshot month ``S`` is the first day of a month; features are as of its last day.
* A window of N months covers the calendar months ``S - (N-1) .. S``: a transaction on the
  first day of month ``S - (N-1)`` is inside, one on the last day of the month before is not.
* ``k`` is "months back" from ``S`` (0 = the snapshot month).
* An account is open in month k back when it was opened in or before that month and not
  closed before it. ARPU and average balances divide by the months open in the window.

How the work is done (one pass per input table, whatever the number of as-of months):

* Transactions are summed per account and day (:func:`transaction_days`), then every window
  is a conditional aggregate in one ``groupBy(account_id)``
  (:func:`transaction_aggregates`).
* Monthly facts are summed per account and month, with the month's index ``k`` and whether
  the account was open in it (:func:`monthly_rows`), then every window is a conditional
  aggregate in one ``groupBy(account_id)`` (:func:`monthly_aggregates`).
* The aggregates are named with a suffix per as-of month, so the snapshot's features and
  those of an earlier month (the future-value training set, ``t - H``) come from the same
  pass (``cvm_spark.pipeline.facts``); :func:`features_from_aggregates` turns them into the features
  table's columns for one as-of month. :func:`compute_features` does all three for one.
"""

from __future__ import annotations

import re
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.months import month_end, months_back, months_between
from cvm_spark.config import FeaturesConfig
from cvm_spark.features.trend import income_trend, income_volatility, open_range
from cvm_spark.schemas.inputs import ACCOUNT_ID, SNAPSHOT_MONTH

BTYD_COLUMNS = ["btyd_frequency", "btyd_recency", "btyd_t", "btyd_monetary"]
# the account attributes carried from the accounts table
ACCOUNT_COLUMNS = ["customer_type", "region", "acquisition_channel", "open_date",
                   "close_date_raw"]


# --------------------------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------------------------


def _closed_by(as_of: date, close_date: Column) -> Column:
    return close_date.isNotNull() & (close_date <= F.lit(month_end(as_of)))


def account_columns(as_of: date, open_date: Column, close_date: Column) -> dict[str, Column]:
    """The account's state at the end of ``as_of`` from its open and close dates.

    ``_k_open`` is months back of the opening month; ``_k_close`` months back of the
    closing month (-1 when open, or closed after the month). The account counts as open
    in every month k with ``_k_close <= k <= _k_open`` (its opening and closing months
    included).
    """
    end = month_end(as_of)
    closed = _closed_by(as_of, close_date)
    return {
        "close_date": F.when(closed, close_date),
        "is_closed": closed,
        "tenure_months": F.greatest(F.floor(F.months_between(
            F.when(closed, close_date).otherwise(F.lit(end)), open_date)), F.lit(0))
        .cast("int"),
        "_k_open": months_back(open_date, as_of),
        "_k_close": F.when(closed, months_back(close_date, as_of)).otherwise(F.lit(-1)),
    }


def account_base(accounts: DataFrame, snapshot: date) -> DataFrame:
    """Accounts open by the snapshot month end, with tenure and open-month indices
    (see :func:`account_columns`)."""
    cols = account_columns(snapshot, F.col("open_date"), F.col("close_date"))
    return accounts.where(F.col("open_date") <= F.lit(month_end(snapshot))).select(
        ACCOUNT_ID, "customer_type", "region", "acquisition_channel", "open_date",
        *[c.alias(name) for name, c in cols.items()])


# --------------------------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------------------------


def transaction_days(transactions: DataFrame, end: date, cfg: FeaturesConfig) -> DataFrame:
    """Transactions summed per account and day up to ``end``: ``n``, ``amt`` and ``pamt``
    (purchase amount, null on days without a purchase; ``cfg.purchase_directions``)."""
    return (transactions
            .select(ACCOUNT_ID, F.to_date("txn_ts").alias("d"), "amount",
                    F.col("direction").isin(cfg.purchase_directions).alias("purchase"))
            .where(F.col("d") <= F.lit(end))
            .groupBy(ACCOUNT_ID, "d")
            .agg(F.count(F.lit(1)).alias("n"), F.sum("amount").alias("amt"),
                 F.sum(F.when(F.col("purchase"), F.col("amount"))).alias("pamt")))


def transaction_aggregates(as_of: date, cfg: FeaturesConfig, suffix: str = "",
                           observation_end: date | None = None,
                           only: set[str] | None = None) -> list[Column]:
    """Aggregates over :func:`transaction_days` rows for the windows ending at ``as_of``.

    Days after ``observation_end`` (default: the month end) are ignored, so one pass can
    serve several as-of months. Names end in ``suffix``; ``only`` keeps the named ones
    (:func:`aggregates_for`).
    """
    end = observation_end or month_end(as_of)
    seen = F.col("d") <= F.lit(end)
    k = months_back(F.col("d"), as_of)
    out: dict[str, Column] = {}
    for w in cfg.windows:
        inside = seen & (k < w)
        out[f"frequency_{w}m"] = F.sum(F.when(inside, F.col("n")).otherwise(0))
        out[f"monetary_{w}m"] = F.sum(F.when(inside, F.col("amt")).otherwise(0.0))
    active_bits = F.bit_or(F.when(seen & (k < cfg.active_months),
                                  F.pow(F.lit(2.0), k).cast("long")))
    purchase_day = F.when(seen & F.col("pamt").isNotNull(), F.col("d"))
    out |= {
        "last_txn_date": F.max(F.when(seen, F.col("d"))),
        "first_txn_date": F.min(F.when(seen, F.col("d"))),
        "_active_months": F.bit_count(F.coalesce(active_bits, F.lit(0).cast("long")))
        .cast("int"),
        # BTYD: purchase days only (features.purchase_directions)
        "_days": F.count(F.when(seen, F.col("pamt"))),
        "_amt_all": F.sum(F.when(seen, F.col("pamt"))),
        "_amt_first_day": F.min_by("pamt", purchase_day),
        "_first_purchase": F.min(purchase_day),
        "_last_purchase": F.max(purchase_day),
    }
    return [c.alias(f"{name}{suffix}") for name, c in out.items()
            if only is None or name in only]


def aggregates_for(columns: list[str], cfg: FeaturesConfig, product_lines: list[str]
                   ) -> set[str]:
    """The aggregates (:func:`transaction_aggregates`, :func:`monthly_aggregates`) that the
    given features columns read; columns computed from the account alone need none."""
    needed: set[str] = set()
    btyd = {"_days", "_amt_all", "_amt_first_day", "_first_purchase", "_last_purchase"}
    for col in columns:
        m = re.fullmatch(r"(frequency|monetary|avg_ticket|income|cost|profit|arpu)_(\d+)m",
                         col)
        if m:
            kind, w = m.group(1), m.group(2)
            needed |= ({f"frequency_{w}m", f"monetary_{w}m"}
                       if kind in ("frequency", "monetary", "avg_ticket")
                       else {f"income_{w}m"} if kind in ("income", "arpu")
                       else {f"cost_{w}m"} if kind == "cost"
                       else {f"income_{w}m", f"cost_{w}m"})
            continue
        m = re.fullmatch(r"avg_balance_(.+)_(\d+)m", col)
        if m and m.group(1) in product_lines:
            needed.add(f"_balsum_{m.group(1)}_{m.group(2)}m")
        elif col in ("recency_days", "last_txn_date"):
            needed.add("last_txn_date")
        elif col == f"active_months_{cfg.active_months}m":
            needed.add("_active_months")
        elif col == "product_count":
            needed.add("product_count")
        elif col == f"income_trend_{cfg.trend_months}m":
            needed |= {"_ty", "_tky"}
        elif col == f"income_volatility_{cfg.volatility_months}m":
            needed |= {"_vy", "_vyy"}
        elif col in BTYD_COLUMNS:
            needed |= btyd
    return needed


def btyd_columns(end: date, suffix: str = "") -> list[Column]:
    """The BTYD summary (lifetimes' convention, daily periods) from the aggregates."""
    def c(name: str) -> Column:
        return F.col(f"{name}{suffix}")

    repeat_days = F.when(c("_days") > 0, c("_days") - 1)
    return [
        repeat_days.cast("double").alias("btyd_frequency"),
        F.datediff(c("_last_purchase"), c("_first_purchase")).cast("double")
        .alias("btyd_recency"),
        F.datediff(F.lit(end), c("_first_purchase")).cast("double").alias("btyd_t"),
        F.when(repeat_days > 0, (c("_amt_all") - c("_amt_first_day")) / repeat_days)
        .when(repeat_days == 0, F.lit(0.0)).alias("btyd_monetary"),
    ]


def transaction_features(transactions: DataFrame, snapshot: date, cfg: FeaturesConfig,
                         observation_end: date | None = None) -> DataFrame:
    """Recency, frequency, monetary, activity and BTYD summary per account (one pass).

    Args:
        transactions: accepted transactions.
        snapshot: first day of the snapshot month (windows are counted back from it).
        cfg: window settings.
        observation_end: last day observed; defaults to the snapshot month end. Later
            transactions are ignored. BTYD ``T`` is measured to this day.

    BTYD columns follow the lifetimes convention with daily periods over purchase
    transactions only (direction in ``cfg.purchase_directions``; salary and transfers
    received are not purchases); they are null for accounts without a purchase.
    """
    end = observation_end or month_end(snapshot)
    agg = transaction_days(transactions, end, cfg).groupBy(ACCOUNT_ID).agg(
        *transaction_aggregates(snapshot, cfg, observation_end=end))
    return agg.select(
        ACCOUNT_ID,
        *[F.col(f"{m}_{w}m") for w in cfg.windows for m in ("frequency", "monetary")],
        "last_txn_date", "first_txn_date", "_active_months", *btyd_columns(end))


# --------------------------------------------------------------------------------------------
# Monthly facts
# --------------------------------------------------------------------------------------------


def monthly_rows(monthly_product: DataFrame, base: DataFrame, snapshot: date,
                 product_lines: list[str], product_groups: dict[str, list[str]] | None = None
                 ) -> DataFrame:
    """Monthly facts summed per account and month, with ``k`` (months back from
    ``snapshot``) and ``open`` (the account was open in that month, see
    :func:`account_columns`).

    Columns: account_id, month, k, open, income, cost, profit, ``bal_<line>`` (null when
    the account has no row of that line that month), ``held`` (lines with a balance or
    income) and, with ``product_groups``, ``profit_<group>`` and ``income_<group>`` (null
    without a row of the group). Only accounts of ``base`` (with ``_k_open``, ``_k_close``)
    are kept.
    """
    aggs = [F.sum("income").alias("income"), F.sum("cost").alias("cost"),
            F.sum(F.col("income") - F.col("cost")).alias("profit"),
            *[F.sum(F.when(F.col("product_line") == pl, F.col("avg_balance")))
              .alias(f"bal_{pl}") for pl in product_lines],
            F.count(F.when((F.col("avg_balance") > 0) | (F.col("income") > 0), 1))
            .alias("held")]
    for group, lines in (product_groups or {}).items():
        in_group = F.col("product_line").isin(lines)
        aggs += [F.sum(F.when(in_group, F.col("income") - F.col("cost"))).alias(f"profit_{group}"),
                 F.sum(F.when(in_group, F.col("income"))).alias(f"income_{group}")]
    monthly = monthly_product.groupBy(ACCOUNT_ID, "month").agg(*aggs)
    k = months_back(F.col("month"), snapshot)
    return (monthly.join(base.select(ACCOUNT_ID, "_k_open", "_k_close"), on=ACCOUNT_ID,
                         how="inner")
            .select(*monthly.columns, k.alias("k"),
                    ((k <= F.col("_k_open")) & (k >= F.col("_k_close"))).alias("open"))
            .where(F.col("k") >= 0))


def monthly_aggregates(as_of: date, snapshot: date, cfg: FeaturesConfig,
                       product_lines: list[str], suffix: str = "",
                       only: set[str] | None = None) -> list[Column]:
    """Aggregates over :func:`monthly_rows` (indexed from ``snapshot``) for the windows
    ending at ``as_of`` (``as_of <= snapshot``): months the account was open only. Names end
    in ``suffix``; ``only`` keeps the named ones (:func:`aggregates_for`)."""
    shift = months_between(snapshot, as_of)
    k = F.col("k") - shift
    used = F.col("open") & (k >= 0) & (k < cfg.lookback_months)

    def window_sum(value: Column, months: int) -> Column:
        return F.sum(F.when(used & (k < months), value).otherwise(F.lit(0.0)))

    out: dict[str, Column] = {}
    for w in cfg.windows:
        out[f"income_{w}m"] = window_sum(F.col("income"), w)
        out[f"cost_{w}m"] = window_sum(F.col("cost"), w)
        for pl in product_lines:
            out[f"_balsum_{pl}_{w}m"] = window_sum(F.coalesce(F.col(f"bal_{pl}"), F.lit(0.0)), w)
    tm, vm = cfg.trend_months, cfg.volatility_months
    out |= {
        "_ty": window_sum(F.col("income"), tm),
        "_tky": window_sum(k * F.col("income"), tm),
        "_vy": window_sum(F.col("income"), vm),
        "_vyy": window_sum(F.col("income") * F.col("income"), vm),
        "product_count": F.sum(F.when(used & (k == 0), F.col("held")).otherwise(0)),
    }
    return [c.alias(f"{name}{suffix}") for name, c in out.items()
            if only is None or name in only]


# --------------------------------------------------------------------------------------------
# The features table
# --------------------------------------------------------------------------------------------


def features_from_aggregates(as_of: date, cfg: FeaturesConfig, product_lines: list[str],
                             suffix: str = "", columns: list[str] | None = None
                             ) -> list[Column]:
    """The features table's columns (plus :data:`BTYD_COLUMNS`) for ``as_of``, over a row
    with account_id, the account attributes (``open_date``, ``close_date_raw``, ...) and the
    aggregates of :func:`transaction_aggregates` and :func:`monthly_aggregates` named with
    ``suffix`` (null when the account had no rows). Keep the accounts opened by the end of
    ``as_of`` (:func:`opened_by`). ``columns`` keeps the named ones (the row needs only their
    :func:`aggregates_for`)."""
    end = month_end(as_of)
    state = account_columns(as_of, F.col("open_date"), F.col("close_date_raw"))

    def agg(name: str) -> Column:
        return F.col(f"{name}{suffix}")

    def zero(name: str) -> Column:
        return F.coalesce(agg(name), F.lit(0.0))

    cols: dict[str, Column] = {
        SNAPSHOT_MONTH: F.lit(as_of), ACCOUNT_ID: F.col(ACCOUNT_ID),
        **{c: F.col(c) for c in ("customer_type", "region", "acquisition_channel",
                                 "open_date")},
        "close_date": state["close_date"], "is_closed": state["is_closed"],
        "tenure_months": state["tenure_months"],
        "recency_days": F.datediff(F.lit(end), agg("last_txn_date")),
        "last_txn_date": agg("last_txn_date"),
        f"active_months_{cfg.active_months}m": F.coalesce(agg("_active_months"), F.lit(0)),
    }
    k_open, k_close = state["_k_open"], state["_k_close"]
    for w in cfg.windows:
        months_open = open_range(w, k_open, k_close)[2]
        cols |= {
            f"months_open_{w}m": months_open,
            f"frequency_{w}m": F.coalesce(agg(f"frequency_{w}m"), F.lit(0)).cast("long"),
            f"monetary_{w}m": zero(f"monetary_{w}m"),
            f"avg_ticket_{w}m": F.try_divide(agg(f"monetary_{w}m"), agg(f"frequency_{w}m")),
            f"income_{w}m": zero(f"income_{w}m"),
            f"cost_{w}m": zero(f"cost_{w}m"),
            f"profit_{w}m": zero(f"income_{w}m") - zero(f"cost_{w}m"),
            f"arpu_{w}m": F.when(months_open > 0, zero(f"income_{w}m") / months_open),
        }
        cols |= {f"avg_balance_{pl}_{w}m": F.when(months_open > 0,
                                                  zero(f"_balsum_{pl}_{w}m") / months_open)
                 for pl in product_lines}
    cols |= {
        "product_count": F.coalesce(agg("product_count"), F.lit(0)).cast("int"),
        f"income_trend_{cfg.trend_months}m": income_trend(cfg.trend_months, k_open, k_close,
                                                          suffix),
        f"income_volatility_{cfg.volatility_months}m": income_volatility(
            cfg.volatility_months, k_open, k_close, suffix),
    }
    wanted = set(columns) if columns is not None else None
    out = [c.alias(name) for name, c in cols.items() if wanted is None or name in wanted]
    if wanted is None or wanted & set(BTYD_COLUMNS):
        btyd = btyd_columns(end, suffix)
        out += [c for name, c in zip(BTYD_COLUMNS, btyd, strict=True)
                if wanted is None or name in wanted]
    return out


def opened_by(as_of: date) -> Column:
    """Accounts opened by the end of ``as_of`` (the rows of its features table)."""
    return F.col("open_date") <= F.lit(month_end(as_of))


def account_attributes(accounts: DataFrame, snapshot: date) -> DataFrame:
    """The accounts opened by the snapshot month end with the attributes the features carry
    (:data:`ACCOUNT_COLUMNS`; ``close_date_raw`` is the close date as given)."""
    return accounts.where(opened_by(snapshot)).select(
        ACCOUNT_ID, "customer_type", "region", "acquisition_channel", "open_date",
        F.col("close_date").alias("close_date_raw"))


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
    end = month_end(snapshot)
    attributes = account_attributes(accounts, snapshot)
    base = account_base(accounts, snapshot)
    txn = transaction_days(transactions, end, cfg).groupBy(ACCOUNT_ID).agg(
        *transaction_aggregates(snapshot, cfg))
    mon = monthly_rows(monthly_product, base, snapshot, product_lines).groupBy(ACCOUNT_ID).agg(
        *monthly_aggregates(snapshot, snapshot, cfg, product_lines))
    joined = attributes.join(txn, on=ACCOUNT_ID, how="left").join(mon, on=ACCOUNT_ID,
                                                                  how="left")
    return joined.select(*features_from_aggregates(snapshot, cfg, product_lines))















"""Value components (spec section 4): current, historical, influence and contribution value.

Formulas and defaults are in docs/model.md. Conventions follow features.py: ``S`` is the
snapshot month, ``k`` months back from it, the current window is ``k < C``
(``value.current_months``), and months count only while the account is open.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.config import ValueConfig
from cvm_spark.cuts import CutPoints, bucketize
from cvm_spark.features import months_back
from cvm_spark.schemas import ACCOUNT_ID
from cvm_spark.validate import _month_end


def decay_weight(months_before: Column, decay: float) -> Column:
    """Weight of a month ``months_before`` (>= 1) months before the current window starts.

    Months 1..12 before the window are 1 year back (k = 0) and weigh ``q^1``; months 13..24
    weigh ``q^2``, and so on: ``q^(floor((m - 1) / 12) + 1)``.
    """
    return F.pow(F.lit(decay), F.floor((months_before - 1) / 12) + 1)


def _decay_prefix(months: Column, decay: float) -> Column:
    """Sum of decay weights for months_before = 1..``months`` (0 when ``months`` <= 0).

    Closed form of :func:`decay_weight` summed: ``Y = floor(M / 12)`` whole years weigh
    ``12 * (q + q^2 + ... + q^Y)`` and the ``M mod 12`` months left weigh ``q^(Y+1)`` each.
    """
    m = F.greatest(months, F.lit(0))
    years = F.floor(m / 12)
    rest = m - years * 12
    q = F.lit(decay)
    whole = (years * q) if decay == 1.0 else q * (1 - F.pow(q, years)) / (1 - q)
    return F.lit(12.0) * whole + rest * F.pow(q, years + 1)


def _decay_sum(first: Column, last: Column, decay: float) -> Column:
    """Sum of decay weights for months_before = first..last (0 when last < first)."""
    return F.when(last >= first,
                  _decay_prefix(last, decay) - _decay_prefix(first - 1, decay)
                  ).otherwise(F.lit(0.0))


def current_and_historical(monthly_product: DataFrame, base: DataFrame, snapshot: date,
                           cfg: ValueConfig) -> DataFrame:
    """Current value (split by product-line group) and decayed historical value per account.

    Args:
        monthly_product: accepted monthly facts (all history).
        base: ``features.account_base`` rows (account_id, open_date, _k_open, _k_close).
        snapshot: first day of the snapshot month.
        cfg: value settings.

    Returns:
        account_id, current_value, current_value_<group> per group, historical_value,
        historical_observed, historical_backfill, a0_monthly_profit, backfill_months.
    """
    c = cfg.current_months
    group_of = F.coalesce(*[F.when(F.col("product_line").isin(lines), F.lit(group))
                            for group, lines in cfg.product_groups.items()])
    # Earliest month of monthly facts in the data: one aggregate, broadcast back.
    data_start = monthly_product.agg(F.min("month").alias("_data_start"))
    k = months_back(F.col("month"), snapshot)
    open_rows = (monthly_product
                 .where(F.col("month") <= F.lit(snapshot))
                 .join(base.select(ACCOUNT_ID, "_k_open", "_k_close"), on=ACCOUNT_ID,
                       how="inner")
                 .crossJoin(F.broadcast(data_start))
                 .select(ACCOUNT_ID, "_data_start", k.alias("k"),
                         (F.col("income") - F.col("cost")).alias("profit"),
                         group_of.alias("grp"),
                         months_back(F.col("_data_start"), snapshot).alias("_k_data_start"))
                 .where((F.col("k") <= F.col("_k_open")) & (F.col("k") >= F.col("_k_close"))))
    months_before = F.col("k") - (c - 1)          # 1 = the month just before the window
    # A0: mean monthly profit over the earliest `backfill_months` months of data (before the
    # current window), used for the months between opening and the start of the data.
    in_a0 = (F.col("k") > F.col("_k_data_start") - cfg.backfill_months) & (months_before >= 1)
    agg = open_rows.groupBy(ACCOUNT_ID).agg(
        *[F.sum(F.when((F.col("k") < c) & (F.col("grp") == g), F.col("profit"))
                .otherwise(0.0)).alias(f"current_value_{g}") for g in cfg.product_groups],
        F.sum(F.when(F.col("k") < c, F.col("profit")).otherwise(0.0)).alias("current_value"),
        F.sum(F.when(months_before >= 1, F.col("profit") * decay_weight(months_before,
                                                                       cfg.decay))
              .otherwise(0.0)).alias("historical_observed"),
        F.sum(F.when(in_a0, F.col("profit")).otherwise(0.0)).alias("_a0_sum"),
        F.max("_k_data_start").alias("_k_data_start"),
    )
    k_data_start = F.col("_k_data_start")
    opened_before_data = F.col("_k_open") > k_data_start
    # the account's months before the data start (open then, but no facts)
    first_missing = k_data_start + 1 - (c - 1)           # months_before of the month before data
    last_missing = F.col("_k_open") - (c - 1)            # months_before of the opening month
    first_missing = F.greatest(first_missing, F.lit(1))
    n_missing = F.greatest(last_missing - first_missing + 1, F.lit(0))
    # months of A0 window the account was open (all of them when it opened before the data)
    a0_months = F.least(F.lit(cfg.backfill_months),
                        F.greatest(k_data_start - (c - 1), F.lit(0)))
    a0 = F.when(opened_before_data & (a0_months > 0), F.col("_a0_sum") / a0_months)
    backfill = F.when((n_missing > 0) & a0.isNotNull(),
                      a0 * _decay_sum(first_missing, last_missing, cfg.decay)).otherwise(0.0)
    joined = base.select(ACCOUNT_ID, "_k_open").join(agg, on=ACCOUNT_ID, how="left")

    def zero(col: str) -> Column:
        return F.coalesce(F.col(col), F.lit(0.0))

    return joined.select(
        ACCOUNT_ID,
        zero("current_value").alias("current_value"),
        *[zero(f"current_value_{g}").alias(f"current_value_{g}") for g in cfg.product_groups],
        (zero("historical_observed") + backfill).alias("historical_value"),
        zero("historical_observed").alias("historical_observed"),
        backfill.alias("historical_backfill"),
        a0.alias("a0_monthly_profit"),
        F.coalesce(n_missing, F.lit(0)).cast("int").alias("backfill_months"),
    )


def influence_value(relations: DataFrame, transactions: DataFrame, current: DataFrame,
                    snapshot: date, cfg: ValueConfig) -> DataFrame:
    """Enterprise, family and radiation influence per account, and their weighted sum.

    * enterprise: current value of the employer account(s) an account is linked to by an
      ``employer`` relation (account_id -> related_account_id);
    * family: current value of the accounts linked by ``family`` relations, both ways;
    * radiation: credit transfers received in the current window from counterparties that
      made at least ``radiation_min_transfers`` transfers to the account in that window.

    Args:
        current: account_id and current_value of every scored account.

    Returns:
        account_id, influence_enterprise, influence_family, influence_radiation,
        influence_value (for every account of ``current``).
    """
    c = cfg.current_months
    end = _month_end(snapshot)
    values = current.select(F.col(ACCOUNT_ID).alias("_other"),
                            F.col("current_value").alias("_other_value"))
    employer = relations.where(F.col("relation") == "employer").select(
        ACCOUNT_ID, F.col("related_account_id").alias("_other"), F.lit("enterprise").alias("_k"))
    family = relations.where(F.col("relation") == "family")
    family_both = family.select(ACCOUNT_ID, F.col("related_account_id").alias("_other")) \
        .unionByName(family.select(F.col("related_account_id").alias(ACCOUNT_ID),
                                   F.col(ACCOUNT_ID).alias("_other"))) \
        .distinct().select(ACCOUNT_ID, "_other", F.lit("family").alias("_k"))
    linked = (employer.unionByName(family_both)
              .join(values, on="_other", how="inner")
              .groupBy(ACCOUNT_ID)
              .agg(F.sum(F.when(F.col("_k") == "enterprise", F.col("_other_value")))
                   .alias("influence_enterprise"),
                   F.sum(F.when(F.col("_k") == "family", F.col("_other_value")))
                   .alias("influence_family")))
    window_start = F.add_months(F.lit(snapshot), -(c - 1))
    radiation = (transactions
                 .where(F.col("counterparty_id").isNotNull()
                        & (F.col("direction") == "credit")
                        & (F.to_date("txn_ts") >= window_start)
                        & (F.to_date("txn_ts") <= F.lit(end)))
                 .groupBy(ACCOUNT_ID, "counterparty_id")
                 .agg(F.count(F.lit(1)).alias("n"), F.sum("amount").alias("amt"))
                 .where(F.col("n") >= cfg.radiation_min_transfers)
                 .groupBy(ACCOUNT_ID)
                 .agg(F.sum("amt").alias("influence_radiation")))
    w = cfg.influence_weights
    out = (current.select(ACCOUNT_ID)
           .join(linked, on=ACCOUNT_ID, how="left")
           .join(radiation, on=ACCOUNT_ID, how="left"))
    comps = {name: F.coalesce(F.col(f"influence_{name}"), F.lit(0.0))
             for name in ("enterprise", "family", "radiation")}
    return out.select(
        ACCOUNT_ID,
        *[col.alias(f"influence_{name}") for name, col in comps.items()],
        (w.enterprise * comps["enterprise"] + w.family * comps["family"]
         + w.radiation * comps["radiation"]).alias("influence_value"),
    )


def percentile_scale(df: DataFrame, columns: list[str], points: int,
                     accuracy: int = 10_000) -> DataFrame:
    """Add ``<col>_pct`` on 0..100: the approximate percentile rank of each value.

    Cut points are ``points - 1`` quantiles from one ``percentile_approx`` aggregate; only
    those few numbers per column reach the driver. The rank is the mid-rank
    ``(#cuts < v + #cuts <= v) / 2 / (points-1)`` so tied values (many zeros) share the
    middle of their range. Nulls stay null. The counts come from one binary search per
    value (:mod:`cvm_spark.cuts`).
    """
    probs = [i / points for i in range(1, points)]
    row = df.agg(*[F.percentile_approx(F.col(c), probs, accuracy).alias(c)
                   for c in columns]).first()
    cuts = {c: CutPoints([float(x) for x in row[c]]) for c in columns
            if row is not None and row[c]}
    out, buckets = bucketize(df, cuts)
    n = float(points - 1)

    def pct(c: str) -> Column:
        if c not in cuts:
            return F.lit(None).cast("double")
        v = F.col(c)
        return F.when(v.isNotNull(),
                      F.round(cuts[c].mid_rank(v, buckets.get(c)) / n * 100.0, 4))

    return out.select(*df.columns, *[pct(c).alias(f"{c}_pct") for c in columns])


def contribution_value(cfg: ValueConfig) -> Column:
    """Weighted sum of the percentile-scaled components (0..100); nulls count as 0."""
    w = cfg.contribution_weights
    parts = {"historical_value_pct": w.historical, "current_value_pct": w.current,
             "influence_value_pct": w.influence, "future_value_pct": w.future}
    total = F.lit(0.0)
    for col, weight in parts.items():
        total = total + F.lit(weight) * F.coalesce(F.col(col), F.lit(0.0))
    return total

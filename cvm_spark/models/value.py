"""Value components (spec section 4): current, historical, influence and contribution value.

Formulas and defaults are in docs/model.md. Conventions follow features.py: ``S`` is the
snapshot month, ``k`` months back from it, the current window is ``k < C``
(``value.current_months``), and months count only while the account is open.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.cuts import CutPoints, bucketize, probabilities, quantiles, rank_value
from cvm_spark.common.months import month_end, months_between
from cvm_spark.config import ValueConfig
from cvm_spark.features.windows import monthly_rows
from cvm_spark.schemas.inputs import ACCOUNT_ID


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


def value_aggregates(snapshot: date, cfg: ValueConfig, k_data_start: int) -> list[Column]:
    """Aggregates of current and historical value over
    :func:`cvm_spark.features.windows.monthly_rows` (with ``profit_<group>``): months the account
    was open only.

    Args:
        k_data_start: months back from ``snapshot`` of the earliest month of monthly facts
            in the data (the A0 months are counted from it).
    """
    del snapshot  # the rows carry k, counted from it
    c = cfg.current_months
    k, used, profit = F.col("k"), F.col("open"), F.col("profit")
    months_before = k - (c - 1)          # 1 = the month just before the window
    # A0: mean monthly profit over the earliest `backfill_months` months of data (before the
    # current window), used for the months between opening and the start of the data.
    in_a0 = (k > F.lit(k_data_start) - cfg.backfill_months) & (months_before >= 1)
    return [
        *[F.sum(F.when(used & (k < c), F.col(f"profit_{g}")).otherwise(0.0))
          .alias(f"current_value_{g}") for g in cfg.product_groups],
        F.sum(F.when(used & (k < c), profit).otherwise(0.0)).alias("current_value"),
        F.sum(F.when(used & (months_before >= 1),
                     profit * decay_weight(months_before, cfg.decay)).otherwise(0.0))
        .alias("historical_observed"),
        F.sum(F.when(used & in_a0, profit).otherwise(0.0)).alias("_a0_sum"),
        F.count(F.when(used, 1)).alias("_value_months"),
    ]


def values_from_aggregates(cfg: ValueConfig, k_data_start: int) -> list[Column]:
    """Current value (by group) and decayed historical value with the back-fill, over a row
    with ``_k_open`` (:func:`cvm_spark.features.windows.account_columns` at the snapshot) and the
    :func:`value_aggregates` (null when the account has no monthly facts)."""
    c = cfg.current_months
    # the data start of the account's rows: unknown (no back-fill) without open months
    k_data_start_col = F.when(F.col("_value_months") > 0, F.lit(k_data_start))
    opened_before_data = F.col("_k_open") > k_data_start_col
    # the account's months before the data start (open then, but no facts)
    first_missing = k_data_start_col + 1 - (c - 1)      # months_before of the month before data
    last_missing = F.col("_k_open") - (c - 1)           # months_before of the opening month
    first_missing = F.greatest(first_missing, F.lit(1))
    n_missing = F.greatest(last_missing - first_missing + 1, F.lit(0))
    # months of A0 window the account was open (all of them when it opened before the data)
    a0_months = F.least(F.lit(cfg.backfill_months),
                        F.greatest(k_data_start_col - (c - 1), F.lit(0)))
    a0 = F.when(opened_before_data & (a0_months > 0), F.col("_a0_sum") / a0_months)
    backfill = F.when((n_missing > 0) & a0.isNotNull(),
                      a0 * _decay_sum(first_missing, last_missing, cfg.decay)).otherwise(0.0)

    def zero(col: str) -> Column:
        return F.coalesce(F.col(col), F.lit(0.0))

    return [
        zero("current_value").alias("current_value"),
        *[zero(f"current_value_{g}").alias(f"current_value_{g}") for g in cfg.product_groups],
        (zero("historical_observed") + backfill).alias("historical_value"),
        zero("historical_observed").alias("historical_observed"),
        backfill.alias("historical_backfill"),
        a0.alias("a0_monthly_profit"),
        F.coalesce(n_missing, F.lit(0)).cast("int").alias("backfill_months"),
    ]


def future_share_aggregates(groups: Sequence[str], months: int) -> list[Column]:
    """Aggregates over :func:`cvm_spark.features.windows.monthly_rows` (with
    ``income_<group>``): each group's income over the last ``months`` months the account was
    open (``_fv_income_<group>``), the weights :func:`future_value_by_group` splits the
    forecast by."""
    k, used = F.col("k"), F.col("open")
    return [F.sum(F.when(used & (k < months), F.coalesce(F.col(f"income_{g}"), F.lit(0.0)))
                  .otherwise(F.lit(0.0))).alias(f"_fv_income_{g}") for g in groups]


def future_share_columns(groups: Sequence[str]) -> list[str]:
    """The hidden columns of :func:`future_share_aggregates`."""
    return [f"_fv_income_{g}" for g in groups]


def future_value_by_group(groups: Sequence[str]) -> list[Column]:
    """``future_value_<group>``: the account's future value split over the product-line
    groups in proportion to each group's (non-negative) income of the last H months, so the
    groups add up to ``future_value``; null when the account had no positive income in
    those months (over a row with ``future_value`` and :func:`future_share_columns`)."""
    shares = {g: F.greatest(F.coalesce(F.col(f"_fv_income_{g}"), F.lit(0.0)), F.lit(0.0))
              for g in groups}
    total = sum(shares.values(), F.lit(0.0))
    return [F.when(total > 0, F.col("future_value") * shares[g] / total)
            .alias(f"future_value_{g}") for g in groups]


def value_columns(cfg: ValueConfig) -> list[str]:
    """The columns of :func:`values_from_aggregates`, in order (without ``account_id``)."""
    return ["current_value", *[f"current_value_{g}" for g in cfg.product_groups],
            "historical_value", "historical_observed", "historical_backfill",
            "a0_monthly_profit", "backfill_months"]


def data_start_months(monthly_product: DataFrame, snapshot: date) -> int | None:
    """Months back from ``snapshot`` of the earliest month of ``monthly_product`` (one
    aggregate; the pipeline takes it from validation instead)."""
    row = monthly_product.agg(F.min("month").alias("m")).first()
    return None if row is None or row["m"] is None else months_between(snapshot, row["m"])


def current_and_historical(monthly_product: DataFrame, base: DataFrame, snapshot: date,
                           cfg: ValueConfig, k_data_start: int | None = None) -> DataFrame:
    """Current value (split by product-line group) and decayed historical value per account.

    Args:
        monthly_product: accepted monthly facts (all history).
        base: ``features.account_base`` rows (account_id, open_date, _k_open, _k_close).
        snapshot: first day of the snapshot month.
        cfg: value settings.
        k_data_start: months back of the earliest month of the data; computed from
            ``monthly_product`` (one aggregate) when not given.

    Returns:
        account_id, current_value, current_value_<group> per group, historical_value,
        historical_observed, historical_backfill, a0_monthly_profit, backfill_months.
    """
    if k_data_start is None:
        k_data_start = data_start_months(monthly_product, snapshot)
    kds = 0 if k_data_start is None else k_data_start   # no data: no rows use it
    rows = monthly_rows(monthly_product, base, snapshot, [], cfg.product_groups)
    agg = rows.groupBy(ACCOUNT_ID).agg(*value_aggregates(snapshot, cfg, kds))
    joined = base.select(ACCOUNT_ID, "_k_open").join(agg, on=ACCOUNT_ID, how="left")
    return joined.select(ACCOUNT_ID, *values_from_aggregates(cfg, kds))


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
    end = month_end(snapshot)
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


def percentile_probabilities(points: int) -> list[float]:
    """The quantile levels of the percentile cut points (``points - 1`` of them)."""
    return [i / points for i in range(1, points)]


PERCENTILE_ACCURACY = 10_000
# the components whose percentiles make the contribution value (value.contribution_weights)
SCALED = ["historical_value", "current_value", "influence_value", "future_value"]


def percentile_cuts(df: DataFrame, columns: list[str], points: int,
                    accuracy: int = PERCENTILE_ACCURACY) -> dict[str, list[float]]:
    """The ``points - 1`` approximate quantiles of each column: one aggregate (a few numbers
    per column reach the driver). A column without values gets no cut points."""
    probs = percentile_probabilities(points)
    if len(columns) <= 1:
        row = df.agg(*[quantiles(F.col(c), probs, accuracy).alias(c) for c in columns]).first()
        return {c: [float(x) for x in row[c]] for c in columns if row is not None and row[c]}
    # the columns stacked as (column index, value) rows and one percentile_approx per index:
    # the plan then holds the array of ``points - 1`` levels once, not once per column
    # (printed four times each, 12 columns made a 289 kB plan)
    stacked = df.select(F.inline(F.array(*[
        F.struct(F.lit(i).alias("_k"), rank_value(F.col(c)).alias("_v"))
        for i, c in enumerate(columns)])))
    rows = stacked.groupBy("_k").agg(
        F.percentile_approx("_v", probabilities(probs), accuracy).alias("_q")).collect()
    return {columns[r["_k"]]: [float(x) for x in r["_q"]] for r in rows if r["_q"]}


def percentile_scale(df: DataFrame, columns: list[str], points: int,
                     accuracy: int = PERCENTILE_ACCURACY,
                     cuts: dict[str, list[float]] | None = None,
                     zero_at_bottom: bool = False) -> DataFrame:
    """Add ``<col>_pct`` on 0..100: the approximate percentile rank of each value.

    Cut points are ``points - 1`` quantiles from one ``percentile_approx`` aggregate
    (:func:`percentile_cuts`, or ``cuts`` when the caller computed them in an aggregate of
    its own). The rank is the mid-rank ``(#cuts < v + #cuts <= v) / 2 / (points-1)`` so
    tied values share the middle of their range. With ``zero_at_bottom`` a value of 0 (no
    evidence: no income, spend or relations) takes the bottom of its tie instead,
    ``#cuts < 0 / (points-1)``: 0 when no value is negative (``value.no_evidence_rank``).
    Nulls stay null. The counts come from one binary search per value
    (:mod:`cvm_spark.common.cuts`).
    """
    found = cuts if cuts is not None else percentile_cuts(df, columns, points, accuracy)
    points_of = {c: CutPoints(found[c]) for c in columns if found.get(c)}
    out, searches = bucketize(df, points_of)
    n = float(points - 1)

    def pct(c: str) -> Column:
        if c not in points_of:
            return F.lit(None).cast("double")
        v, cp, search = F.col(c), points_of[c], searches.get(c)
        rank = cp.mid_rank(v, search)
        if zero_at_bottom:
            rank = F.when(rank_value(v) == F.lit(0.0), cp.below(v, search)).otherwise(rank)
        return F.when(v.isNotNull(), F.round(rank / n * 100.0, 4))

    return out.select(*df.columns, *[pct(c).alias(f"{c}_pct") for c in columns])


def _weighted_parts(cfg: ValueConfig, suffix: str) -> Column:
    """``sum_p w_p * <p>_value<suffix>`` over historical, current, influence, future (the
    contribution weights, in that order); nulls count as 0."""
    total = F.lit(0.0)
    for part, weight in cfg.contribution_weights.as_dict().items():
        total = total + F.lit(weight) * F.coalesce(F.col(f"{part}_value{suffix}"), F.lit(0.0))
    return total


def contribution_money(cfg: ValueConfig) -> Column:
    """The contribution weights applied to the value components in currency:
    ``w_h * historical_value + w_c * current_value + w_i * influence_value + w_f *
    future_value``; nulls count as 0. What ABC classes are cut on by default (the accounts
    that carry most of the money, not of the percentile composite)."""
    return _weighted_parts(cfg, "")


def contribution_value(cfg: ValueConfig) -> Column:
    """Weighted sum of the percentile-scaled components (0..100); nulls count as 0."""
    return _weighted_parts(cfg, "_pct")

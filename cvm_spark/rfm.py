"""RFM scores, codes and named segments (spec section 3).

Cut points are population quantiles from ``percentile_approx`` (one aggregate, no global
sort), computed over the accounts that were active: R over accounts with a transaction, F
and M over accounts with at least one transaction in the RFM window. They are joined back
as a one-row broadcast, so nothing per account reaches the driver. A value equal to a cut
point falls in the lower bin, so ties always share a score; inactive accounts score 1; a
population with no activity at all scores 1 everywhere.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.config import RfmConfig
from cvm_spark.features import BTYD_COLUMNS
from cvm_spark.schemas import ACCOUNT_ID, SNAPSHOT_MONTH


def cut_points(features: DataFrame, cfg: RfmConfig) -> DataFrame:
    """One row with arrays ``r_cuts``, ``f_cuts``, ``m_cuts`` of ``bins - 1`` quantiles."""
    probs = [i / cfg.bins for i in range(1, cfg.bins)]
    accuracy = round(1 / cfg.relative_error)
    w = cfg.window_months
    freq, mon = F.col(f"frequency_{w}m"), F.col(f"monetary_{w}m")
    return features.agg(
        F.percentile_approx(F.col("recency_days"), probs, accuracy).alias("r_cuts"),
        F.percentile_approx(F.when(freq > 0, freq), probs, accuracy).alias("f_cuts"),
        F.percentile_approx(F.when(freq > 0, mon), probs, accuracy).alias("m_cuts"),
    )


def _bins_below(cuts: Column, value: Column) -> Column:
    """Number of cut points strictly below ``value`` (0 when there are no cut points)."""
    return F.coalesce(F.size(F.filter(cuts, lambda c: c < value)), F.lit(0))


def score_rfm(features: DataFrame, cfg: RfmConfig) -> DataFrame:
    """Score every account of the features table.

    Returns:
        snapshot_month, account_id, recency_days, frequency, monetary, r/f/m scores,
        rfm_code, rfm_score, segment and the BTYD summary columns.
    """
    n = cfg.bins
    w = cfg.window_months
    freq, mon = F.col(f"frequency_{w}m"), F.col(f"monetary_{w}m")
    scored = features.crossJoin(F.broadcast(cut_points(features, cfg))).select(
        SNAPSHOT_MONTH, ACCOUNT_ID, "recency_days",
        freq.alias("frequency"), mon.alias("monetary"),
        F.when(F.col("recency_days").isNull(), F.lit(1))
        .otherwise(F.lit(n) - _bins_below(F.col("r_cuts"), F.col("recency_days")))
        .alias("r_score"),
        F.when(freq > 0, 1 + _bins_below(F.col("f_cuts"), freq)).otherwise(F.lit(1))
        .alias("f_score"),
        F.when(freq > 0, 1 + _bins_below(F.col("m_cuts"), mon)).otherwise(F.lit(1))
        .alias("m_score"),
        *BTYD_COLUMNS,
    )
    segment = F.coalesce(*[
        F.when(F.col("r_score").between(*rule.r) & F.col("f_score").between(*rule.f)
               & F.col("m_score").between(*rule.m), F.lit(rule.name))
        for rule in cfg.segments
    ])
    return scored.select(
        SNAPSHOT_MONTH, ACCOUNT_ID, "recency_days", "frequency", "monetary",
        F.col("r_score").cast("int").alias("r_score"),
        F.col("f_score").cast("int").alias("f_score"),
        F.col("m_score").cast("int").alias("m_score"),
        F.concat(F.col("r_score").cast("string"), F.col("f_score").cast("string"),
                 F.col("m_score").cast("string")).alias("rfm_code"),
        (F.col("r_score") + F.col("f_score") + F.col("m_score")).cast("int").alias("rfm_score"),
        segment.alias("segment"),
        *BTYD_COLUMNS,
    )

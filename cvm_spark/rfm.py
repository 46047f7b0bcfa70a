"""RFM scores, codes and named segments (spec section 3).

Cut points are population quantiles from ``percentile_approx`` (one aggregate, no global
sort), computed over the accounts that were active: R over accounts with a transaction, F
and M over accounts with at least one transaction in the RFM window. The ``3 * (bins - 1)``
cut points are fitted once (:func:`fit_rfm`, the only numbers that reach the driver) and the
scores are a projection with them as literals (:func:`rfm_columns`), so the model stage can
add the segment to its own frame without a join. A value equal to a cut
point falls in the lower bin, so ties always share a score; inactive accounts score 1; a
population with no activity at all scores 1 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.config import RfmConfig
from cvm_spark.cuts import quantiles, rank_value
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
        quantiles(F.when(freq > 0, mon), probs, accuracy).alias("m_cuts"),
    )


@dataclass(frozen=True)
class RfmCuts:
    """The fitted RFM cut points (``bins - 1`` each; empty when the population has none)."""

    r: list[float]
    f: list[float]
    m: list[float]


def fit_rfm(features: DataFrame, cfg: RfmConfig) -> RfmCuts:
    """The population cut points: one aggregate, ``3 * (bins - 1)`` numbers to the driver."""
    row = cut_points(features, cfg).first()
    assert row is not None

    def values(name: str) -> list[float]:
        return [float(x) for x in (row[name] or [])]

    return RfmCuts(values("r_cuts"), values("f_cuts"), values("m_cuts"))


def _bins_below(cuts: list[float], value: Column) -> Column:
    """Number of cut points strictly below ``value`` (0 when there are no cut points)."""
    out: Column = F.lit(0)
    for c in cuts:
        out = out + F.when(F.lit(c) < value, 1).otherwise(0)
    return out


def rfm_columns(cuts: RfmCuts, cfg: RfmConfig) -> dict[str, Column]:
    """The RFM columns as expressions over a features row (every output column but the
    BTYD ones), in output order."""
    n = cfg.bins
    w = cfg.window_months
    recency = F.col("recency_days")
    freq, mon = F.col(f"frequency_{w}m"), F.col(f"monetary_{w}m")
    r = F.when(recency.isNull(), F.lit(1)).otherwise(F.lit(n) - _bins_below(cuts.r, recency))
    f = F.when(freq > 0, 1 + _bins_below(cuts.f, freq)).otherwise(F.lit(1))
    m = F.when(freq > 0, 1 + _bins_below(cuts.m, rank_value(mon))).otherwise(F.lit(1))
    segment = F.coalesce(*[
        F.when(r.between(*rule.r) & f.between(*rule.f) & m.between(*rule.m), F.lit(rule.name))
        for rule in cfg.segments
    ])
    return {
        SNAPSHOT_MONTH: F.col(SNAPSHOT_MONTH), ACCOUNT_ID: F.col(ACCOUNT_ID),
        "recency_days": recency, "frequency": freq, "monetary": mon,
        "r_score": r.cast("int"), "f_score": f.cast("int"), "m_score": m.cast("int"),
        "rfm_code": F.concat(r.cast("string"), f.cast("string"), m.cast("string")),
        "rfm_score": (r + f + m).cast("int"),
        "segment": segment,
    }


def score_rfm(features: DataFrame, cfg: RfmConfig, cuts: RfmCuts | None = None) -> DataFrame:
    """Score every account of the features table (one projection).

    Args:
        cuts: fitted cut points (:func:`fit_rfm`); fitted here when not given.

    Returns:
        snapshot_month, account_id, recency_days, frequency, monetary, r/f/m scores,
        rfm_code, rfm_score, segment and the BTYD summary columns.
    """
    cuts = cuts if cuts is not None else fit_rfm(features, cfg)
    return features.select(*[c.alias(name) for name, c in rfm_columns(cuts, cfg).items()],
                           *BTYD_COLUMNS)

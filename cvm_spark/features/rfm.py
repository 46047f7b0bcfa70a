"""RFM scores, codes and named segments (spec section 3).

Cut points are population quantiles from ``percentile_approx`` (one aggregate, no global
sort), computed over the accounts that were active: R over accounts with a transaction, F
and M over accounts with at least one transaction in the RFM window. The ``3 * (bins - 1)``
cut points are fitted once (:func:`fit_rfm`, the only numbers that reach the driver) and the
scores are a projection with them as literals (:func:`rfm_scores`), so the model stage can
add the segment (:func:`rfm_segment`) to its own frame without a join. A value equal to a cut
point falls in the lower bin, so ties always share a score; inactive accounts get the lowest
score; a population with no activity at all scores lowest everywhere. Scores run from
``rfm.lowest_score`` (1, or 0 for the telecom codes such as ``033``) over ``rfm.bins`` levels.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.cuts import quantiles, rank_value
from cvm_spark.config import RfmConfig
from cvm_spark.features.windows import BTYD_COLUMNS
from cvm_spark.schemas.inputs import ACCOUNT_ID, SNAPSHOT_MONTH


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


SCORES = ("r_score", "f_score", "m_score")


def rfm_scores(cuts: RfmCuts, cfg: RfmConfig) -> dict[str, Column]:
    """``r_score``, ``f_score`` and ``m_score`` (ints) as expressions over a features row."""
    low, high = cfg.lowest_score, cfg.highest_score
    w = cfg.window_months
    recency = F.col("recency_days")
    freq, mon = F.col(f"frequency_{w}m"), F.col(f"monetary_{w}m")
    r = F.when(recency.isNull(), F.lit(low)).otherwise(F.lit(high)
                                                       - _bins_below(cuts.r, recency))
    f = F.when(freq > 0, low + _bins_below(cuts.f, freq)).otherwise(F.lit(low))
    m = F.when(freq > 0, low + _bins_below(cuts.m, rank_value(mon))).otherwise(F.lit(low))
    return {"r_score": r.cast("int"), "f_score": f.cast("int"), "m_score": m.cast("int")}


def rfm_segment(cfg: RfmConfig, r: Column, f: Column, m: Column) -> Column:
    """The named segment of score *columns* ``r``, ``f``, ``m`` (the first matching rule).

    Pass columns computed in an earlier projection (:func:`rfm_scores`): every rule tests
    every score, and score expressions inlined here would be copied into each rule (the
    segment alone then generated ~400 kB of code per task)."""
    return F.coalesce(*[
        F.when(r.between(*rule.r) & f.between(*rule.f) & m.between(*rule.m), F.lit(rule.name))
        for rule in cfg.segments
    ])


def rfm_columns(cfg: RfmConfig) -> dict[str, Column]:
    """The RFM output columns (every one but the BTYD ones, in output order) over a features
    row that already carries the three scores of :func:`rfm_scores`."""
    w = cfg.window_months
    r, f, m = (F.col(c) for c in SCORES)
    return {
        SNAPSHOT_MONTH: F.col(SNAPSHOT_MONTH), ACCOUNT_ID: F.col(ACCOUNT_ID),
        "recency_days": F.col("recency_days"), "frequency": F.col(f"frequency_{w}m"),
        "monetary": F.col(f"monetary_{w}m"),
        "r_score": r, "f_score": f, "m_score": m,
        "rfm_code": F.concat(r.cast("string"), f.cast("string"), m.cast("string")),
        "rfm_score": (r + f + m).cast("int"),
        "segment": rfm_segment(cfg, r, f, m),
    }


def score_rfm(features: DataFrame, cfg: RfmConfig, cuts: RfmCuts | None = None) -> DataFrame:
    """Score every account of the features table (two projections: the scores, then the
    code and segment from them).

    Args:
        cuts: fitted cut points (:func:`fit_rfm`); fitted here when not given.

    Returns:
        snapshot_month, account_id, recency_days, frequency, monetary, r/f/m scores,
        rfm_code, rfm_score, segment and the BTYD summary columns.
    """
    cuts = cuts if cuts is not None else fit_rfm(features, cfg)
    w = cfg.window_months
    needed = [SNAPSHOT_MONTH, ACCOUNT_ID, "recency_days", f"frequency_{w}m",
              f"monetary_{w}m", *BTYD_COLUMNS]
    scored = features.select(*dict.fromkeys(needed),
                             *[c.alias(name) for name, c in rfm_scores(cuts, cfg).items()])
    return scored.select(*[c.alias(name) for name, c in rfm_columns(cfg).items()],
                         *BTYD_COLUMNS)


def segment_counts(cfg: RfmConfig) -> dict[str, Column]:
    """Rows per RFM segment (aggregates observed while the rfm table is written)."""
    return {rule.name: F.count_if(F.col("segment") == F.lit(rule.name)) for rule in cfg.segments}

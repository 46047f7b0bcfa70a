"""Loyalty score: PCA weights inside dimensions, entropy weights between them (spec section 5).

Steps (formulas and a worked example in docs/quality.md):

1. Each indicator is read from the features table (a column, or the sum of columns) and
   multiplied by its direction (+1 / -1) so that higher always means more loyal.
2. Standardise: ``z = (x - mean) / std`` with the population mean and standard deviation
   from one aggregate over the non-null values; a null becomes 0 (the mean) after
   standardising; an indicator with ``std <= epsilon`` (constant) is 0 everywhere.
3. Inside a dimension, the weights are the absolute loadings of the first principal
   component (``pyspark.ml.feature.PCA``, k=1) of its standardised indicators, normalised to
   sum to 1. A principal component's sign is arbitrary, and the directions already point
   every indicator towards "more loyal", so absolute values make the weights independent of
   the sign Spark happens to return. A dimension with one indicator has weight 1.
4. Dimension score = weighted sum of the z's, min-max scaled to [0, 1] (one aggregate) so the
   entropy method gets non-negative scores; a constant dimension (range <= epsilon) scores 0.
5. Entropy weight method between dimensions (:func:`entropy_weights`), one aggregate; or,
   with ``dimension_weighting: ahp``, the config's AHP weights (no aggregate).
6. ``loyalty_score = score_scale * sum_j w_j s_ij`` (0..100); the dimension scores are
   reported on the same scale. Bands from approximate percentiles of the score.

Population statistics are aggregates; only a handful of numbers reach the driver.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
from pyspark.ml.feature import PCA, VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.cuts import quantiles, rank_value
from cvm_spark.config import LoyaltyConfig, LoyaltyDimension, LoyaltyIndicator
from cvm_spark.models.weights import ahp_metrics
from cvm_spark.schemas.inputs import ACCOUNT_ID
from cvm_spark.schemas.outputs import MetricRow

log = logging.getLogger(__name__)

MODEL = "loyalty"


def entropy_weights(scores: DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """Entropy weight method over non-negative score columns (one aggregate).

    With ``s_ij`` the score of row i in column j over m rows: ``f_ij = s_ij / sum_i s_ij``,
    ``H_j = -(1 / ln m) sum_i f_ij ln f_ij`` (``0 ln 0 = 0``), ``w_j = (1 - H_j) / sum_j
    (1 - H_j)``. Computed from ``S_j = sum_i s_ij`` and ``sum_i s_ij ln s_ij`` because
    ``sum_i f_ij ln f_ij = (sum_i s_ij ln s_ij) / S_j - ln S_j``.

    A null score counts as 0. A column that is 0 everywhere carries no information
    (``H_j = 1``). When no column carries information, or there are fewer than two rows,
    the weights are equal.

    Args:
        scores: one row per account.
        columns: the score columns.

    Returns:
        Column name -> weight; the weights sum to 1.

    Raises:
        ValueError: a column holds a negative score, or ``columns`` is empty.
    """
    if not columns:
        raise ValueError("columns must not be empty")
    aggs: list[Column] = [F.count(F.lit(1)).alias("m")]
    for i, c in enumerate(columns):
        s = F.col(c).cast("double")
        aggs += [F.sum(s).alias(f"s{i}"),
                 F.sum(F.when(s > 0, s * F.log(s)).otherwise(F.lit(0.0))).alias(f"sl{i}"),
                 F.min(s).alias(f"min{i}")]
    row = scores.agg(*aggs).first()
    assert row is not None
    m = row["m"]
    equal = {c: 1.0 / len(columns) for c in columns}
    for i, c in enumerate(columns):
        if row[f"min{i}"] is not None and row[f"min{i}"] < 0:
            raise ValueError(f"{c}: the entropy method needs non-negative scores, "
                             f"found {row[f'min{i}']}")
    if m < 2:
        return equal
    divergence = {}
    for i, c in enumerate(columns):
        total = row[f"s{i}"] or 0.0
        # a column that is 0 everywhere has no information: H = 1
        h = 1.0 if total <= 0 else -(row[f"sl{i}"] / total - math.log(total)) / math.log(m)
        # H is in [0, 1] in exact arithmetic; clamp rounding noise
        divergence[c] = max(0.0, 1.0 - h)
    total_div = sum(divergence.values())
    if total_div <= 0:
        return equal
    return {c: d / total_div for c, d in divergence.items()}


def _indicator_value(ind: LoyaltyIndicator) -> Column:
    if ind.sum_of:
        value = reduce(lambda a, b: a + b,
                       [F.coalesce(F.col(c).cast("double"), F.lit(0.0)) for c in ind.sum_of])
    else:
        value = F.col(ind.name).cast("double")
    return value * F.lit(float(ind.direction))


FITTED_DIGITS = 12


def _settled(x: float) -> float:
    """A fitted number rounded to ``FITTED_DIGITS`` significant digits.

    Spark merges the partial sums of an aggregate (and pyspark.ml the partial Gramians of a
    PCA) in the order the tasks finish, so two runs on the same data can differ in the last
    bits of a double. Rounded, the fitted weights -- and every score computed from them --
    are the same from run to run (unless a number falls within one unit in the last place of
    a rounding boundary)."""
    return float(f"{x:.{FITTED_DIGITS}g}")


def _pca_weights(z: DataFrame, cols: list[str], constant: list[bool]) -> list[float]:
    """|first principal component loadings| of the standardised ``cols``, summing to 1."""
    if len(cols) == 1:
        return [1.0]
    if all(constant):  # no variance at all: PCA has nothing to say
        return [1.0 / len(cols)] * len(cols)
    vectors = VectorAssembler(inputCols=cols, outputCol="_v").transform(z.select(*cols))
    model = PCA(k=1, inputCol="_v", outputCol="_pc").fit(vectors)
    loadings = np.abs(model.pc.toArray()[:, 0])
    return [_settled(float(x)) for x in loadings / loadings.sum()]


@dataclass(frozen=True)
class LoyaltyModel:
    """A fitted loyalty score: everything :func:`loyalty_columns` needs, as plain numbers.

    Attributes:
        cfg: the settings it was fitted with.
        stats: per indicator (in dimension order) ``(mean, std)``, or None when constant.
        weights: per dimension, the PCA weights of its indicators.
        bounds: per dimension, ``(lo, span)`` of the weighted z-sum (span None: constant).
        dimension_weights: entropy (or AHP) weight per dimension.
        band_cuts: a score above ``band_cuts[i]`` reaches band ``i`` (the last has none).
        metrics: model-metric rows ``(model, scope, metric, value)``.
    """

    cfg: LoyaltyConfig
    stats: list[tuple[float, float] | None]
    weights: dict[str, list[float]]
    bounds: dict[str, tuple[float, float | None]]
    dimension_weights: dict[str, float]
    band_cuts: list[float]
    metrics: list[MetricRow]


def _indicators(cfg: LoyaltyConfig) -> list[tuple[LoyaltyDimension, LoyaltyIndicator]]:
    return [(d, ind) for d in cfg.dimensions for ind in d.indicators]


def _z_columns(cfg: LoyaltyConfig, stats: list[tuple[float, float] | None]) -> list[Column]:
    """Standardised indicators ``_x<i>`` (0 for a constant indicator or a null value)."""
    out = []
    for i, ((_, ind), st) in enumerate(zip(_indicators(cfg), stats, strict=True)):
        z = (F.lit(0.0) if st is None
             else F.coalesce((_indicator_value(ind) - F.lit(st[0])) / F.lit(st[1]),
                             F.lit(0.0)))
        out.append(z.alias(f"_x{i}"))
    return out


def _dimension_sums(cfg: LoyaltyConfig, weights: dict[str, list[float]]) -> list[Column]:
    """Weighted z-sum per dimension over the ``_x<i>`` columns."""
    out, i = [], 0
    for dim in cfg.dimensions:
        cols = [F.col(f"_x{i + j}") * F.lit(w) for j, w in enumerate(weights[dim.name])]
        i += len(dim.indicators)
        out.append(reduce(lambda a, b: a + b, cols).alias(dim.name))
    return out


def _scaled(name: str, bounds: tuple[float, float | None]) -> Column:
    lo, span = bounds
    return F.lit(0.0) if span is None else (F.col(name) - F.lit(lo)) / F.lit(span)


def fit_loyalty(features: DataFrame, cfg: LoyaltyConfig) -> LoyaltyModel:
    """Fit the loyalty score on the population (steps 2-6 of the module docstring).

    Runs several passes over ``features`` (standardisation, one PCA per multi-indicator
    dimension, min-max, entropy, band percentiles): pass a materialised DataFrame.

    Raises:
        ValueError: a configured features column is missing.
    """
    missing = [c for c in cfg.feature_columns if c not in features.columns]
    if missing:
        raise ValueError(f"loyalty.dimensions: features column(s) {missing} not found; "
                         f"available: {sorted(features.columns)}")
    indicators = _indicators(cfg)
    xs = [f"_x{i}" for i in range(len(indicators))]
    raw = features.select(*[_indicator_value(ind).alias(x)
                            for (_, ind), x in zip(indicators, xs, strict=True)])

    # 2. standardise with population statistics from one aggregate
    row = raw.agg(*[agg for x in xs for agg in (F.avg(x).alias(f"mean{x}"),
                                                F.stddev_pop(x).alias(f"std{x}"))]).first()
    assert row is not None
    stats: list[tuple[float, float] | None] = []
    for x in xs:
        mean, std = row[f"mean{x}"], row[f"std{x}"]
        constant = mean is None or std is None or std <= cfg.epsilon
        stats.append(None if constant else (_settled(mean), _settled(std)))
    z = features.select(*_z_columns(cfg, stats))

    # 3. PCA weights inside each dimension
    metrics: list[MetricRow] = []
    weights: dict[str, list[float]] = {}
    for dim in cfg.dimensions:
        idx = [i for i, (d, _) in enumerate(indicators) if d is dim]
        weights[dim.name] = _pca_weights(z, [xs[i] for i in idx], [stats[i] is None for i in idx])
        metrics += [(MODEL, f"indicator:{dim.name}", ind.name, w)
                    for ind, w in zip(dim.indicators, weights[dim.name], strict=True)]
    raw_scores = z.select(*_dimension_sums(cfg, weights))

    # 4. min-max scale each dimension to [0, 1]
    names = [d.name for d in cfg.dimensions]
    row = raw_scores.agg(*[agg for n in names
                           for agg in (F.min(n).alias(f"lo_{n}"), F.max(n).alias(f"hi_{n}"))]
                         ).first()
    assert row is not None
    bounds: dict[str, tuple[float, float | None]] = {}
    for n in names:
        lo, hi = row[f"lo_{n}"], row[f"hi_{n}"]
        span = (hi - lo) if lo is not None and hi is not None else 0.0
        bounds[n] = (float(lo or 0.0), None if span <= cfg.epsilon else float(span))
    scaled = raw_scores.select(*[_scaled(n, bounds[n]).alias(n) for n in names])

    # 5. weights between dimensions
    dim_weights = _dimension_weights(scaled, names, cfg)
    metrics = [(MODEL, "dimension", n, dim_weights[n]) for n in names] + metrics
    if cfg.ahp is not None:
        metrics += ahp_metrics(MODEL, cfg.ahp)

    # bands: a score above the (1 - top_share) percentile reaches the band
    cuts = _band_cuts(scaled, names, dim_weights, cfg)
    metrics += [(MODEL, "band_cut", b.label, cut)
                for b, cut in zip(cfg.bands[:-1], cuts, strict=False)]
    log.info("loyalty weights: %s", metrics)
    return LoyaltyModel(cfg=cfg, stats=stats, weights=weights, bounds=bounds,
                        dimension_weights=dim_weights, band_cuts=cuts, metrics=metrics)


def _band_cuts(scaled: DataFrame, names: list[str], dim_weights: dict[str, float],
               cfg: LoyaltyConfig) -> list[float]:
    """The score above which each band but the last starts: approximate percentiles of the
    composite score (one aggregate)."""
    composite = reduce(lambda a, b: a + b, [F.col(n) * F.lit(dim_weights[n]) for n in names])
    probs = [1.0 - b.top_share for b in cfg.bands[:-1]]
    accuracy = round(1 / cfg.relative_error)
    row = scaled.agg(quantiles(composite * F.lit(cfg.score_scale), probs, accuracy)
                     .alias("cuts")).first()
    assert row is not None
    return [float(c) for c in (row["cuts"] or [])]


def _dimension_weights(scaled: DataFrame, names: list[str], cfg: LoyaltyConfig
                       ) -> dict[str, float]:
    """Entropy weights of the scaled dimension scores (one aggregate), or the config's AHP
    weights (``dimension_weighting: ahp``; no Spark job)."""
    if cfg.ahp is None:
        return {n: _settled(w) for n, w in entropy_weights(scaled, names).items()}
    return dict(zip(names, cfg.ahp.weights, strict=True))


def add_loyalty(df: DataFrame, model: LoyaltyModel) -> DataFrame:
    """``df`` (with the indicator columns) plus loyalty_<dimension>, loyalty_score and
    loyalty_band: one projection with the fitted numbers as literals."""
    cfg = model.cfg
    names = [d.name for d in cfg.dimensions]
    scale = F.lit(cfg.score_scale)
    # helper columns: _x<i> (z of indicator i), then _dim_<name> (raw, then scaled sums)
    z = df.select("*", *_z_columns(cfg, model.stats))
    sums = z.select(*df.columns, *[c.alias(f"_dim_{n}") for c, n in
                                   zip(_dimension_sums(cfg, model.weights), names, strict=True)])
    scaled = sums.select(*df.columns, *[_scaled(f"_dim_{n}", model.bounds[n]).alias(f"_dim_{n}")
                                        for n in names])
    composite = reduce(lambda a, b: a + b,
                       [F.col(f"_dim_{n}") * F.lit(model.dimension_weights[n]) for n in names])
    scored = scaled.select(*df.columns, *[(F.col(f"_dim_{n}") * scale).alias(f"loyalty_{n}")
                                          for n in names],
                           (composite * scale).alias("loyalty_score"))
    band = None
    for b, cut in zip(cfg.bands[:-1], model.band_cuts, strict=False):
        cond = rank_value(F.col("loyalty_score")) > F.lit(cut)
        band = F.when(cond, F.lit(b.label)) if band is None else band.when(cond, F.lit(b.label))
    last = F.lit(cfg.bands[-1].label)
    band = last if band is None else band.otherwise(last)  # the last band: everyone else
    return scored.select("*", band.alias("loyalty_band"))


def loyalty_columns(cfg: LoyaltyConfig) -> list[str]:
    """The columns :func:`add_loyalty` adds, in order."""
    return [f"loyalty_{d.name}" for d in cfg.dimensions] + ["loyalty_score", "loyalty_band"]


def loyalty_scores(features: DataFrame, cfg: LoyaltyConfig,
                   seed: int = 0) -> tuple[DataFrame, list[MetricRow]]:
    """Loyalty dimension scores, composite score and band per account (fit, then score).

    Args:
        features: the features table (one row per account); read several times by the fit.
        cfg: dimensions, indicators and bands.
        seed: accepted for the uniform model-stage signature; the method is deterministic
            (Spark's PCA on a covariance matrix has no random start).

    Returns:
        ``(scores, metrics)``. scores: account_id, loyalty_<dimension> for each dimension
        (0..score_scale), loyalty_score (0..score_scale), loyalty_band. metrics: rows
        ``(model, scope, metric, value)``: ``("loyalty", "dimension", <dimension>, w_j)``,
        ``("loyalty", "indicator:<dimension>", <indicator>, weight)`` and
        ``("loyalty", "band_cut", <band>, cut)`` (a score above ``cut`` reaches
        the band; the last band has none).

    Raises:
        ValueError: a configured features column is missing.
    """
    del seed  # deterministic; see the docstring
    model = fit_loyalty(features, cfg)
    scores = add_loyalty(features.select(ACCOUNT_ID, *cfg.feature_columns), model)
    return scores.select(ACCOUNT_ID, *loyalty_columns(cfg)), model.metrics

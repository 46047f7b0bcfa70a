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
5. Entropy weight method between dimensions (:func:`entropy_weights`), one aggregate.
6. ``loyalty_score = score_scale * sum_j w_j s_ij`` (0..100); the dimension scores are
   reported on the same scale. Bands from approximate percentiles of the score.

Population statistics are aggregates; only a handful of numbers reach the driver.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
from pyspark.ml.feature import PCA, VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.config import _check
from cvm_spark.schemas import ACCOUNT_ID

log = logging.getLogger(__name__)

MODEL = "loyalty"
MetricRow = tuple[str, str, str, float]

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
_RESERVED_DIMENSIONS = ("score", "band")  # would collide with loyalty_score / loyalty_band
_BALANCE_LINES = ("demand_deposit", "time_deposit", "loan", "wealth", "card", "fee_other")


@dataclass(frozen=True)
class LoyaltyIndicator:
    """One indicator of a dimension.

    Attributes:
        name: a column of the features table, or (with ``sum_of``) the indicator's own name.
        direction: +1 when a higher value means more loyal, -1 when it means less.
        sum_of: when given, the indicator is the sum of these features columns (a null counts
            as 0 in the sum).
    """

    name: str
    direction: int = 1
    sum_of: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(bool(self.name.strip()), "name must not be blank")
        _check(self.direction in (1, -1), f"direction must be 1 or -1, got {self.direction}")
        _check(len(set(self.sum_of)) == len(self.sum_of),
               f"sum_of has duplicates: {self.sum_of}")

    @property
    def columns(self) -> list[str]:
        """Features columns the indicator reads."""
        return self.sum_of or [self.name]


@dataclass(frozen=True)
class LoyaltyDimension:
    """A named group of indicators; its score column is ``loyalty_<name>``."""

    name: str
    indicators: list[LoyaltyIndicator]

    def __post_init__(self) -> None:
        _check(_IDENTIFIER.fullmatch(self.name) is not None,
               f"name must be a lower-case identifier, got {self.name!r}")
        _check(self.name not in _RESERVED_DIMENSIONS,
               f"name must not be one of {_RESERVED_DIMENSIONS}")
        _check(len(self.indicators) > 0, "indicators must not be empty")
        names = [i.name for i in self.indicators]
        _check(len(set(names)) == len(names), f"indicators has duplicate names: {names}")


@dataclass(frozen=True)
class LoyaltyBand:
    """A band by rank: the accounts down to ``top_share`` of the population, counted from the
    top, that are not in an earlier band."""

    label: str
    top_share: float

    def __post_init__(self) -> None:
        _check(bool(self.label.strip()), "label must not be blank")
        _check(0 < self.top_share <= 1, f"top_share must be in (0, 1], got {self.top_share}")


def _default_dimensions() -> list[LoyaltyDimension]:
    return [
        LoyaltyDimension("tenure", [LoyaltyIndicator("tenure_months")]),
        LoyaltyDimension("activity", [
            LoyaltyIndicator("active_months_12m"), LoyaltyIndicator("frequency_12m"),
            LoyaltyIndicator("monetary_12m")]),
        LoyaltyDimension("depth", [
            LoyaltyIndicator("product_count"),
            LoyaltyIndicator("total_balance_12m",
                             sum_of=[f"avg_balance_{pl}_12m" for pl in _BALANCE_LINES]),
            LoyaltyIndicator("income_12m")]),
        LoyaltyDimension("stability", [LoyaltyIndicator("income_volatility_12m", -1)]),
    ]


def _default_bands() -> list[LoyaltyBand]:
    return [LoyaltyBand("high", 0.10), LoyaltyBand("fairly_high", 0.60),
            LoyaltyBand("average", 0.90), LoyaltyBand("low", 1.0)]


@dataclass(frozen=True)
class LoyaltyConfig:
    """Loyalty score (spec section 5, loyalty).

    Attributes:
        dimensions: the dimensions and their indicators.
        bands: best band first, with cumulative ``top_share`` increasing to 1.0.
        score_scale: the composite and dimension scores run from 0 to this.
        epsilon: a standard deviation or a min-max range at or below it counts as constant.
        relative_error: of the approximate percentiles that place the band cut points.
    """

    dimensions: list[LoyaltyDimension] = field(default_factory=_default_dimensions)
    bands: list[LoyaltyBand] = field(default_factory=_default_bands)
    score_scale: float = 100.0
    epsilon: float = 1e-12
    relative_error: float = 0.0001

    def __post_init__(self) -> None:
        _check(len(self.dimensions) > 0, "dimensions must not be empty")
        names = [d.name for d in self.dimensions]
        _check(len(set(names)) == len(names), f"dimensions has duplicate names: {names}")
        _check(len(self.bands) >= 2, "bands must list at least two bands")
        labels = [b.label for b in self.bands]
        _check(len(set(labels)) == len(labels), f"bands has duplicate labels: {labels}")
        shares = [b.top_share for b in self.bands]
        _check(all(a < b for a, b in itertools.pairwise(shares)),
               f"bands: top_share must increase from the first band, got {shares}")
        _check(shares[-1] == 1.0, f"bands: the last band must have top_share 1.0, got "
               f"{shares[-1]}")
        _check(self.score_scale > 0, f"score_scale must be > 0, got {self.score_scale}")
        _check(0 <= self.epsilon < 1e-3, f"epsilon must be in [0, 0.001), got {self.epsilon}")
        _check(0 < self.relative_error < 0.1, "relative_error must be in (0, 0.1)")

    @property
    def feature_columns(self) -> list[str]:
        """Every features column the configuration reads."""
        cols = [c for d in self.dimensions for i in d.indicators for c in i.columns]
        return list(dict.fromkeys(cols))


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


def _pca_weights(z: DataFrame, cols: list[str], constant: list[bool]) -> list[float]:
    """|first principal component loadings| of the standardised ``cols``, summing to 1."""
    if len(cols) == 1:
        return [1.0]
    if all(constant):  # no variance at all: PCA has nothing to say
        return [1.0 / len(cols)] * len(cols)
    vectors = VectorAssembler(inputCols=cols, outputCol="_v").transform(z.select(*cols))
    model = PCA(k=1, inputCol="_v", outputCol="_pc").fit(vectors)
    loadings = np.abs(model.pc.toArray()[:, 0])
    return [float(x) for x in loadings / loadings.sum()]


def loyalty_scores(features: DataFrame, cfg: LoyaltyConfig,
                   seed: int = 0) -> tuple[DataFrame, list[MetricRow]]:
    """Loyalty dimension scores, composite score and band per account.

    Runs several passes over ``features`` (standardisation, one PCA per multi-indicator
    dimension, min-max, entropy, percentiles): pass a cached or table-backed DataFrame.

    Args:
        features: the features table (one row per account).
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
    missing = [c for c in cfg.feature_columns if c not in features.columns]
    if missing:
        raise ValueError(f"loyalty.dimensions: features column(s) {missing} not found; "
                         f"available: {sorted(features.columns)}")
    indicators = [(d, ind) for d in cfg.dimensions for ind in d.indicators]
    xs = [f"_x{i}" for i in range(len(indicators))]
    raw = features.select(ACCOUNT_ID, *[_indicator_value(ind).alias(x)
                                        for (_, ind), x in zip(indicators, xs, strict=True)])

    # 2. standardise with population statistics from one aggregate
    stats = raw.agg(*[agg for x in xs for agg in (F.avg(x).alias(f"mean{x}"),
                                                  F.stddev_pop(x).alias(f"std{x}"))]).first()
    assert stats is not None
    constant = {}
    z_cols = []
    for x in xs:
        mean, std = stats[f"mean{x}"], stats[f"std{x}"]
        constant[x] = mean is None or std is None or std <= cfg.epsilon
        z = (F.lit(0.0) if constant[x]
             else F.coalesce((F.col(x) - F.lit(mean)) / F.lit(std), F.lit(0.0)))
        z_cols.append(z.alias(x))
    z = raw.select(ACCOUNT_ID, *z_cols)

    # 3. PCA weights inside each dimension
    metrics: list[MetricRow] = []
    dim_raw = []
    for dim in cfg.dimensions:
        cols = [x for (d, _), x in zip(indicators, xs, strict=True) if d is dim]
        weights = _pca_weights(z, cols, [constant[c] for c in cols])
        metrics += [(MODEL, f"indicator:{dim.name}", ind.name, w)
                    for ind, w in zip(dim.indicators, weights, strict=True)]
        dim_raw.append(reduce(lambda a, b: a + b,
                              [F.col(c) * F.lit(w) for c, w in zip(cols, weights, strict=True)])
                       .alias(dim.name))
    raw_scores = z.select(ACCOUNT_ID, *dim_raw)

    # 4. min-max scale each dimension to [0, 1]
    names = [d.name for d in cfg.dimensions]
    bounds = raw_scores.agg(*[agg for n in names
                              for agg in (F.min(n).alias(f"lo_{n}"), F.max(n).alias(f"hi_{n}"))]
                            ).first()
    assert bounds is not None
    scaled_cols = []
    for n in names:
        lo, hi = bounds[f"lo_{n}"], bounds[f"hi_{n}"]
        span = (hi - lo) if lo is not None and hi is not None else 0.0
        s = F.lit(0.0) if span <= cfg.epsilon else (F.col(n) - F.lit(lo)) / F.lit(span)
        scaled_cols.append(s.alias(n))
    scaled = raw_scores.select(ACCOUNT_ID, *scaled_cols)

    # 5. entropy weights between dimensions, 6. composite score
    dim_weights = entropy_weights(scaled, names)
    metrics = [(MODEL, "dimension", n, dim_weights[n]) for n in names] + metrics
    scale = F.lit(cfg.score_scale)
    composite = reduce(lambda a, b: a + b, [F.col(n) * F.lit(dim_weights[n]) for n in names])
    scored = scaled.select(ACCOUNT_ID, *[(F.col(n) * scale).alias(f"loyalty_{n}") for n in names],
                           (composite * scale).alias("loyalty_score"))

    # bands: a score above the (1 - top_share) percentile reaches the band
    probs = [1.0 - b.top_share for b in cfg.bands[:-1]]
    accuracy = round(1 / cfg.relative_error)
    cuts_row = scored.agg(F.percentile_approx("loyalty_score", probs, accuracy)
                          .alias("cuts")).first()
    assert cuts_row is not None
    cuts = cuts_row["cuts"] or []
    band = None
    for b, cut in zip(cfg.bands[:-1], cuts, strict=False):
        cond = F.col("loyalty_score") > F.lit(cut)
        band = F.when(cond, F.lit(b.label)) if band is None else band.when(cond, F.lit(b.label))
        metrics.append((MODEL, "band_cut", b.label, float(cut)))
    last = F.lit(cfg.bands[-1].label)
    band = last if band is None else band.otherwise(last)  # the last band: everyone else
    log.info("loyalty weights: %s", metrics)
    return (scored.select(ACCOUNT_ID, *[f"loyalty_{n}" for n in names], "loyalty_score",
                          band.alias("loyalty_band")),
            metrics)

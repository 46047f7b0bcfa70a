"""Fitting the future-value model: the seeded hold-out, the clustering pipeline (signed
log, standardising, KMeans), one weighted LinearRegression per cluster, cluster names by
mean label, and the hold-out metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.regression import LinearRegression, LinearRegressionModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.timing import StageTimer, no_stage
from cvm_spark.config import FutureValueConfig
from cvm_spark.models.future_value.model import (
    BASELINE,
    CLUSTER_ID,
    LABEL,
    MIN_TRAINING_PARTITIONS,
    MODEL,
    TRAINING_ROWS_PER_PARTITION,
    ClusterRegression,
    FutureValueModel,
    prediction,
)
from cvm_spark.models.future_value.training import require_columns
from cvm_spark.schemas.inputs import ACCOUNT_ID
from cvm_spark.schemas.outputs import MetricRow

log = logging.getLogger(__name__)


_HOLDOUT = "_fv_holdout"
_CLUSTER_IN = "_fv_cluster_input"
_CLUSTER_SCALED = "_fv_cluster_scaled"
_REG_IN = "_fv_x"
_PRED = "_fv_pred"
_TARGET = "_fv_target"
_WEIGHT = "_fv_weight"
_LOG_PREFIX = "_fv_log_"
_MASK47 = (1 << 47) - 1
_TWO47 = float(1 << 47)


def holdout_flag(seed: int, fraction: float) -> Column:
    """True for the accounts held out: a hash of ``(seed, account_id)`` below ``fraction``."""
    u = F.xxhash64(F.lit(seed), F.lit("future_value.holdout"), F.col(ACCOUNT_ID)) \
        .bitwiseAND(F.lit(_MASK47)) / _TWO47
    return u < F.lit(fraction)


def level_weight() -> Column:
    """``1 / (1 + baseline)^2``: the inverse variance when noise is proportional to level."""
    return F.lit(1.0) / F.pow(F.lit(1.0) + F.greatest(F.col(BASELINE), F.lit(0.0)), 2)


def _cluster_pipeline(cfg: FutureValueConfig, seed: int) -> Pipeline:
    inputs = list(cfg.cluster_features)
    stages: list = []
    if cfg.cluster_transform == "signed_log1p":
        logs = ", ".join(f"signum(`{c}`) * log1p(abs(`{c}`)) AS `{_LOG_PREFIX}{c}`"
                         for c in inputs)
        stages.append(SQLTransformer(statement=f"SELECT *, {logs} FROM __THIS__"))
        inputs = [f"{_LOG_PREFIX}{c}" for c in inputs]
    stages += [
        VectorAssembler(inputCols=inputs, outputCol=_CLUSTER_IN),
        StandardScaler(inputCol=_CLUSTER_IN, outputCol=_CLUSTER_SCALED, withMean=True,
                       withStd=True),
        KMeans(featuresCol=_CLUSTER_SCALED, predictionCol=CLUSTER_ID, k=cfg.k, seed=seed,
               maxIter=cfg.kmeans_max_iter),
    ]
    return Pipeline(stages=stages)


def _kmeans(pipeline: PipelineModel) -> KMeansModel:
    model = pipeline.stages[-1]
    assert isinstance(model, KMeansModel)
    return model


def _regression(cfg: FutureValueConfig) -> LinearRegression:
    return LinearRegression(featuresCol=_REG_IN, labelCol=_TARGET, predictionCol=_PRED,
                            maxIter=cfg.max_iter, regParam=cfg.reg_param,
                            elasticNetParam=cfg.elastic_net, loss=cfg.loss,
                            epsilon=cfg.huber_epsilon, standardization=True,
                            **({"weightCol": _WEIGHT} if cfg.weight_by_level else {}))


def _name_clusters(stats: dict[int, dict[str, float]], n_centers: int,
                   cfg: FutureValueConfig) -> list[tuple[int, str]]:
    """(cluster id, name) ranked by the members' mean label, highest first.

    Ids without training members rank last; ties keep the KMeans id order.
    """
    def key(cid: int) -> tuple[int, float, int]:
        mean = stats.get(cid, {}).get("mean_label")
        return (0, -mean, cid) if mean is not None else (1, 0.0, cid)

    names = cfg.names()
    ranked = sorted(range(n_centers), key=key)
    return [(cid, names[rank]) for rank, cid in enumerate(ranked)]


def training_partitions(accounts: int) -> int:
    """Partitions of the training frame: one per ``TRAINING_ROWS_PER_PARTITION`` accounts,
    at least ``MIN_TRAINING_PARTITIONS``.

    KMeans' seeded initialisation samples rows partition by partition, so the partitioning
    is part of what makes a fit repeatable: it follows the data, never the machine's cores.
    """
    return max(MIN_TRAINING_PARTITIONS, -(-accounts // TRAINING_ROWS_PER_PARTITION))


REGRESSION_METHODS = ("cluster_regression", "global_regression")


def fit_future_value(training: DataFrame, cfg: FutureValueConfig,
                     seed: int, stage: StageTimer = no_stage,
                     materialize: Callable[[DataFrame, str], DataFrame] | None = None,
                     partitions: int | None = None,
                     method: str = "cluster_regression") -> FutureValueModel:
    """:func:`fit_models` for one regression ``method``."""
    return fit_models(training, cfg, seed, [method], stage, materialize, partitions)[method]


def fit_models(training: DataFrame, cfg: FutureValueConfig, seed: int, methods: list[str],
               stage: StageTimer = no_stage,
               materialize: Callable[[DataFrame, str], DataFrame] | None = None,
               partitions: int | None = None) -> dict[str, FutureValueModel]:
    """Fit clusters and per-cluster regressions on the train part; evaluate on the hold-out.

    Args:
        training: as returned by :func:`build_training_set`.
        cfg: future-value settings.
        seed: seed of KMeans and of the hold-out split (the run's ``run_seed``).
        stage: wraps the three steps: ``future_value_training`` (the training set computed
            and cached), ``kmeans`` (scaler + KMeans), ``regression`` (per-cluster
            regressions and hold-out metrics).

    Returns:
        methods: ``cluster_regression`` (the seed's method: one regression per cluster)
            and/or ``global_regression`` (one regression over all training rows, used for
            every cluster); both share the clustering (one KMeans fit).

    Returns:
        Per method the fitted :class:`FutureValueModel` with its metric rows: per cluster
        and overall
        ``rmse``, ``mae``, ``r2`` of the model and ``baseline_rmse``, ``baseline_mae``,
        ``baseline_r2`` of the naive baseline on the hold-out (``r2`` is NaN when the
        label has no variance), row counts (``size``, ``train_rows``, ``holdout_rows``),
        ``mean_label``, ``centroid:<cluster feature>`` (members' mean in original units),
        ``intercept``, ``coef:<feature>`` and ``pooled`` (1 = pooled-regression fallback).

        materialize: writes the training frame once and returns it read back
            (:meth:`cvm_spark.storage.workarea.WorkArea.materialize`): every fit then starts from a
            file scan instead of the training set's lineage. Without it the frame is cached.
        partitions: partitions of the training frame (:func:`training_partitions`); None
            keeps the session's shuffle partitions.

    Raises:
        ValueError: the training set misses a column, or its train part is empty.
    """
    features, columns = cfg.regression_features, cfg.model_columns
    require_columns(training, [ACCOUNT_ID, *columns, LABEL, BASELINE], "training set")
    # Hash-partition and sort by account so the rows, hence KMeans' seeded initialisation
    # and every sum, do not depend on the order shuffles deliver rows in.
    selected = training.select(ACCOUNT_ID, *columns, LABEL, BASELINE,
                               holdout_flag(seed, cfg.holdout_fraction).alias(_HOLDOUT))
    spread = (selected.repartition(F.col(ACCOUNT_ID)) if partitions is None
              else selected.repartition(partitions, F.col(ACCOUNT_ID)))
    ordered = spread.sortWithinPartitions(ACCOUNT_ID)
    data = ordered.persist() if materialize is None else None
    clustered: DataFrame | None = None
    try:
        with stage("future_value_training"):
            # the whole training set is computed here, once: written to the work area, or
            # into the cache by the count
            if materialize is not None:
                data = materialize(ordered, "fv_training")
            assert data is not None
            train = data.where(~F.col(_HOLDOUT))
            n_train = train.count()
        if n_train == 0:
            raise ValueError(f"training set: no accounts in the train part (no account open "
                             f"at the end of month t-{cfg.horizon_months}, or no history?)")
        with stage("kmeans"):
            pipeline = _cluster_pipeline(cfg, seed).fit(train)
        n_centers = len(_kmeans(pipeline).clusterCenters())
        if n_centers < cfg.k:
            log.warning("future value: KMeans found %d distinct centers for k=%d",
                        n_centers, cfg.k)
        with stage("regression"):  # clusters named, per-cluster fits, hold-out metrics
            assembler = VectorAssembler(inputCols=features, outputCol=_REG_IN)
            target = (F.col(LABEL) - F.col(BASELINE) if cfg.target == "change"
                      else F.col(LABEL))
            clustered = (assembler.transform(pipeline.transform(data))
                         .select(ACCOUNT_ID, CLUSTER_ID, *columns, _REG_IN, LABEL, BASELINE,
                                 target.alias(_TARGET), _HOLDOUT,
                                 level_weight().alias(_WEIGHT))
                         .persist())
            train = clustered.where(~F.col(_HOLDOUT))
            stats = _cluster_stats(train, cfg)
            ranked = _name_clusters(stats, n_centers, cfg)
            result = {}
            for method in methods:
                regressions = _fit_regressions(train, stats, ranked, cfg,
                                               pooled_only=method == "global_regression")
                metrics = _metrics(clustered, regressions, stats, cfg)
                result[method] = FutureValueModel(pipeline=pipeline, regressions=regressions,
                                                  config=cfg, seed=seed, metrics=metrics)
                log.info("future value: fitted %s, %d clusters (%s); in-time hold-out rmse %.4g "
                         "vs baseline %.4g", method, len(regressions),
                         ", ".join(r.name for r in regressions),
                         _metric(metrics, "overall", "rmse"),
                         _metric(metrics, "overall", "baseline_rmse"))
    finally:
        if clustered is not None:
            clustered.unpersist()
        if data is not None:
            data.unpersist()
    return result


def _cluster_stats(train: DataFrame, cfg: FutureValueConfig) -> dict[int, dict[str, float]]:
    """Per KMeans cluster id of the train part: ``train_rows``, ``mean_label`` and
    ``centroid:<cluster feature>`` (one aggregate; k rows reach the driver)."""
    return {
        r[CLUSTER_ID]: r.asDict()
        for r in train.groupBy(CLUSTER_ID).agg(
            F.count(F.lit(1)).alias("train_rows"),
            F.avg(LABEL).alias("mean_label"),
            *[F.avg(c).alias(f"centroid:{c}") for c in cfg.cluster_features],
        ).collect()
    }


def _fit_regressions(train: DataFrame, stats: dict[int, dict[str, float]],
                     ranked: list[tuple[int, str]], cfg: FutureValueConfig,
                     pooled_only: bool = False) -> list[ClusterRegression]:
    """One LinearRegression per ranked cluster on its train rows; a cluster with fewer than
    ``min_cluster_rows`` (every cluster with ``pooled_only``: the global regression) uses
    one regression pooled over all clusters (fitted once)."""
    regressions: list[ClusterRegression] = []
    pooled_model: LinearRegressionModel | None = None
    for cid, name in ranked:
        rows = int(stats.get(cid, {}).get("train_rows", 0))
        if rows >= cfg.min_cluster_rows and not pooled_only:
            model = _regression(cfg).fit(train.where(F.col(CLUSTER_ID) == cid))
            regressions.append(_fitted(cid, name, model, pooled=False))
            continue
        if not pooled_only:
            log.warning("future value: cluster %s has %d training rows (< %d); using the "
                        "regression pooled over all clusters", name, rows,
                        cfg.min_cluster_rows)
        if pooled_model is None:
            pooled_model = _regression(cfg).fit(train)
        regressions.append(_fitted(cid, name, pooled_model, pooled=True))
    return regressions


def _fitted(cluster_id: int, name: str, model: LinearRegressionModel, pooled: bool
            ) -> ClusterRegression:
    return ClusterRegression(cluster_id, name, float(model.intercept),
                             [float(v) for v in model.coefficients.toArray()], pooled)


def _metric(rows: list[MetricRow], scope: str, metric: str) -> float:
    return next((v for _, s, m, v in rows if s == scope and m == metric), math.nan)


def _errors(n: float, sse: float | None, sae: float | None, sst: float | None
            ) -> tuple[float, float, float]:
    """(rmse, mae, r2) from row count and sums; NaN where undefined."""
    if not n:
        return math.nan, math.nan, math.nan
    r2 = 1.0 - sse / sst if sst else math.nan
    return math.sqrt(sse / n), sae / n, r2


def _metrics(clustered: DataFrame, regressions: list[ClusterRegression],
             stats: dict[int, dict[str, float]], cfg: FutureValueConfig) -> list[MetricRow]:
    """Hold-out errors per cluster and overall (one ``rollup``), plus the fitted parameters."""
    err = prediction(regressions, cfg) - F.col(LABEL)
    base_err = F.col(BASELINE) - F.col(LABEL)
    held = {
        r[CLUSTER_ID]: r.asDict()  # key None = all clusters (the rollup's grand total)
        for r in clustered.where(F.col(_HOLDOUT)).rollup(CLUSTER_ID).agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(err * err).alias("sse"),
            F.sum(F.abs(err)).alias("sae"),
            F.sum(base_err * base_err).alias("base_sse"),
            F.sum(F.abs(base_err)).alias("base_sae"),
            (F.var_pop(LABEL) * F.count(F.lit(1))).alias("sst"),
        ).collect()
    }

    def errors(scope: str, h: dict) -> list[MetricRow]:
        n = float(h.get("n") or 0)
        rmse, mae, r2 = _errors(n, h.get("sse"), h.get("sae"), h.get("sst"))
        b_rmse, b_mae, b_r2 = _errors(n, h.get("base_sse"), h.get("base_sae"), h.get("sst"))
        return [(MODEL, scope, "holdout_rows", n),
                (MODEL, scope, "rmse", rmse), (MODEL, scope, "mae", mae),
                (MODEL, scope, "r2", r2), (MODEL, scope, "baseline_rmse", b_rmse),
                (MODEL, scope, "baseline_mae", b_mae), (MODEL, scope, "baseline_r2", b_r2)]

    train_total = float(sum(s["train_rows"] for s in stats.values()))
    rows: list[MetricRow] = [(MODEL, "overall", "train_rows", train_total),
                             *errors("overall", held.get(None, {}))]
    for reg in regressions:
        scope = f"cluster:{reg.name}"
        s = stats.get(reg.cluster_id, {})
        train_rows = float(s.get("train_rows", 0))
        h = held.get(reg.cluster_id, {})
        rows += [(MODEL, scope, "size", train_rows + float(h.get("n") or 0)),
                 (MODEL, scope, "train_rows", train_rows),
                 *errors(scope, h),
                 (MODEL, scope, "mean_label", _float(s.get("mean_label")))]
        rows += [(MODEL, scope, f"centroid:{c}", _float(s.get(f"centroid:{c}")))
                 for c in cfg.cluster_features]
        rows += [(MODEL, scope, "intercept", reg.intercept),
                 *[(MODEL, scope, f"coef:{f}", c)
                   for f, c in zip(cfg.regression_features, reg.coefficients, strict=True)],
                 (MODEL, scope, "pooled", 1.0 if reg.pooled else 0.0)]
    return rows


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)

"""What a fitted future-value model is: its parameters (the clustering pipeline, one
regression per cluster), the one expression that scores with them, the names of its
columns, and its errors.

A fitted model is also one pyspark.ml ``PipelineModel`` (:meth:`FutureValueModel.
as_pipeline_model`): the clustering stages followed by :class:`ClusterRegressionStage`, a
Python transformer whose params are the regressions' coefficients, the cluster names, the
settings, the seed and the metric rows. pyspark.ml's own writer and reader save and load it
(``store``); its ``transform`` adds the cluster id, name and predicted value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pyspark.ml import PipelineModel, Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.config import FutureValueConfig, to_dict
from cvm_spark.config.binding import bind
from cvm_spark.schemas.outputs import MetricRow

MODEL = "future_value"
# Internal column names (prefixed so they cannot clash with feature columns).
LABEL = "label"
BASELINE = "baseline"
CLUSTER_ID = "_fv_cluster_id"
# Columns the fitted PipelineModel adds (besides CLUSTER_ID).
CLUSTER_NAME = "_fv_cluster_name"
PREDICTION = "_fv_prediction"
# Accounts per partition of the training frame, and the fewest partitions (two: a shuffle
# into one partition would send every training row through one task; see
# training_partitions).
TRAINING_ROWS_PER_PARTITION = 250_000
MIN_TRAINING_PARTITIONS = 2


@dataclass(frozen=True)
class ClusterRegression:
    """The regression one cluster is scored with (coefficients in original feature units)."""

    cluster_id: int
    name: str
    intercept: float
    coefficients: list[float]   # one per ``features``, in their order
    pooled: bool  # True: the cluster had too few training rows; the pooled model is used


def prediction(regressions: list[ClusterRegression], cfg: FutureValueConfig) -> Column:
    """The predicted income as one expression over the raw features and the cluster id.

    ``F.when(cluster == c, intercept_c + sum_j coef_cj * x_j)`` for every cluster: one
    projection for all clusters. There is no ``otherwise``: every KMeans id has a branch.
    With ``target = change`` the ``baseline`` column is added; with ``floor_at_zero``
    negative predictions become 0.
    """
    def value(reg: ClusterRegression) -> Column:
        out = F.lit(reg.intercept)
        for name, coef in zip(cfg.regression_features, reg.coefficients, strict=True):
            out = out + F.lit(coef) * F.col(name)
        return out

    expr: Column | None = None
    if regressions and len({(r.intercept, tuple(r.coefficients)) for r in regressions}) == 1:
        # one regression for every cluster (global_regression): one expression, no CASE
        # (the same arithmetic per row; k times smaller plans and task binaries)
        expr = value(regressions[0])
    for reg in regressions if expr is None else []:
        cond = F.col(CLUSTER_ID) == F.lit(reg.cluster_id)
        expr = F.when(cond, value(reg)) if expr is None else expr.when(cond, value(reg))
    assert expr is not None
    if cfg.target == "change":
        expr = F.col(BASELINE) + expr
    return F.greatest(expr, F.lit(0.0)) if cfg.floor_at_zero else expr


@dataclass(frozen=True)
class FutureValueModel:
    """A fitted future-value model.

    Attributes:
        pipeline: ``[SQLTransformer,] VectorAssembler, StandardScaler, KMeans`` fitted on the
            train part; its KMeans writes the cluster id.
        regressions: one per KMeans cluster id, in rank order (highest value first).
        config: the settings it was fitted with.
        seed: seed of KMeans and of the hold-out split.
        metrics: model-metric rows ``(model, scope, metric, value)`` of the fit.
    """

    pipeline: PipelineModel
    regressions: list[ClusterRegression]
    config: FutureValueConfig
    seed: int
    metrics: list[MetricRow]

    @property
    def method(self) -> str:
        """The method whose forecast ``future_value`` is (the metric row ``(future_value,
        method:<m>, in_use, 1)``; ``cluster_regression`` for a model without it)."""
        return next((s.removeprefix("method:") for _, s, m, _ in self.metrics
                     if m == "in_use" and s.startswith("method:")), "cluster_regression")

    @property
    def names(self) -> dict[int, str]:
        """KMeans cluster id -> name."""
        return {r.cluster_id: r.name for r in self.regressions}

    def as_pipeline_model(self) -> PipelineModel:
        """The whole model as one pyspark.ml ``PipelineModel``: the clustering stages, then
        a :class:`ClusterRegressionStage` holding everything else. Its ``transform`` adds
        ``CLUSTER_ID``, ``CLUSTER_NAME`` and ``PREDICTION``; ``write()``/``load`` are
        pyspark.ml's own."""
        return PipelineModel(stages=[*self.pipeline.stages, ClusterRegressionStage.of(self)])

    @classmethod
    def from_pipeline_model(cls, model: PipelineModel) -> FutureValueModel:
        """The inverse of :meth:`as_pipeline_model` (e.g. after ``PipelineModel.load``).

        Raises:
            ValueError: the last stage is not a :class:`ClusterRegressionStage`.
        """
        *clustering, last = model.stages
        if not isinstance(last, ClusterRegressionStage):
            raise ValueError(f"not a future-value model: its last stage is "
                             f"{type(last).__name__}, not ClusterRegressionStage")
        return FutureValueModel(pipeline=PipelineModel(stages=clustering),
                                regressions=last.regressions(), config=last.config(),
                                seed=last.getOrDefault(last.seed),
                                metrics=last.metrics())


class ClusterRegressionStage(Transformer, DefaultParamsReadable, DefaultParamsWritable):
    """The fitted regressions, cluster names, settings, seed and metric rows of a
    future-value model, as a pyspark.ml transformer with JSON-serialisable params (so
    ``DefaultParamsWriter``/``DefaultParamsReader`` save and load it, also inside a
    ``PipelineModel``).

    ``transform`` expects ``CLUSTER_ID`` (the KMeans stage's output), the configured
    features with nulls as 0 and, with ``target: change``, ``BASELINE``; it adds
    ``CLUSTER_NAME`` and ``PREDICTION`` (:func:`prediction`) in one projection.
    """

    clusterIds = Param(Params._dummy(), "clusterIds", "KMeans cluster ids, in rank order",
                       typeConverter=TypeConverters.toListInt)
    clusterNames = Param(Params._dummy(), "clusterNames", "name of each cluster",
                         typeConverter=TypeConverters.toListString)
    pooled = Param(Params._dummy(), "pooled", "1 where the cluster uses the pooled regression",
                   typeConverter=TypeConverters.toListInt)
    intercepts = Param(Params._dummy(), "intercepts", "intercept of each cluster's regression",
                       typeConverter=TypeConverters.toListFloat)
    coefficients = Param(Params._dummy(), "coefficients",
                         "coefficients of each cluster's regression, in feature order",
                         typeConverter=TypeConverters.toListListFloat)
    settings = Param(Params._dummy(), "settings", "the future_value settings (JSON)",
                     typeConverter=TypeConverters.toString)
    seed = Param(Params._dummy(), "seed", "seed of KMeans and of the hold-out split",
                 typeConverter=TypeConverters.toInt)
    fitMetrics = Param(Params._dummy(), "fitMetrics",
                       "metric rows (model, scope, metric, value) of the fit (JSON)",
                       typeConverter=TypeConverters.toString)

    def __init__(self) -> None:
        super().__init__()

    @classmethod
    def of(cls, model: FutureValueModel) -> ClusterRegressionStage:
        regs = model.regressions
        stage = cls()
        stage._set(clusterIds=[r.cluster_id for r in regs],
                   clusterNames=[r.name for r in regs],
                   pooled=[int(r.pooled) for r in regs],
                   intercepts=[r.intercept for r in regs],
                   coefficients=[list(r.coefficients) for r in regs],
                   settings=json.dumps(to_dict(model.config), sort_keys=True),
                   seed=model.seed,
                   fitMetrics=json.dumps([list(m) for m in model.metrics]))
        return stage

    def _value(self, param: Param) -> Any:
        return self.getOrDefault(param)

    def config(self) -> FutureValueConfig:
        return bind(FutureValueConfig, json.loads(self._value(self.settings)), "future_value")

    def regressions(self) -> list[ClusterRegression]:
        return [ClusterRegression(cid, name, float(b), [float(c) for c in coefs], bool(p))
                for cid, name, b, coefs, p in zip(
                    self._value(self.clusterIds), self._value(self.clusterNames),
                    self._value(self.intercepts), self._value(self.coefficients),
                    self._value(self.pooled), strict=True)]

    def metrics(self) -> list[MetricRow]:
        return [(m[0], m[1], m[2], float(m[3])) for m in json.loads(self._value(self.fitMetrics))]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        regressions = self.regressions()
        names = {r.cluster_id: r.name for r in regressions}
        # KMeans ids are 0..n-1, so the name is an array lookup (no CASE, no catch-all).
        name = F.element_at(F.array(*[F.lit(names[i]) for i in range(len(names))]),
                            F.col(CLUSTER_ID) + 1)
        return dataset.select("*", name.alias(CLUSTER_NAME),
                              prediction(regressions, self.config()).alias(PREDICTION))


class FutureValueModelNotFound(FileNotFoundError):
    """No saved future-value model where one was asked for."""

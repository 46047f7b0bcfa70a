"""What a fitted future-value model is: its parameters (the clustering pipeline, one
regression per cluster), the names of its columns, and its errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.ml import PipelineModel
from pyspark.ml.regression import LinearRegressionModel

from cvm_spark.config import FutureValueConfig
from cvm_spark.schemas.outputs import MetricRow

MODEL = "future_value"
MANIFEST_VERSION = 1
# Internal column names (prefixed so they cannot clash with feature columns).
LABEL = "label"
BASELINE = "baseline"
CLUSTER_ID = "_fv_cluster_id"
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
    model: LinearRegressionModel
    pooled: bool  # True: the cluster had too few training rows; the pooled model is used

    @property
    def intercept(self) -> float:
        return float(self.model.intercept)

    @property
    def coefficients(self) -> list[float]:
        return [float(v) for v in self.model.coefficients.toArray()]


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
    def names(self) -> dict[int, str]:
        """KMeans cluster id -> name."""
        return {r.cluster_id: r.name for r in self.regressions}


class FutureValueModelNotFound(FileNotFoundError):
    """No saved future-value model where one was asked for."""

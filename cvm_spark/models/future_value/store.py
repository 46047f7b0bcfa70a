"""Saving and loading the fitted future-value model of a snapshot under the warehouse's
``_models`` folder, and the pipeline's fit-or-load step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.ml import PipelineModel
from pyspark.ml.regression import LinearRegressionModel
from pyspark.sql import DataFrame, SparkSession

from cvm_spark.common.months import add_months
from cvm_spark.common.timing import StageTimer, no_stage
from cvm_spark.config import FeaturesConfig, FutureValueConfig, to_dict
from cvm_spark.models.future_value.fit import fit_future_value
from cvm_spark.models.future_value.model import (
    MANIFEST_VERSION,
    MODEL,
    ClusterRegression,
    FutureValueModel,
    FutureValueModelNotFound,
)
from cvm_spark.models.future_value.score import score
from cvm_spark.models.future_value.training import build_training_set
from cvm_spark.schemas.outputs import MetricRow

log = logging.getLogger(__name__)


def model_dir(root: str, snapshot: date) -> str:
    """``<root>/future_value/<YYYY-MM>``; local roots are made absolute."""
    base = root.rstrip("/") if "://" in root else str(Path(root).resolve())
    return f"{base}/{MODEL}/{snapshot:%Y-%m}"


def save_future_value(model: FutureValueModel, root: str, snapshot: date) -> str:
    """Save the pipeline, the per-cluster regressions and a JSON manifest (overwriting).

    Layout under :func:`model_dir`: ``pipeline/`` (PipelineModel), ``regression/cluster_<id>/``
    (LinearRegressionModel per KMeans id; a pooled fallback is saved under each cluster using
    it) and ``manifest/`` (one text file: JSON with names, features, config and its
    fingerprint, seed and metric rows). The manifest is emptied first and written last, so
    a save that did not finish is not found by :func:`load_future_value`.

    Returns:
        The model directory.
    """
    path = model_dir(root, snapshot)
    spark = SparkSession.active()
    manifest_path = f"{path}/manifest"
    # An empty manifest first: if this save stops half-way over an older model, the
    # directory holds no usable manifest rather than one describing other files.
    spark.createDataFrame([], "value string").coalesce(1).write.mode("overwrite") \
        .text(manifest_path)
    model.pipeline.write().overwrite().save(f"{path}/pipeline")
    for reg in model.regressions:
        reg.model.write().overwrite().save(f"{path}/regression/cluster_{reg.cluster_id}")
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "model": MODEL,
        "snapshot_month": f"{snapshot:%Y-%m}",
        "trained_as_of": f"{add_months(snapshot, -model.config.horizon_months):%Y-%m}",
        "seed": model.seed,
        "config": to_dict(model.config),
        "config_fingerprint": model.config.fingerprint(),
        "clusters": [{"cluster_id": r.cluster_id, "name": r.name, "pooled": r.pooled,
                      "path": f"regression/cluster_{r.cluster_id}"} for r in model.regressions],
        "metrics": [list(m) for m in model.metrics],
    }
    (spark.createDataFrame([(json.dumps(manifest, indent=2),)], "value string")
     .coalesce(1).write.mode("overwrite").text(manifest_path))
    log.info("future value: saved model to %s", path)
    return path


def load_future_value(spark: SparkSession, root: str, snapshot: date) -> FutureValueModel:
    """Load the model saved for ``snapshot`` under ``root``.

    Raises:
        FutureValueModelNotFound: nothing (complete) is saved there.
    """
    path = model_dir(root, snapshot)
    try:
        rows = spark.read.text(f"{path}/manifest", wholetext=True).collect()
    except AnalysisException as exc:
        raise FutureValueModelNotFound(
            f"no future-value model saved for snapshot {snapshot:%Y-%m} under {path} "
            f"(run with retrain to fit one): {str(exc).splitlines()[0]}") from None
    texts = [r.value for r in rows if r.value.strip()]
    if len(texts) != 1:
        raise FutureValueModelNotFound(f"{path}/manifest: expected one manifest file, "
                                       f"found {len(texts)}")
    manifest = json.loads(texts[0])
    try:
        config = FutureValueConfig(**manifest["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}/manifest: settings this version cannot use ({exc}); "
                         f"run with retrain") from None
    pipeline = PipelineModel.load(f"{path}/pipeline")
    regressions = [ClusterRegression(c["cluster_id"], c["name"],
                                     LinearRegressionModel.load(f"{path}/{c['path']}"),
                                     bool(c["pooled"]))
                   for c in manifest["clusters"]]
    metrics = [(m[0], m[1], m[2], float(m[3])) for m in manifest["metrics"]]
    return FutureValueModel(pipeline=pipeline, regressions=regressions, config=config,
                            seed=int(manifest["seed"]), metrics=metrics)


def fit_or_load_future_value(spark: SparkSession, training: DataFrame | None, snapshot: date,
                             cfg: FutureValueConfig, seed: int, model_root: str,
                             retrain: bool = True, stage: StageTimer = no_stage,
                             materialize: Callable[[DataFrame, str], DataFrame] | None = None,
                             partitions: int | None = None) -> FutureValueModel:
    """Train (and save) the snapshot's model, or load the one saved for it.

    Args:
        training: the training set (:func:`training_from_facts`, :func:`build_training_set`);
            read only when ``retrain``.
        snapshot: first day of the snapshot month.
        cfg: future-value settings.
        seed: the run's seed.
        model_root: models go to ``<model_root>/future_value/<YYYY-MM>/`` (the pipeline
            passes ``<warehouse>/_models``).
        retrain: fit and save a new model (overwriting the snapshot's); False reuses the
            saved one.
        stage, materialize, partitions: see :func:`fit_future_value`.

    Raises:
        FutureValueModelNotFound: ``retrain`` is False and nothing is saved for the snapshot.
        ValueError: the saved model was fitted with other settings (config fingerprint).
    """
    if retrain:
        if training is None:
            raise ValueError("retrain needs the training set")
        model = fit_future_value(training, cfg, seed, stage=stage, materialize=materialize,
                                 partitions=partitions)
        save_future_value(model, model_root, snapshot)
        return model
    model = load_future_value(spark, model_root, snapshot)
    if model.config != cfg:
        changed = [f.name for f in dataclasses.fields(cfg)
                   if getattr(cfg, f.name) != getattr(model.config, f.name)]
        raise ValueError(
            f"the future-value model saved for {snapshot:%Y-%m} was fitted with other "
            f"settings (fingerprint {model.config.fingerprint()} != {cfg.fingerprint()}; "
            f"changed: {changed}); run with retrain or restore the settings")
    if model.seed != seed:
        log.info("future value: reusing a model fitted with seed %d (run seed %d)",
                 model.seed, seed)
    return model


def run_future_value(accounts: DataFrame, transactions: DataFrame, monthly_product: DataFrame,
                     features_now: DataFrame, snapshot: date, features_cfg: FeaturesConfig,
                     product_lines: list[str], cfg: FutureValueConfig, seed: int,
                     model_root: str, retrain: bool = True, stage: StageTimer = no_stage
                     ) -> tuple[DataFrame, list[MetricRow]]:
    """:func:`fit_or_load_future_value`, then score the current snapshot (:func:`score`).

    Returns:
        The scores and the metric rows of the fit (read back from the manifest when
        reusing).
    """
    training = (build_training_set(accounts, transactions, monthly_product, snapshot,
                                   features_cfg, product_lines, cfg) if retrain else None)
    model = fit_or_load_future_value(features_now.sparkSession, training, snapshot, cfg, seed,
                                     model_root, retrain=retrain, stage=stage)
    return score(model, features_now), model.metrics

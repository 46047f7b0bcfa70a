"""Saving and loading the fitted future-value model of a snapshot under the warehouse's
``_models`` folder, and the pipeline's fit-or-load step.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession

from cvm_spark.common.threads import side_by_side
from cvm_spark.common.timing import StageTimer, no_stage
from cvm_spark.config import ClvConfig, FeaturesConfig, FutureValueConfig
from cvm_spark.models.future_value.backtest import Origin, backtest_origins, run_backtest
from cvm_spark.models.future_value.fit import REGRESSION_METHODS, fit_future_value, fit_models
from cvm_spark.models.future_value.model import (
    MODEL,
    FutureValueModel,
    FutureValueModelNotFound,
)
from cvm_spark.models.future_value.score import score
from cvm_spark.models.future_value.training import build_facts, training_from_facts
from cvm_spark.schemas.outputs import MetricRow

log = logging.getLogger(__name__)


def model_dir(root: str, snapshot: date) -> str:
    """``<root>/future_value/<YYYY-MM>``; local roots are made absolute."""
    base = root.rstrip("/") if "://" in root else str(Path(root).resolve())
    return f"{base}/{MODEL}/{snapshot:%Y-%m}"


def save_future_value(model: FutureValueModel, root: str, snapshot: date) -> str:
    """Save the model with pyspark.ml's own writer (overwriting the snapshot's).

    What is saved is :meth:`FutureValueModel.as_pipeline_model`: a ``PipelineModel`` of the
    clustering stages and the :class:`ClusterRegressionStage` (regressions, names, settings,
    seed, metric rows), in pyspark.ml's layout under :func:`model_dir` (``metadata/`` and
    ``stages/<i>_<uid>/``). The writer writes the pipeline's metadata first and the
    regression stage last, so a save that did not finish is not loadable
    (:func:`load_future_value` reports it as not found).

    Returns:
        The model directory.
    """
    path = model_dir(root, snapshot)
    model.as_pipeline_model().write().overwrite().save(path)
    log.info("future value: saved model to %s", path)
    return path


# What reading a model directory that is missing, half-written or of another layout raises:
# a missing path (AnalysisException), a stage directory the metadata lists but the save
# never wrote (Py4JJavaError from a Java stage's reader, AnalysisException from a Python
# one), metadata that is not what this version wrote (KeyError, ValueError incl. JSON).
_UNREADABLE = (AnalysisException, Py4JJavaError, KeyError, ValueError, TypeError)


def load_future_value(spark: SparkSession, root: str, snapshot: date) -> FutureValueModel:
    """Load the model saved for ``snapshot`` under ``root`` (pyspark.ml's reader).

    Raises:
        FutureValueModelNotFound: nothing (complete, of this version's layout) is saved there.
    """
    path = model_dir(root, snapshot)
    try:
        loaded = PipelineModel.load(path)
        return FutureValueModel.from_pipeline_model(loaded)
    except _UNREADABLE as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FutureValueModelNotFound(
            f"no complete future-value model saved for snapshot {snapshot:%Y-%m} under "
            f"{path} (run with retrain to fit one): {first}") from None


def fit_or_load_future_value(spark: SparkSession, training: DataFrame | None, snapshot: date,
                             cfg: FutureValueConfig, seed: int, model_root: str,
                             retrain: bool = True, stage: StageTimer = no_stage,
                             materialize: Callable[[DataFrame, str], DataFrame] | None = None,
                             partitions: int | None = None,
                             origins: list[Origin] | None = None,
                             clv_cfg: ClvConfig | None = None,
                             parallel: int = 1) -> FutureValueModel:
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
        origins: the back-test's origins (:func:`backtest_origins`), read only when
            ``retrain`` and ``backtest.origins > 0``: the candidates are back-tested, the
            method chosen (``method: auto``) and the rows added to the model's metrics.
        clv_cfg: the lifetime-value settings (needed when ``btyd_spend`` is a candidate).
        parallel: driver threads for the fits (:func:`cvm_spark.common.threads.side_by_side`):
            with the back-test, the production fit of every regression candidate runs beside
            the origins (then the chosen one is kept), as one stage ``future_value``.

    Raises:
        FutureValueModelNotFound: ``retrain`` is False and nothing is saved for the snapshot.
        ValueError: the saved model was fitted with other settings (config fingerprint).
    """
    if retrain:
        if training is None:
            raise ValueError("retrain needs the training set")
        method, rows = cfg.method, []
        if cfg.backtest.origins > 0:
            if origins is None:
                raise ValueError("the back-test needs its origins (backtest_origins)")
            # the production fit of every regression candidate, beside the back-test that
            # chooses among them (the clustering is shared; one regression more per method)
            candidates = [c for c in cfg.candidates if c in REGRESSION_METHODS]
            fitted_methods = candidates or ["cluster_regression"]
            with stage("future_value"):
                (method, rows), fitted = side_by_side([
                    lambda: run_backtest(origins, cfg, seed, materialize=materialize,
                                         partitions=partitions, clv_cfg=clv_cfg,
                                         parallel=parallel),
                    lambda: fit_models(training, cfg, seed, fitted_methods,
                                       materialize=materialize, partitions=partitions)],
                    parallel)
            # btyd_spend replaces the forecast at scoring (use_btyd_spend); the clusters and
            # the in-time hold-out still come from a regression model
            model = fitted[method if method in fitted else fitted_methods[0]]
        else:
            regression = method if method in REGRESSION_METHODS else next(
                (c for c in cfg.candidates if c in REGRESSION_METHODS), "cluster_regression")
            model = fit_future_value(training, cfg, seed, stage=stage, materialize=materialize,
                                     partitions=partitions, method=regression)
        model = dataclasses.replace(
            model, metrics=[*model.metrics, (MODEL, f"method:{method}", "in_use", 1.0), *rows])
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
                     model_root: str, retrain: bool = True, stage: StageTimer = no_stage,
                     clv_cfg: ClvConfig | None = None) -> tuple[DataFrame, list[MetricRow]]:
    """:func:`fit_or_load_future_value`, then score the current snapshot (:func:`score`).

    Returns:
        The scores and the metric rows of the fit (read back from the saved model
        when reusing).
    """
    facts = build_facts(accounts, transactions, monthly_product, snapshot, features_cfg,
                        product_lines, cfg)
    training = (training_from_facts(facts, snapshot, features_cfg, product_lines, cfg)
                if retrain else None)
    origins = backtest_origins(facts, snapshot, features_cfg, product_lines, cfg)
    model = fit_or_load_future_value(features_now.sparkSession, training, snapshot, cfg, seed,
                                     model_root, retrain=retrain, stage=stage, origins=origins,
                                     clv_cfg=clv_cfg)
    return score(model, features_now), model.metrics

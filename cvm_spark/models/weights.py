"""Weights set in the config by the analytic hierarchy process (:mod:`cvm_spark.common.ahp`)
as ``model_metrics`` rows, so a run records the weights it used and how consistent the
judgements behind them were.
"""

from __future__ import annotations

from cvm_spark.common.ahp import AhpResult
from cvm_spark.config import CONTRIBUTION_PARTS, ValueConfig
from cvm_spark.schemas.outputs import MetricRow

CONTRIBUTION_MODEL = "contribution"


def ahp_metrics(model: str, result: AhpResult) -> list[MetricRow]:
    """``(model, "ahp", metric, value)`` rows: ``consistency_ratio``,
    ``consistency_index`` and ``lambda_max``."""
    return [(model, "ahp", "consistency_ratio", result.consistency_ratio),
            (model, "ahp", "consistency_index", result.consistency_index),
            (model, "ahp", "lambda_max", result.lambda_max)]


def contribution_weight_metrics(cfg: ValueConfig) -> list[MetricRow]:
    """With ``contribution_weights.method: ahp``, the derived weights
    (``(contribution, weight, <part>, w)``) and the AHP consistency rows; nothing for fixed
    weights (they are in the config as typed)."""
    weights = cfg.contribution_weights
    if weights.ahp is None:
        return []
    return [*[(CONTRIBUTION_MODEL, "weight", part, w)
              for part, w in zip(CONTRIBUTION_PARTS, weights.ahp.weights, strict=True)],
            *ahp_metrics(CONTRIBUTION_MODEL, weights.ahp)]

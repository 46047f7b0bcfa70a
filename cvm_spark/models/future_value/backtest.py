"""Out-of-time back-test of the future-value forecast and the choice of its method.

For each origin ``T = t - j * step`` (j = 1..``backtest.origins``) the candidates are fitted
as of ``T`` exactly as the production fit is as of ``t`` (training features as of ``T-H``,
label ``T-H+1 .. T``, the same hold-out), then every account open at the end of ``T`` is
predicted from its features as of ``T`` and compared with the income it realised in
``T+1 .. T+H``. All frames are projections of the account facts (one pass over each input
table for every as-of month, :func:`cvm_spark.models.future_value.training.as_of_aggregates`).
docs/future_value.md has the metrics, the scopes and the rule of ``method: auto``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_spark.common.months import add_months
from cvm_spark.common.threads import side_by_side
from cvm_spark.common.timing import StageTimer, no_stage
from cvm_spark.config import ClvConfig, FeaturesConfig, FutureValueConfig
from cvm_spark.config.future_value import AUTO
from cvm_spark.models.future_value.btyd_spend import BTYD_SPEND, fit_btyd, with_btyd_spend
from cvm_spark.models.future_value.fit import REGRESSION_METHODS, fit_models
from cvm_spark.models.future_value.model import (
    BASELINE,
    CLUSTER_ID,
    LABEL,
    FutureValueModel,
    prediction,
)
from cvm_spark.models.future_value.training import training_from_facts
from cvm_spark.schemas.outputs import MetricRow

log = logging.getLogger(__name__)

BACKTEST = "future_value_backtest"
NAIVE = "naive"
SCOPE = "_bt_scope"  # the cluster name of an evaluated account (per-cluster rows)
SUM_DECIMALS = 6
Materialize = Callable[[DataFrame, str], DataFrame]


@dataclass(frozen=True)
class Origin:
    """One back-test origin: ``training`` (features as of ``T-H``, label ``T-H+1 .. T``)
    and ``evaluation`` (accounts open at ``T``: features as of ``T``, label = realised
    income of ``T+1 .. T+H``, baseline = income of ``T-H+1 .. T``)."""

    month: date
    training: DataFrame
    evaluation: DataFrame


def backtest_origins(facts: DataFrame, snapshot: date, features_cfg: FeaturesConfig,
                     product_lines: list[str], cfg: FutureValueConfig) -> list[Origin]:
    """The origins of ``cfg.backtest`` as projections of the account facts (lazy)."""
    h = cfg.horizon_months
    return [Origin(add_months(snapshot, -o),
                   training_from_facts(facts, snapshot, features_cfg, product_lines, cfg,
                                       offset=o + h),
                   training_from_facts(facts, snapshot, features_cfg, product_lines, cfg,
                                       offset=o))
            for o in cfg.backtest_offsets]


def exact_sum(value: Column) -> Column:
    """``sum(value)`` that is the same whatever order the rows are added in: each value is
    rounded to :data:`SUM_DECIMALS` decimals (``decimal(38, 6)``: 32 integer digits) and the
    decimals are added exactly. Spark merges an aggregate's partial sums in the order its
    tasks finish, so a sum of doubles can differ in its last bits from one run to the next;
    the back-test's rollups span partitions (docs/reliability.md, "Determinism"). A sum beyond
    10^32 (squared errors of absurd amounts) falls back to the plain double sum instead of
    failing the run."""
    exact = value.try_cast(f"decimal(38,{SUM_DECIMALS})")
    total = F.try_sum(exact)
    out_of_range = F.bool_or(exact.isNull() & value.isNotNull())  # or NaN, infinite
    return F.when(~out_of_range & total.isNotNull(), total.cast("double")).otherwise(F.sum(value))


def error_metrics(df: DataFrame, predictions: dict[str, Column], scope: Column,
                  prefix: str) -> list[MetricRow]:
    """Per method and per scope (``overall`` and each value of ``scope``): ``rmse``,
    ``mae``, ``mse_skill`` = 1 - MSE / MSE of the naive forecast (``baseline``), ``bias`` =
    Σ predicted / Σ realised, ``accounts``, ``predicted_mean`` and ``realised_mean`` (per
    account); the naive forecast itself as method ``naive``.
    One ``rollup`` over ``df`` (``label``, ``baseline`` and what the columns read); its sums
    are :func:`exact_sum`, so the rows repeat exactly run after run.

    Scopes are ``<prefix>/<method>/overall`` and ``<prefix>/<method>/cluster:<name>``.
    """
    preds = {NAIVE: F.col(BASELINE), **predictions}
    projected = df.select(scope.alias(SCOPE), F.col(LABEL),
                          *[c.alias(f"_p{i}") for i, c in enumerate(preds.values())])
    aggs = [F.count(F.lit(1)).alias("n"), exact_sum(F.col(LABEL)).alias("real")]
    for i in range(len(preds)):
        err = F.col(f"_p{i}") - F.col(LABEL)
        aggs += [exact_sum(err * err).alias(f"sse{i}"), exact_sum(F.abs(err)).alias(f"sae{i}"),
                 exact_sum(F.col(f"_p{i}")).alias(f"pred{i}")]
    rows: list[MetricRow] = []
    for r in projected.rollup(SCOPE).agg(*aggs).collect():
        where = "overall" if r[SCOPE] is None else f"cluster:{r[SCOPE]}"
        n = float(r["n"])
        for i, method in enumerate(preds):
            rows += _method_rows(f"{prefix}/{method}/{where}", n, r["real"], r[f"sse{i}"],
                                 r[f"sae{i}"], r[f"pred{i}"], r["sse0"])
    return sorted(rows)


def _method_rows(scope: str, n: float, real: float | None, sse: float | None,
                 sae: float | None, pred: float | None, naive_sse: float | None
                 ) -> list[MetricRow]:
    nan = math.nan
    rmse = math.sqrt(sse / n) if n and sse is not None else nan
    mae = sae / n if n and sae is not None else nan
    skill = 1.0 - sse / naive_sse if naive_sse and sse is not None else nan
    bias = pred / real if real and pred is not None else nan
    return [(BACKTEST, scope, "accounts", n), (BACKTEST, scope, "rmse", rmse),
            (BACKTEST, scope, "mae", mae), (BACKTEST, scope, "mse_skill", skill),
            (BACKTEST, scope, "bias", bias),
            (BACKTEST, scope, "predicted_mean", pred / n if n and pred is not None else nan),
            (BACKTEST, scope, "realised_mean", real / n if n and real is not None else nan)]


def evaluate(models: dict[str, FutureValueModel], evaluation: DataFrame, month: date,
             cfg: FutureValueConfig, btyd: bool = False) -> list[MetricRow]:
    """Back-test rows of one origin for the fitted regression candidates (which share one
    clustering): the accounts are clustered once, every method's prediction is a column
    (``btyd_spend``: the :data:`BTYD_SPEND` column of ``evaluation`` when ``btyd``)."""
    preds: dict[str, Column] = {}
    if models:
        first = next(iter(models.values()))
        evaluation = first.pipeline.transform(evaluation)
        names = first.names
        scope = F.element_at(F.array(*[F.lit(names[i]) for i in range(len(names))]),
                             F.col(CLUSTER_ID) + 1)
        preds = {m: prediction(model.regressions, cfg) for m, model in models.items()}
    else:
        scope = F.lit("all")
    if btyd:
        preds["btyd_spend"] = F.col(BTYD_SPEND)
    return error_metrics(evaluation, preds, scope, f"{month:%Y-%m}")


def _with_btyd(evaluation: DataFrame, cfg: FutureValueConfig, clv_cfg: ClvConfig | None
               ) -> DataFrame | None:
    """The evaluation frame with the BTYD expected spend fitted as of the origin (None when
    no usable fit: the method's rows are then missing for that origin)."""
    if clv_cfg is None:
        raise ValueError("the btyd_spend candidate needs the clv settings")
    model = fit_btyd(evaluation, clv_cfg)
    if model is None:
        return None
    return with_btyd_spend(evaluation, model, clv_cfg, cfg.horizon_months)


def choose_method(rows: list[MetricRow], cfg: FutureValueConfig) -> tuple[str, list[MetricRow]]:
    """The method the production forecast uses and the rows recording why.

    Rows ``(future_value_backtest, mean/<method>/overall, mse_skill | rmse | bias, x)``: the
    mean over the origins for every candidate and the naive forecast. ``auto`` takes the
    candidate with the highest mean ``mse_skill`` (ties: the first in ``candidates``) and
    records ``(…, chosen:<method>, mean_mse_skill, x)`` and ``margin`` (its lead over the
    next candidate, NaN with one candidate); a configured method records ``configured = 1``.
    """
    by_method: dict[str, dict[str, list[float]]] = {}
    for _, scope, metric, value in rows:
        parts = scope.split("/")
        if len(parts) == 3 and parts[2] == "overall" and metric in ("mse_skill", "rmse", "bias"):
            by_method.setdefault(parts[1], {}).setdefault(metric, []).append(value)
    means = {m: {k: _mean(v) for k, v in d.items()} for m, d in by_method.items()}
    out: list[MetricRow] = [(BACKTEST, f"mean/{m}/overall", k, v)
                            for m, d in sorted(means.items()) for k, v in sorted(d.items())]
    if cfg.method != AUTO:
        return cfg.method, [*out, (BACKTEST, f"chosen:{cfg.method}", "configured", 1.0)]
    skills = {c: means.get(c, {}).get("mse_skill", math.nan) for c in cfg.candidates}
    ranked = sorted(cfg.candidates, key=lambda c: (math.isnan(skills[c]), -_num(skills[c])))
    chosen = ranked[0]
    margin = skills[chosen] - skills[ranked[1]] if len(ranked) > 1 else math.nan
    log.info("future value: auto chose %s (mean back-test MSE skill %.4g; %s)", chosen,
             skills[chosen], ", ".join(f"{c} {skills[c]:.4g}" for c in ranked[1:]))
    return chosen, [*out, (BACKTEST, f"chosen:{chosen}", "mean_mse_skill", skills[chosen]),
                    (BACKTEST, f"chosen:{chosen}", "margin", margin)]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _num(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def run_backtest(origins: list[Origin], cfg: FutureValueConfig, seed: int,
                 stage: StageTimer = no_stage, materialize: Materialize | None = None,
                 partitions: int | None = None, clv_cfg: ClvConfig | None = None,
                 parallel: int = 1) -> tuple[str, list[MetricRow]]:
    """Fit the candidates at every origin, evaluate them out of time, choose the method.

    The origins run as one stage, ``backtest``, up to ``parallel`` of them side by side
    (:func:`cvm_spark.common.threads.side_by_side`): each is a chain of small Spark jobs
    (one per KMeans iteration), so one origin alone leaves the cores idle between its jobs.
    Each origin's fits read only its own (materialised) frames with their own seeds, so the
    rows are the same in any order.

    Returns:
        (the method the production forecast uses, the back-test's metric rows).
    """
    methods = [m for m in cfg.candidates if m in REGRESSION_METHODS]

    def one(i: int, origin: Origin) -> list[MetricRow]:
        named = (None if materialize is None
                 else (lambda df, name: materialize(df, f"{name}_backtest_{i + 1}")))
        models = (fit_models(origin.training, cfg, seed, methods, materialize=named,
                             partitions=partitions) if methods else {})
        evaluation: DataFrame | None = origin.evaluation
        if "btyd_spend" in cfg.candidates:
            evaluation = _with_btyd(origin.evaluation, cfg, clv_cfg)
        return evaluate(models, evaluation if evaluation is not None else origin.evaluation,
                        origin.month, cfg,
                        btyd=evaluation is not None and "btyd_spend" in cfg.candidates)

    with stage("backtest"):
        per_origin = side_by_side(
            [lambda i=i, o=o: one(i, o) for i, o in enumerate(origins)], parallel)
    rows = [r for origin_rows in per_origin for r in origin_rows]
    method, choice = choose_method(rows, cfg)
    return method, [*rows, *choice]

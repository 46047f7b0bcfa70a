"""The ``btyd_spend`` forecast: the project's BG/NBD + Gamma-Gamma expected spend over the
next H months, ``expected purchases over H x expected average value``.

Only meaningful where income is the customer's spend (a purchase log); on bank data it
forecasts transaction spend, not income. docs/future_value.md has the rule.
"""

from __future__ import annotations

import dataclasses
import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvm_spark.config import DAYS_PER_YEAR, ClvConfig
from cvm_spark.models.btyd import ClvFitError
from cvm_spark.models.clv import ClvModel, add_clv, fit_clv

log = logging.getLogger(__name__)

BTYD_SPEND = "_fv_btyd_spend"


def horizon_config(clv_cfg: ClvConfig, horizon_months: int) -> ClvConfig:
    """``clv_cfg`` with ``horizon_periods`` = H months in BTYD periods (rounded, >= 1)."""
    periods = round(horizon_months * DAYS_PER_YEAR / 12.0 / clv_cfg.period_days)
    return dataclasses.replace(clv_cfg, horizon_periods=max(1, periods))


def with_btyd_spend(df: DataFrame, model: ClvModel, clv_cfg: ClvConfig,
                    horizon_months: int) -> DataFrame:
    """``df`` (with the BTYD columns as of the forecast's origin) plus :data:`BTYD_SPEND`:
    expected purchases over H months x expected average value; 0 where the BTYD summary
    is not valid (no model value)."""
    scored = add_clv(df, model.bg, model.gg, horizon_config(clv_cfg, horizon_months),
                     pairs=model.pairs)
    spend = F.col("expected_purchases") * F.col("expected_avg_value")
    return scored.select(*df.columns, F.coalesce(spend, F.lit(0.0)).alias(BTYD_SPEND))


def fit_btyd(df: DataFrame, clv_cfg: ClvConfig) -> ClvModel | None:
    """BG/NBD + Gamma-Gamma on ``df``'s BTYD columns; None (logged) when not usable."""
    try:
        return fit_clv(df, clv_cfg)
    except ClvFitError as exc:
        log.error("future value: btyd_spend has no usable BG/NBD + Gamma-Gamma fit: %s", exc)
        return None


def use_btyd_spend(df: DataFrame, model: ClvModel | None, clv_cfg: ClvConfig,
                   horizon_months: int) -> DataFrame:
    """``df`` (scored by :func:`add_future_value`, with the BTYD columns) with
    ``future_value`` replaced by the BTYD expected spend (0 for closed accounts). Without a
    usable model the regression's forecast stays (logged)."""
    if model is None:
        log.error("future value: method btyd_spend chosen but the lifetime-value fit is not "
                  "usable; future_value keeps the regression's forecast")
        return df
    spend = with_btyd_spend(df, model, clv_cfg, horizon_months)
    closed = F.coalesce(F.col("is_closed"), F.lit(False)) if "is_closed" in df.columns \
        else F.lit(False)
    return spend.select(*[F.when(closed, F.lit(0.0)).otherwise(F.col(BTYD_SPEND))
                          .alias(c) if c == "future_value" else F.col(c) for c in df.columns])

"""Future value: the out-of-time back-test's metrics, the choice of the method and the
derived (income-scaled) model columns, on tiny hand-checked inputs; config errors.

The end-to-end check (a pipeline run writes back-test rows for every origin and method to
model_metrics) is in tests/test_pipeline_e2e.py.
"""

from __future__ import annotations

import math
import warnings

import pytest
from pyspark.sql import functions as F

from cvm_spark.config import BacktestConfig, ConfigError, FutureValueConfig, bind
from cvm_spark.config.future_value import source_columns
from cvm_spark.models.future_value import BACKTEST, as_of_offsets, choose_method, error_metrics
from cvm_spark.models.future_value.training import label_aggregates, model_values


def _by_key(rows):
    return {(scope, metric): value for _, scope, metric, value in rows}


# --------------------------------------------------------------------------------------------
# Configuration (no Spark)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "global_regression", "candidates": ["cluster_regression"]},
     "method 'global_regression' is not in candidates"),
    ({"method": "ridge"}, "method must be"),
    ({"candidates": ["cluster_regression", "xgboost"]}, "candidates: unknown method 'xgboost'"),
    ({"candidates": []}, "candidates must not be empty"),
    ({"backtest": {"origins": 0}}, "method 'auto' chooses by the back-test"),
    ({"backtest": {"origins": 3, "step_months": 2}}, "backtest.step_months must be 0"),
    ({"backtest": {"origins": -1}}, "backtest.origins must be in 0..12"),
    ({"interactions": [["income_3m"]]}, "interactions[0] must be a pair"),
    ({"interactions": [["income_3m", "income 6m"]]}, "interactions[0] must name plain"),
    ({"interactions": [["income_3m", "arpu_3m"], ["income_3m", "arpu_3m"]]},
     "interactions has duplicates"),
])
def test_config_errors_name_the_key(kwargs, message):
    with pytest.raises(ConfigError) as err:
        bind(FutureValueConfig, kwargs, "future_value")
    assert "future_value." in str(err.value) and message in str(err.value), str(err.value)


def test_config_backtest_off_needs_a_named_method():
    cfg = FutureValueConfig(method="global_regression", backtest=BacktestConfig(origins=0))
    assert cfg.backtest_offsets == []
    assert as_of_offsets(cfg) == [3]


def test_config_columns_and_offsets():
    cfg = FutureValueConfig(features=["income_3m"], cluster_features=["arpu_3m"],
                            interactions=[["income_3m", "inactive_share_12m"],
                                          ["income_3m", "tenure_under_6m"]])
    assert cfg.regression_features == ["income_3m", "income_3m_x_inactive_share_12m",
                                       "income_3m_x_tenure_under_6m"]
    assert cfg.model_columns == [*cfg.regression_features, "arpu_3m"]
    assert cfg.input_columns == ["income_3m", "active_months_12m", "tenure_months", "arpu_3m"]
    assert source_columns("inactive_share_3m") == ["active_months_3m"]
    assert source_columns("income_trend_6m_over_arpu_12m") == ["income_trend_6m", "arpu_12m"]
    # H = 3, three origins 3, 6, 9 months back; each also needs its training as-of (+3)
    assert FutureValueConfig().backtest_offsets == [3, 6, 9]
    assert as_of_offsets(FutureValueConfig()) == [3, 6, 9, 12]
    stepped = FutureValueConfig(backtest=BacktestConfig(origins=2, step_months=6))
    assert as_of_offsets(stepped) == [3, 6, 9, 12, 15]


# --------------------------------------------------------------------------------------------
# Derived columns and label windows (tiny frames)
# --------------------------------------------------------------------------------------------


def test_derived_model_columns(spark):
    cfg = FutureValueConfig(features=["income_3m"],
                            cluster_features=["arpu_3m", "income_3m_over_arpu_3m"],
                            interactions=[["income_3m", "inactive_share_12m"],
                                          ["income_3m", "tenure_under_6m"],
                                          ["income_3m", "income_volatility_12m"]])
    df = spark.createDataFrame(
        [(1, 120.0, 3, 2, 0.5, 40.0), (2, 60.0, 12, 30, None, None)],
        "account_id int, income_3m double, active_months_12m int, tenure_months int, "
        "income_volatility_12m double, arpu_3m double")
    got = {r["account_id"]: r.asDict() for r in df.select("account_id", *model_values(cfg))
           .collect()}
    # account 1: inactive share 1 - 3/12 = 0.75 -> 90; tenure 2 < 6 -> 120; 120 * 0.5 = 60
    assert got[1] == {"account_id": 1, "income_3m": 120.0,
                      "income_3m_x_inactive_share_12m": 90.0,
                      "income_3m_x_tenure_under_6m": 120.0,
                      "income_3m_x_income_volatility_12m": 60.0, "arpu_3m": 40.0,
                      "income_3m_over_arpu_3m": 3.0}
    # account 2: active every month -> 0; tenure 30 -> 0; null volatility / arpu -> 0
    assert got[2] == {"account_id": 2, "income_3m": 60.0,
                      "income_3m_x_inactive_share_12m": 0.0,
                      "income_3m_x_tenure_under_6m": 0.0,
                      "income_3m_x_income_volatility_12m": 0.0, "arpu_3m": 0.0,
                      "income_3m_over_arpu_3m": 0.0}


def test_label_windows_of_every_as_of_month(spark):
    cfg = FutureValueConfig(horizon_months=1, backtest=BacktestConfig(origins=2))
    # k = months back from the snapshot; income k+1 so every window sum is distinct
    rows = spark.createDataFrame([(7, k, float(k + 1)) for k in range(6)],
                                 "account_id int, k int, income double")
    got = rows.groupBy("account_id").agg(*label_aggregates(cfg)).first().asDict()
    # as-of offsets 1, 2, 3; next-H incomes end at 1..4: income of k = end - 1
    assert got == {"account_id": 7, "_fv_next_1": 1.0, "_fv_next_2": 2.0, "_fv_next_3": 3.0,
                   "_fv_next_4": 4.0}


# --------------------------------------------------------------------------------------------
# Back-test metrics and the choice of the method
# --------------------------------------------------------------------------------------------


def test_error_metrics_by_hand(spark):
    df = spark.createDataFrame(
        [("x", 10.0, 8.0, 11.0), ("x", 0.0, 2.0, 1.0), ("y", 5.0, 5.0, 3.0)],
        "c string, label double, baseline double, p double")
    m = _by_key(error_metrics(df, {"global_regression": F.col("p")}, F.col("c"), "2024-09"))
    over = "2024-09/global_regression/overall"
    # errors +1, +1, -2: SSE 6, SAE 4; naive errors -2, +2, 0: SSE 8
    assert m[(over, "accounts")] == 3
    assert m[(over, "rmse")] == pytest.approx(math.sqrt(2))
    assert m[(over, "mae")] == pytest.approx(4 / 3)
    assert m[(over, "mse_skill")] == pytest.approx(1 - 6 / 8)
    assert m[(over, "bias")] == pytest.approx(15 / 15)
    assert m[(over, "predicted_mean")] == pytest.approx(5.0)
    assert m[("2024-09/naive/overall", "rmse")] == pytest.approx(math.sqrt(8 / 3))
    assert m[("2024-09/naive/overall", "mse_skill")] == 0.0
    x = "2024-09/global_regression/cluster:x"
    assert (m[(x, "accounts")], m[(x, "mse_skill")], m[(x, "bias")]) == (2, 0.75, 1.2)
    # the naive forecast is exact in y: the skill is undefined, not infinite
    assert math.isnan(m[("2024-09/global_regression/cluster:y", "mse_skill")])


def test_error_metrics_do_not_depend_on_the_order_of_the_rows(spark):
    """Sums of doubles depend on the order they are added in (1e12 + 0.1 - 1e12 + 0.2 + 0.3
    is 0.59997... one way, 0.6 another); Spark merges partial sums in the order tasks finish.
    The back-test's sums are exact, so any order gives the same rows, value for value."""
    values = [("x", 1e12, 0.0, 0.0), ("x", 0.1, 0.0, 0.0), ("x", -1e12, 0.0, 0.0),
              ("x", 0.2, 0.0, 0.0), ("x", 0.3, 0.0, 0.0)]
    schema = "c string, label double, baseline double, p double"
    assert sum(v[1] for v in values) != sum(v[1] for v in values[2:] + values[:2])  # premise
    results = [_by_key(error_metrics(spark.createDataFrame(rows, schema).repartition(n, "label"),
                                     {"global_regression": F.col("p")}, F.col("c"), "2024-09"))
               for rows, n in ((values, 1), (values[::-1], 3), (values[2:] + values[:2], 5))]
    assert results[0] == results[1] == results[2]
    assert results[0][("2024-09/naive/overall", "realised_mean")] == 0.6 / 5


def test_error_metrics_fall_back_to_double_sums_beyond_decimal_range(spark):
    """Squared errors beyond 10^32 do not fit the exact sum: the double sum is used, no error."""
    df = spark.createDataFrame([("x", 1e20, 0.0, 0.0), ("x", 1.0, 0.0, 0.0)],
                               "c string, label double, baseline double, p double")
    m = _by_key(error_metrics(df, {"global_regression": F.col("p")}, F.col("c"), "2024-09"))
    assert m[("2024-09/naive/overall", "rmse")] == pytest.approx(1e20 / math.sqrt(2))
    assert m[("2024-09/naive/overall", "realised_mean")] == pytest.approx(0.5e20)


def _rows(skills: dict[str, list[float]]):
    return [(BACKTEST, f"2024-{3 * (i + 1):02d}/{method}/overall", "mse_skill", s)
            for method, values in skills.items() for i, s in enumerate(values)]


def test_auto_picks_the_best_mean_skill_and_records_why():
    cfg = FutureValueConfig()
    rows = _rows({"cluster_regression": [0.20, 0.10, 0.15], "global_regression": [0.18, 0.16,
                                                                                  0.20],
                  "naive": [0.0, 0.0, 0.0]})
    method, why = choose_method(rows, cfg)
    assert method == "global_regression"
    m = _by_key(why)
    assert m[("chosen:global_regression", "mean_mse_skill")] == pytest.approx(0.18)
    assert m[("chosen:global_regression", "margin")] == pytest.approx(0.03)
    assert m[("mean/cluster_regression/overall", "mse_skill")] == pytest.approx(0.15)
    assert m[("mean/naive/overall", "mse_skill")] == 0.0


def test_auto_ties_and_configured_method():
    tie = _rows({"cluster_regression": [0.1], "global_regression": [0.1]})
    assert choose_method(tie, FutureValueConfig())[0] == "cluster_regression"
    fixed = FutureValueConfig(method="cluster_regression")
    method, why = choose_method(_rows({"cluster_regression": [0.1],
                                       "global_regression": [0.3]}), fixed)
    assert method == "cluster_regression"
    assert _by_key(why)[("chosen:cluster_regression", "configured")] == 1.0
    # a candidate without a finite skill is never preferred to one with
    nan = _rows({"cluster_regression": [math.nan], "global_regression": [-0.5]})
    assert choose_method(nan, FutureValueConfig())[0] == "global_regression"


# --------------------------------------------------------------------------------------------
# Origins side by side
# --------------------------------------------------------------------------------------------


def test_side_by_side_keeps_task_order_and_the_callers_spark_tags(spark):
    """Results come back in task order whatever finishes first, and the threads' Spark jobs
    carry the caller's local properties (the profile's stage tag)."""
    import time

    from cvm_spark.common.threads import side_by_side

    sc = spark.sparkContext
    sc.setLocalProperty("cvm.test_tag", "backtest")
    try:
        def task(i: int):
            time.sleep(0.05 * (3 - i))                  # the last task finishes first
            n = spark.range(10 + i).count()            # a Spark job from this thread
            return i, n, sc.getLocalProperty("cvm.test_tag")
        with warnings.catch_warnings():
            warnings.simplefilter("error")     # nothing on the user's console
            got = side_by_side([lambda i=i: task(i) for i in range(4)], 3)
    finally:
        sc.setLocalProperty("cvm.test_tag", None)
    assert got == [(i, 10 + i, "backtest") for i in range(4)]
    assert side_by_side([lambda i=i: i * i for i in range(3)], 1) == [0, 1, 4]


def test_side_by_side_tasks_keep_their_own_local_properties(spark):
    """What one task sets on its thread (a job description, the plan recorder's call site)
    does not show in another task's jobs: each task has its own copy of the caller's
    properties. pyspark's session wrapper shares one copy among the functions it wraps."""
    import threading

    from cvm_spark.common.threads import side_by_side

    sc = spark.sparkContext
    both_set = threading.Barrier(2, timeout=30)

    def task(name: str) -> tuple[str | None, str | None]:
        sc.setLocalProperty("cvm.test_own", name)
        both_set.wait()                               # the other task has set its own
        own = sc.getLocalProperty("cvm.test_own")
        both_set.wait()
        sc.setLocalProperty("cvm.test_own", None)
        return own, sc.getLocalProperty("cvm.test_inherited")

    sc.setLocalProperty("cvm.test_inherited", "caller")
    try:
        got = side_by_side([lambda: task("a"), lambda: task("b")], 2)
    finally:
        sc.setLocalProperty("cvm.test_inherited", None)
    assert got == [("a", "caller"), ("b", "caller")]
    assert sc.getLocalProperty("cvm.test_own") is None    # the caller's thread untouched


def test_parallel_fits_is_checked_before_spark_starts():
    from cvm_spark.config.warehouse import PerformanceConfig

    with pytest.raises(ConfigError) as err:
        bind(PerformanceConfig, {"parallel_fits": 0}, "performance")
    assert "performance.parallel_fits must be in 1..32" in str(err.value), str(err.value)
    assert bind(PerformanceConfig, {}, "performance").parallel_fits == 4


def test_side_by_side_raises_the_first_failure_after_every_task_ends(spark):
    from cvm_spark.common.threads import side_by_side

    ended = []

    def ok(i: int) -> int:
        ended.append(i)
        return i

    def fail(message: str) -> int:
        raise ValueError(message)

    with pytest.raises(ValueError, match="first"):
        side_by_side([lambda: ok(0), lambda: fail("first"), lambda: fail("second"),
                      lambda: ok(3)], 2)
    assert sorted(ended) == [0, 3]

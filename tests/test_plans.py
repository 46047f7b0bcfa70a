"""Plan checks as tests: every Spark SQL execution of the first end-to-end run (generate,
validate, quarantine, features, RFM, the value model with its ML fits, every Delta write) is
recorded by ``tests/plan_check.py`` (installed by ``SnapshotRuns`` in conftest.py, so the
shared run is not repeated) and must not funnel row-level data through one partition, run
Python UDFs or bring account-level rows to the driver. The rules and their exceptions are in
docs/plan-checks.md; the self-tests at the end prove each rule fails on a bad query."""

from __future__ import annotations

import re

import pytest
from plan_check import (
    Node,
    PlanRecorder,
    Reduction,
    aggregate_keys,
    check_recording,
    is_global_sort,
    parse_dot,
    window_partition_spec,
)
from pyspark.sql import Window
from pyspark.sql import functions as F

from cvm_spark.storage.delta import table_path

# --------------------------------------------------------------------------- the e2e run

# Output tables whose rows are not accounts (docs/outputs.md: one row per metric, per tier x
# RFM segment x ABC class, per group and KPI, per run x table or stage): reading them is not
# reading account-level data.
SMALL_TABLES = ("model_metrics", "tier_summary", "kpi_summary", "run_log")


def collect_bounds(cfg) -> dict[str, int]:
    """Collect sites whose size is bounded by config rather than by the account count
    (at 400 accounts they may reach it): ``file (function)`` -> most rows allowed."""
    return {
        # bucket sums of the ABC classes: one row per approximate-quantile bucket
        "cvm_spark/segments/tiers.py (fit_abc)": cfg.tiers.abc.points,
        # collapsed BG/NBD (frequency, recency, age) and Gamma-Gamma (frequency, monetary
        # bin) patterns; the code collects them with limit(max_collapsed_rows + 1) and
        # refuses more than max_collapsed_rows
        "cvm_spark/models/clv.py (_collect_collapsed)": cfg.clv.max_collapsed_rows,
    }


@pytest.fixture(scope="module")
def recorded(e2e_runs):
    """The recording of the first run, the accounts it scored and the e2e config."""
    summary = e2e_runs.first(e2e_runs.cfg.snapshot_month)
    recorder = e2e_runs.plan_recorder
    assert recorder is not None, "the first e2e run was not recorded"
    assert recorder.error is None, f"the plan recorder failed: {recorder.error!r}"
    return recorder.recording, summary.rows_written["rfm"], e2e_runs.cfg


def _violations(recorded, rule: str):
    rec, accounts, cfg = recorded
    found = check_recording(rec, accounts, small_tables=SMALL_TABLES,
                            bounds=collect_bounds(cfg))
    return [v for v in found if v.rule == rule]


def _report(violations) -> str:
    return f"{len(violations)} violation(s):\n\n" + "\n\n".join(map(str, violations))


def _module(call_site: str) -> str:
    m = re.search(r"(\S+\.py):\d+", call_site)
    return m.group(1) if m else call_site


@pytest.mark.e2e
def test_the_recording_covers_the_whole_run(spark, recorded):
    rec, accounts, cfg = recorded
    assert accounts > 300
    assert rec.missing_ids == [], (
        f"executions {rec.missing_ids[:10]} left the status store before they were read: "
        "raise spark.sql.ui.retainedExecutions in conftest.py")
    executions = [e for e in rec.executions if e.execution_id is not None]
    assert len(executions) == rec.last_id - rec.first_id + 1 > 50
    assert all(e.roots for e in rec.executions), "an execution without a plan"
    assert rec.read_seconds < 30, rec.read_seconds   # reading the store stays cheap
    # every execution is traced back to the Python code that started it, stage by stage
    assert [e.description for e in executions if e.token is None] == []
    sites = {_module(e.call_site) for e in executions}
    # (validation runs inside the work area's writes: its counts are observed, not collected)
    for module in ("cvm_generate/bank", "cvm_spark/storage/workarea", "cvm_spark/models/loyalty",
                   "cvm_spark/models/clv", "cvm_spark/models/value", "cvm_spark/segments/tiers",
                   "cvm_spark/models/future_value/fit", "cvm_spark/storage/delta",
                   "cvm_spark/pipeline/runner"):
        assert f"{module}.py" in sites, (module, sites)
    # the executions Delta starts inside a write carry the writer's site
    assert any(_module(e.call_site) == "cvm_spark/storage/delta.py"
               and e.root_execution_id != e.execution_id for e in executions)
    # the ML fits: the plans of their inputs
    fits = {e.description for e in rec.executions if e.execution_id is None}
    assert {"input of KMeans.fit", "input of LinearRegression.fit", "input of PCA.fit"} <= fits
    # every collect found its execution, and the run collects what it should
    assert rec.collected and all(rec.collect_execution(c) for c in rec.collected)
    assert {"cvm_spark/models/clv.py", "cvm_spark/models/future_value/fit.py",
            "cvm_spark/segments/tiers.py", "cvm_spark/pipeline/runner.py"} <= \
        {_module(c.call_site) for c in rec.collected}
    # the model's driver-made DataFrames (metrics, pyspark.ml metadata) are driver data
    assert any(s.startswith("Scan ExistingRDD[model#") for s in rec.local_scans)
    # the small tables really have no account rows
    for table in SMALL_TABLES:
        columns = spark.read.format("delta").load(table_path(cfg.output, table)).columns
        assert "account_id" not in columns, table


@pytest.mark.e2e
def test_no_row_level_data_through_one_partition(recorded):
    bad = _violations(recorded, "single-partition")
    assert not bad, _report(bad)


@pytest.mark.e2e
def test_no_python_udf(recorded):
    bad = _violations(recorded, "python-udf")
    assert not bad, _report(bad)


@pytest.mark.e2e
def test_no_account_level_collect(recorded):
    bad = _violations(recorded, "account-collect")
    assert not bad, _report(bad)
    rec, accounts, cfg = recorded
    # only the config-bounded sites come near the account count at 400 accounts
    bounded = collect_bounds(cfg)
    near = {_module(c.call_site) for c in rec.collected if c.rows >= accounts // 2}
    assert near <= {k.split(" ")[0] for k in bounded}, near


# --------------------------------------------------------------------------- the parser


def _dot_node(i: int, name: str, desc: str, metrics: str = "") -> str:
    label = f"<br><b>{name}</b><br><br>{metrics}"   # as SparkPlanGraphNode.makeDotNode
    return f'  {i} [id="node{i}" labelType="html" label="{label}" tooltip="{desc}"];'


# A global count as the status store gives it (SparkPlanGraph.makeDotFile, escapeJava'd),
# with a WholeStageCodegen cluster; edges run from child to parent.
DOT = "\n".join([
    "digraph G {",
    _dot_node(0, "AdaptiveSparkPlan", "AdaptiveSparkPlan isFinalPlan=true"),
    _dot_node(1, "HashAggregate", "HashAggregate(keys=[], functions=[count(1)])",
              "number of output rows: 1"),
    _dot_node(2, "Exchange", "Exchange SinglePartition, ENSURE_REQUIREMENTS, [plan_id=7]"),
    "  subgraph cluster3 {",
    '    isCluster="true";',
    '    label="WholeStageCodegen (1)\\n \\nduration: 5 ms";',
    _dot_node(4, "HashAggregate", "HashAggregate(keys=[], functions=[partial_count(1)])"),
    _dot_node(5, "Scan parquet ", "FileScan parquet [tier#1] Batched: true, Location: "
              "InMemoryFileIndex(1 paths)[file:/w/cvm/tiers_\\u4E2D], ReadSchema: struct<>"),
    "  }",
    "  1->0;", "  2->1;", "  4->2;", "  5->4;",
    "}",
])


def test_parse_dot_builds_the_tree():
    (root,) = parse_dot(DOT)
    assert [n.name for n in root.walk()] == ["AdaptiveSparkPlan", "HashAggregate", "Exchange",
                                             "HashAggregate", "Scan parquet"]
    scan = list(root.walk())[-1]
    assert "[file:/w/cvm/tiers_中]" in scan.desc
    assert root.children[0].metrics == "number of output rows: 1"
    reduction = Reduction(small_limit=10)
    exchange = root.children[0].children[0]
    assert reduction.reduced(exchange) and not reduction.reduced(scan)
    assert Reduction(10, small_tables=["tiers_中"]).reduced(scan)
    assert not Reduction(10, small_tables=["tiers"]).reduced(scan)


def test_description_parsers():
    assert aggregate_keys("HashAggregate(keys=[tier#1, f(x#2)], functions=[count(1)])") \
        == "tier#1, f(x#2)"
    assert aggregate_keys("HashAggregate(keys=[], functions=[count(1)])") == ""
    # Spark 4.1 leaves empty lists out of a node's string
    win = ("Window [rank(x#1) windowspecdefinition(x#1 ASC NULLS FIRST, specifiedwindowframe("
           "RowFrame, unboundedpreceding$(), currentrow$())) AS r#2], ")
    assert window_partition_spec(win + "[x#1 ASC NULLS FIRST]") == ""
    assert window_partition_spec(win + "[account_id#3], [x#1 ASC NULLS FIRST]") == "account_id#3"
    assert window_partition_spec(win + "[account_id#3]") == "account_id#3"
    assert window_partition_spec("Window [count(1) windowspecdefinition(...) AS n#2]") == ""
    assert window_partition_spec("WindowGroupLimit [x#1 ASC NULLS FIRST], rank(x#1), 1, "
                                 "Final") == ""
    assert window_partition_spec("WindowGroupLimit [k#4], [x#1 DESC NULLS LAST], rank(x#1), "
                                 "1, Partial") == "k#4"
    assert is_global_sort("Sort [x#1 ASC NULLS FIRST, f([a]) ASC NULLS FIRST], true, 0")
    assert not is_global_sort("Sort [x#1 ASC NULLS FIRST], false, 0")
    scan = Node(2, "Scan parquet", "FileScan parquet [account_id#4]")
    keyed = Node(1, "HashAggregate", "HashAggregate(keys=[account_id#4], functions=[])",
                 children=[scan])
    assert not Reduction(10).reduced(keyed)
    for limit, reduced in ((10, True), (11, False)):
        node = Node(1, "CollectLimit", f"CollectLimit {limit}", children=[scan])
        assert Reduction(10).reduced(node) is reduced


# --------------------------------------------------------------------------- self-tests


@pytest.fixture(scope="module")
def accounts_df(spark):
    """60 'accounts' in two partitions (a Range with derived columns, no files)."""
    return spark.range(0, 60, 1, 2).select(
        F.col("id").alias("account_id"), (F.col("id") % 3).cast("string").alias("tier"),
        (F.col("id") * 7 % 11).cast("double").alias("value"))


def _record(spark, action):
    with PlanRecorder(spark) as rec:
        action()
    assert rec.error is None, repr(rec.error)
    return check_recording(rec.recording, accounts=60, small_limit=10), rec.recording


def test_self_global_sort_and_full_collect_are_flagged(spark, accounts_df):
    def run():
        accounts_df.orderBy("value").collect()
        accounts_df.coalesce(1).agg(F.sum("value")).collect()

    violations, rec = _record(spark, run)
    whats = [v.what for v in violations if v.rule == "single-partition"]
    assert any("global sort" in w for w in whats), _report(violations)
    assert any("Coalesce 1" in w for w in whats), _report(violations)
    collect = [v.what for v in violations if v.rule == "account-collect"]
    assert any(w.startswith("60 rows reached the driver") for w in collect), collect
    assert any("carry account_id" in w for w in collect), collect
    assert any("row-level" in w for w in collect), collect
    # the messages name the Python line that ran the query
    assert all("test_plans.py" in v.where for v in violations), _report(violations)
    assert [c.rows for c in rec.collected] == [60, 1]


def test_self_window_without_partition_is_flagged(spark, accounts_df):
    w = Window.orderBy("value").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    violations, _ = _record(spark, lambda: accounts_df.select(
        "tier", F.sum("value").over(w).alias("running")).groupBy("tier")
        .agg(F.max("running")).collect())
    whats = [v.what for v in violations if v.rule == "single-partition"]
    assert any("Window without partition keys" in w for w in whats), _report(violations)
    assert any("Exchange SinglePartition" in w for w in whats), _report(violations)
    assert not [v for v in violations if v.rule == "account-collect"], _report(violations)


def test_self_python_udf_is_flagged(spark, accounts_df):
    double = F.udf(lambda v: v * 2.0, "double")
    violations, _ = _record(spark, lambda: accounts_df.select(
        double("value").alias("v")).agg(F.sum("v")).collect())
    assert [v.rule for v in violations] == ["python-udf"], _report(violations)
    assert "BatchEvalPython" in violations[0].fragment


def test_self_account_keyed_aggregate_collect_is_flagged(spark, accounts_df):
    violations, _ = _record(spark, lambda: accounts_df.where(F.col("account_id") < 5)
                            .groupBy("account_id").agg(F.sum("value")).collect())
    # only 5 rows, but keyed by account and carrying account_id: an account-level collect
    assert [v.rule for v in violations] == ["account-collect"] * 2, _report(violations)


def test_self_global_aggregates_and_small_results_pass(spark, accounts_df):
    def run():
        accounts_df.agg(F.percentile_approx("value", [0.25, 0.5, 0.75], 100)).first()
        accounts_df.groupBy("tier").agg(F.count(F.lit(1)).alias("n")).orderBy("tier").collect()
        accounts_df.count()
        accounts_df.select("value").limit(5).collect()
        # driver data funnelled into one file, as pyspark.ml writes a model's metadata
        spark.createDataFrame([("manifest",)], "value string").coalesce(1).collect()

    violations, rec = _record(spark, run)
    assert not violations, _report(violations)
    assert [c.rows for c in rec.collected] == [1, 3, 5, 1]

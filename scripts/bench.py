"""Benchmark the pipeline stages on generated data, next to the fastest single-machine tools.

    bash scripts/bench.sh [options]              # installs the bench extra, then runs this
    python scripts/bench.py --accounts 1000000 [--months 24] [--master local[*]] [--out bench-out]
    python scripts/bench.py --scaling 250000,1000000      # each size in a process of its own

Generates the sample with the project's generator (Parquet under --work; --keep-data reuses
it), runs the snapshot pipeline and reports every stage's wall time (the keys of
RunSummary.stage_seconds, in order), rows per second and the driver's peak memory: the
Python process's RSS and the driver JVM's VmHWM (read from /proc, Linux only).

With references (the default; --no-references skips them) it then writes the accepted
input rows to a Parquet copy in --work (not timed) and times, on that same copy:

* window features: cvm_spark.features.windows.compute_features vs DuckDB SQL computing the same
  columns (same thread count as Spark's cores), compared on a seeded sample of accounts;
* future value: fit_future_value (Spark KMeans + per-cluster LinearRegression) vs
  scikit-learn on the same training matrix;
* lifetime value: cvm_spark.models.clv.fit_and_score vs lifetimes' BG/NBD and Gamma-Gamma on the
  same BTYD summary (capped by --reference-timeout).

Ratios are ours / reference (below 1: we are faster). Results go to --out as JSON and a
markdown table (bench_<N>.json/.md; bench_scaling_<sizes>.json/.md with --scaling).
docs/performance.md explains what each number measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvm_generate import generate_tables, write_tables  # noqa: E402
from cvm_spark.common.session import SPARK_LOG_ENV, build_spark  # noqa: E402
from cvm_spark.config import load_config  # noqa: E402
from cvm_spark.pipeline.profiling import (  # noqa: E402
    large_task_binaries,
    profile_conf,
    profile_log,
    render_profile,
)
from cvm_spark.pipeline.runner import run_snapshot  # noqa: E402

REFERENCE_SCRIPT = ROOT / "scripts" / "bench_reference.py"
INPUTS = ("accounts", "transactions", "monthly_product")
# the targets of issue 6 (docs/performance.md)
TARGET_ACCOUNTS = 1_000_000
FEATURES_RATIO_MAX = 3.0
PIPELINE_SECONDS_MAX = 300.0
GROWTH_SLACK = 1.1            # 250k -> 1M (x4) may grow by at most 4.4x
CLV_SPEEDUP_MIN = 10.0
PYTHON_RSS_GROWTH_MAX = 1.25  # "flat": the driver's Python RSS grows by less than 25 %

log = logging.getLogger("bench")


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def python_peak_rss_mb() -> float:
    """Peak RSS of this Python process (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def java_descendants(root_pid: int | None = None) -> list[int]:
    """Pids of ``java`` processes below ``root_pid`` (this process) in the process tree.

    Linux only (reads /proc/<pid>/stat); an empty list elsewhere.
    """
    children: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        open_, close = text.index("("), text.rindex(")")
        ppid = int(text[close + 2:].split()[1])
        children.setdefault(ppid, []).append((int(stat.parent.name), text[open_ + 1:close]))
    found, todo = [], [root_pid or os.getpid()]
    while todo:
        for pid, comm in children.get(todo.pop(), []):
            if comm == "java":
                found.append(pid)
            todo.append(pid)
    return found


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a process in MB, or None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class MemoryProbe:
    """Peak memory so far of the driver: Python RSS and the JVM child's VmHWM."""

    def __init__(self) -> None:
        self.jvm_pid: int | None = None

    def sample(self) -> dict[str, float | None]:
        if self.jvm_pid is None:
            pids = java_descendants()
            self.jvm_pid = pids[0] if pids else None
        jvm = vm_hwm_mb(self.jvm_pid) if self.jvm_pid else None
        return {"python_peak_rss_mb": python_peak_rss_mb(), "jvm_peak_rss_mb": jvm}


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def run_pipeline(spark: Any, cfg: Any, until: str, probe: MemoryProbe
                 ) -> tuple[Any, float, dict[str, dict[str, float | None]]]:
    """run_snapshot, stopped after ``until`` (``model`` = the whole run, run log included).

    Returns the RunSummary, the wall time of the call and the memory peak after each stage.
    """
    last: list[Any] = [None]
    memory: dict[str, dict[str, float | None]] = {}

    def on_stage(stage: str, summary: Any) -> None:
        last[0] = summary
        memory[stage] = probe.sample()

    start = time.monotonic()
    last[0] = run_snapshot(spark, cfg, on_stage=on_stage, until=until)
    return last[0], time.monotonic() - start, memory


def stage_rows(name: str, summary: Any) -> tuple[int | None, str]:
    """Rows a stage's rows/s is computed on, and what they are.

    Input rows for a stage that read inputs (validate); the table's rows for a stage named
    after a written table (``features``, ``rfm``, ``write.value_scores``); otherwise the
    accounts scored (rows of ``features``).
    """
    read = sum(n for t, n in summary.rows_read.items()
               if summary.table_stages.get(f"input:{t}") == name)
    if read:
        return read, "input rows"
    table = name.rsplit(".", 1)[-1]
    if table in summary.rows_written:
        return summary.rows_written[table], f"{table} rows"
    accounts = summary.rows_written.get("features")
    return (accounts, "accounts") if accounts else (None, "")


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def memory_limit(driver_memory: str) -> str:
    """Spark's ``8g`` / ``512m`` as DuckDB's ``8GB`` / ``512MB``."""
    units = {"k": "KB", "m": "MB", "g": "GB", "t": "TB"}
    unit = driver_memory[-1].lower()
    if unit in units:
        return driver_memory[:-1] + units[unit]
    return driver_memory + "B"   # a plain number of bytes


def run_child(argv: list[str], json_path: Path, timeout: float, threads: int,
              log_path: Path) -> dict[str, Any]:
    """Run one reference (scripts/bench_reference.py) in its own process, with a timeout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    json_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(REFERENCE_SCRIPT), *argv, "--json", str(json_path)]
    start = time.monotonic()
    with open(log_path, "w") as out:
        try:
            proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "timed_out": True}
    if proc.returncode != 0 or not json_path.exists():
        lines = [ln.strip() for ln in log_path.read_text().strip().splitlines() if ln.strip()]
        # the exception line of a traceback (and the message lines after it), else the tail
        last = next((i for i in range(len(lines) - 1, -1, -1)
                     if lines[i].split(":")[0].endswith(("Error", "Exception"))), None)
        tail = lines[last:last + 3] if last is not None else lines[-3:]
        return {"error": f"exit {proc.returncode}: " + " ".join(tail)
                + f" (seconds until then: {time.monotonic() - start:.1f}; log {log_path})"}
    result = json.loads(json_path.read_text())
    result["process_seconds"] = time.monotonic() - start
    return result


def export_inputs(spark: Any, cfg: Any, folder: Path) -> dict[str, int]:
    """Write the accepted rows of the feature inputs to Parquet (the references' copy)."""
    from cvm_spark.contract.reading import read_inputs
    from cvm_spark.contract.validate import validate_inputs

    validated = validate_inputs(read_inputs(spark, cfg.inputs), cfg)
    key = "spark.sql.parquet.outputTimestampType"
    before = spark.conf.get(key)
    spark.conf.set(key, "TIMESTAMP_MICROS")   # a standard timestamp every reader knows
    try:
        for table in INPUTS:
            validated.accepted(table).write.mode("overwrite").parquet(str(folder / table))
    finally:
        spark.conf.set(key, before)
        validated.unpersist()
    return {t: spark.read.parquet(str(folder / t)).count() for t in INPUTS}


def read_copy(spark: Any, folder: Path) -> dict[str, Any]:
    return {t: spark.read.parquet(str(folder / t)) for t in INPUTS}


def features_reference(spark: Any, cfg: Any, args: argparse.Namespace, ref: Path,
                       cores: int, input_rows: int) -> dict[str, Any]:
    """Our window features vs DuckDB on the Parquet copy (both write Parquet)."""
    from cvm_spark.features.windows import compute_features

    ours_out, theirs_out = ref / "features_spark", ref / "features_duckdb.parquet"
    ours, theirs, last = [], [], {}
    for _ in range(args.repeat):
        start = time.monotonic()
        t = read_copy(spark, ref / "inputs")
        compute_features(t["accounts"], t["transactions"], t["monthly_product"], cfg.snapshot,
                         cfg.features, list(cfg.validation.product_lines)) \
            .write.mode("overwrite").parquet(str(ours_out))
        ours.append(time.monotonic() - start)
        last = run_child(["features", "--config", args.config, "--inputs", str(ref / "inputs"),
                          "--out", str(theirs_out), "--threads", str(cores),
                          "--memory-limit", memory_limit(args.driver_memory),
                          "--compare-with", str(ours_out), "--sample", str(args.feature_sample),
                          "--seed", str(cfg.run_seed),
                          "--tolerance", str(args.feature_tolerance)],
                         ref / "features.json", args.reference_timeout, cores,
                         ref / "features.log")
        if "error" in last:
            break
        theirs.append(last["seconds"])
    out: dict[str, Any] = {"ours_seconds": _median(ours), "ours_runs": ours,
                           "input_rows": input_rows,
                           "ours_rows_per_second": input_rows / _median(ours)}
    if "error" in last:
        return {**out, "error": last["error"]}
    comparison = last.get("comparison", {})
    return {**out, "reference": f"DuckDB {last['version']}", "reference_seconds":
            _median(theirs), "reference_runs": theirs, "ratio": _median(ours) / _median(theirs),
            "threads": cores, "settings": last.get("settings"),
            "reference_peak_rss_mb": last.get("peak_rss_mb"), "rows": last.get("rows"),
            "comparison": comparison, "agreement_ok": bool(comparison.get("ok")),
            "agreement": comparison.get("summary", "not compared")}


def future_value_reference(spark: Any, cfg: Any, args: argparse.Namespace, ref: Path,
                           cores: int) -> dict[str, Any]:
    """fit_future_value vs scikit-learn on the same exported training matrix."""
    from cvm_spark.models.future_value import build_training_set, fit_future_value, holdout_flag

    fv, matrix = cfg.future_value, ref / "fv_matrix"
    t = read_copy(spark, ref / "inputs")
    training = build_training_set(t["accounts"], t["transactions"], t["monthly_product"],
                                  cfg.snapshot, cfg.features,
                                  list(cfg.validation.product_lines), fv)
    training.select("*", holdout_flag(cfg.run_seed, fv.holdout_fraction).alias("holdout")) \
        .write.mode("overwrite").parquet(str(matrix))
    ours, theirs, last, model = [], [], {}, None
    for _ in range(args.repeat):
        start = time.monotonic()
        model = fit_future_value(spark.read.parquet(str(matrix)).drop("holdout"), fv,
                                 cfg.run_seed)
        ours.append(time.monotonic() - start)
        last = run_child(["future-value", "--config", args.config, "--matrix", str(matrix)],
                         ref / "future_value.json", args.reference_timeout, cores,
                         ref / "future_value.log")
        if "error" in last or "skipped" in last:
            break
        theirs.append(last["seconds"])
    metrics = {(scope, metric): value for _, scope, metric, value in model.metrics}
    ours_clusters = [{"name": r.name,
                      "size": int(metrics.get((f"cluster:{r.name}", "size"), 0)),
                      "train_rows": int(metrics.get((f"cluster:{r.name}", "train_rows"), 0))}
                     for r in model.regressions]
    kmeans = model.pipeline.stages[-1]
    # within-cluster sum of squares on the standardised train part (sklearn: inertia_)
    ours_cost = kmeans.summary.trainingCost if kmeans.hasSummary else None
    out: dict[str, Any] = {
        "ours_seconds": _median(ours), "ours_runs": ours,
        "rows": int(metrics.get(("overall", "train_rows"), 0)
                    + metrics.get(("overall", "holdout_rows"), 0)),
        "ours_rmse": metrics.get(("overall", "rmse")),
        "baseline_rmse": metrics.get(("overall", "baseline_rmse")),
        "ours_clusters_by_rank": ours_clusters, "ours_kmeans_cost": ours_cost}
    if "error" in last or "skipped" in last:
        return {**out, "error": last.get("error") or last.get("skipped")}
    ref_sizes = [c["size"] for c in last["clusters_by_rank"]]
    our_sizes = [c["size"] for c in ours_clusters]
    ref_cost = last.get("kmeans_inertia")
    cost = (f"; KMeans within-cluster SS {ours_cost:.4g} vs {ref_cost:.4g}"
            if ours_cost is not None and ref_cost is not None else "")
    size_diff = max((abs(a - b) / max(a, 1) for a, b in zip(our_sizes, ref_sizes, strict=False)),
                    default=math.nan)
    rmse_diff = (abs(out["ours_rmse"] - last["rmse"]) / last["rmse"]
                 if last.get("rmse") else math.nan)
    return {**out, "reference": f"scikit-learn {last['version']}",
            "reference_seconds": _median(theirs), "reference_runs": theirs,
            "ratio": _median(ours) / _median(theirs), "threads": cores,
            "reference_rmse": last["rmse"], "reference_clusters_by_rank":
            last["clusters_by_rank"], "reference_peak_rss_mb": last.get("peak_rss_mb"),
            "cluster_size_max_rel_diff": size_diff, "rmse_rel_diff": rmse_diff,
            "agreement": (f"hold-out RMSE {out['ours_rmse']:.4g} vs {last['rmse']:.4g} "
                          f"({100 * rmse_diff:.1f} %; naive baseline "
                          f"{out['baseline_rmse']:.4g}); cluster sizes by rank "
                          f"{our_sizes} vs {ref_sizes}{cost}")}


def clv_reference(spark: Any, cfg: Any, args: argparse.Namespace, ref: Path,
                  cores: int) -> dict[str, Any]:
    """fit_and_score (collapse, fit, score over every account) vs lifetimes."""
    from pyspark.sql import functions as F

    from cvm_spark.features.windows import BTYD_COLUMNS
    from cvm_spark.models.btyd import ClvFitError
    from cvm_spark.models.clv import fit_and_score

    summary_dir = ref / "btyd_summary"
    spark.read.parquet(str(ref / "features_spark")).select("account_id", *BTYD_COLUMNS) \
        .write.mode("overwrite").parquet(str(summary_dir))
    ours, fit_times, theirs, last, row, metrics = [], [], [], {}, None, []
    for _ in range(args.repeat):
        start = time.monotonic()
        try:
            scores, metrics = fit_and_score(spark.read.parquet(str(summary_dir)), cfg.clv)
        except ClvFitError as exc:
            return {"error": f"our fit failed: {exc}"}
        fit_times.append(time.monotonic() - start)
        # the action that scores every account (all model columns are aggregated)
        row = scores.agg(F.count(F.lit(1)).alias("rows"),
                         F.avg("expected_purchases").alias("expected_purchases"),
                         F.avg("prob_alive").alias("prob_alive"),
                         F.avg("expected_avg_value").alias("expected_avg_value"),
                         F.avg("clv_discounted").alias("clv_discounted")).first()
        ours.append(time.monotonic() - start)
        last = run_child(["lifetimes", "--config", args.config, "--summary", str(summary_dir)],
                         ref / "lifetimes.json", args.reference_timeout, cores,
                         ref / "lifetimes.log")
        if "error" in last:
            break
        theirs.append(last)
    params = {(model, metric): value for model, _, metric, value in metrics}
    out: dict[str, Any] = {
        "ours_seconds": _median(ours), "ours_runs": ours, "ours_fit_seconds":
        _median(fit_times), "rows": row["rows"] if row else None,
        "ours_bgnbd": {p: params.get(("bgnbd", p)) for p in ("r", "alpha", "a", "b")},
        "ours_gamma_gamma": {p: params.get(("gamma_gamma", p)) for p in ("p", "q", "v")},
        "ours_means": {k: row[k] for k in ("expected_purchases", "prob_alive",
                                           "expected_avg_value")} if row else {}}
    if "error" in last:
        return {**out, "error": last["error"]}

    def med(key: str) -> float:
        return _median([r[key] for r in theirs])

    def rel(ours_: dict, theirs_: dict) -> float:
        return max(abs(ours_[k] - theirs_[k]) / abs(theirs_[k]) for k in theirs_)

    bg_diff = rel(out["ours_bgnbd"], last["bgnbd"])
    gg_diff = rel(out["ours_gamma_gamma"], last["gamma_gamma"])
    means_ref = {"expected_purchases": last["mean_expected_purchases"],
                 "prob_alive": last["mean_prob_alive"],
                 "expected_avg_value": last["mean_expected_avg_value"]}
    means_diff = rel(out["ours_means"], means_ref)
    bg_seconds = med("bgnbd_seconds")
    return {**out, "reference": f"lifetimes {last['version']}",
            "reference_seconds": med("seconds"), "reference_bgnbd_seconds": bg_seconds,
            "reference_runs": theirs, "ratio": _median(ours) / med("seconds"),
            "speedup_vs_bgnbd": bg_seconds / _median(ours),
            "reference_bgnbd": last["bgnbd"], "reference_gamma_gamma": last["gamma_gamma"],
            "reference_means": means_ref, "reference_peak_rss_mb": last.get("peak_rss_mb"),
            "bgnbd_param_max_rel_diff": bg_diff, "gamma_gamma_param_max_rel_diff": gg_diff,
            "mean_score_max_rel_diff": means_diff,
            "agreement_ok": bg_diff <= args.param_tolerance,
            "agreement": (f"BG/NBD params max rel diff {bg_diff:.1e}, Gamma-Gamma "
                          f"{gg_diff:.1e} (ours log-bins monetary), mean scores {means_diff:.1e}")}


def run_references(spark: Any, cfg: Any, args: argparse.Namespace, work: Path,
                   fresh_data: bool, cores: int) -> dict[str, Any]:
    ref = work / "ref"
    marker = ref / "inputs" / "_bench_rows.json"
    if fresh_data or not marker.exists():
        shutil.rmtree(ref / "inputs", ignore_errors=True)
        log.info("references: writing the Parquet copy of the accepted inputs to %s", ref)
        counts = export_inputs(spark, cfg, ref / "inputs")
        marker.write_text(json.dumps(counts))
    counts = json.loads(marker.read_text())
    out: dict[str, Any] = {"copy": str(ref / "inputs"), "copy_rows": counts}
    log.info("references: window features (ours vs DuckDB)")
    out["features"] = features_reference(spark, cfg, args, ref, cores, sum(counts.values()))
    log.info("references: future value (ours vs scikit-learn)")
    out["future_value"] = future_value_reference(spark, cfg, args, ref, cores)
    if "error" in out["features"] and not (ref / "features_spark").exists():
        out["clv"] = {"error": "no features to summarise"}
    else:
        log.info("references: lifetime value (ours vs lifetimes)")
        out["clv"] = clv_reference(spark, cfg, args, ref, cores)
    return out


# --------------------------------------------------------------------------------------------
# One size
# --------------------------------------------------------------------------------------------


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work) / f"a{args.accounts}_m{args.months}"
    overrides = {"generator.accounts": args.accounts, "generator.months": args.months,
                 "inputs.root": str(work / "data"), "output.warehouse": str(work / "wh")}
    cfg = load_config(args.config, overrides)
    extra: dict[str, str] = {}
    events = work / "events"
    if args.profile:
        # the event log (per-stage jobs, tasks, shuffle, plans) and Spark's log file (the
        # task-binary warnings) of this process, read back after the pipeline
        shutil.rmtree(events, ignore_errors=True)
        events.mkdir(parents=True)
        extra = profile_conf(str(events))
        os.environ[SPARK_LOG_ENV] = str(work / "spark.log")
        (work / "spark.log").unlink(missing_ok=True)
    spark = build_spark("cvm-bench", master=args.master,
                        conf={**cfg.spark, "spark.driver.memory": args.driver_memory, **extra})
    cores = spark.sparkContext.defaultParallelism
    probe = MemoryProbe()
    runs: dict[str, list[float]] = {}
    fresh = not (args.keep_data and (work / "data" / "accounts").exists())
    if fresh:
        start = time.monotonic()
        write_tables(generate_tables(spark, cfg.generator, cfg.snapshot, cfg.validation),
                     cfg.inputs.root, cfg.inputs.format)
        runs["generate"] = [time.monotonic() - start]
    walls, memory_by_stage, summary = [], {}, None
    for i in range(args.repeat):
        # a database per repetition: the catalog never points at a deleted warehouse
        cfg_i = load_config(args.config, {**overrides, "output.database": f"cvm_bench{i}"})
        shutil.rmtree(work / "wh", ignore_errors=True)
        summary, wall, memory_by_stage = run_pipeline(spark, cfg_i, args.until, probe)
        walls.append(wall)
        for name, seconds in summary.stage_seconds.items():
            runs.setdefault(name, []).append(seconds)
    memory_pipeline = probe.sample()
    profile = None
    if args.profile:
        # the last repetition's jobs (each repetition has a run id of its own)
        run_profile = profile_log(events / f"{spark.sparkContext.applicationId}.inprogress",
                                  summary.run_id)
        log_file = work / "spark.log"
        binaries = large_task_binaries(log_file.read_text(errors="replace")
                                       if log_file.exists() else "")
        profile = {**run_profile.to_dict(), "large_task_binaries_kib": binaries,
                   "table": render_profile(run_profile, summary.stage_seconds)}
    references = (run_references(spark, cfg, args, work, fresh, cores) if args.references
                  else None)
    memory_final = probe.sample()
    spark_version = spark.version
    spark.stop()

    input_rows = sum(summary.rows_read.values())
    stages: dict[str, dict[str, Any]] = {}
    for name, values in runs.items():
        rows, basis = ((input_rows, "input rows generated") if name == "generate"
                       else stage_rows(name, summary))
        seconds = _median(values)
        parent = name.rsplit(".", 1)[0] if "." in name else None
        stages[name] = {"seconds": seconds, "runs": values, "rows": rows, "basis": basis,
                        "rows_per_second": rows / seconds if rows and seconds > 0 else None,
                        "sub_stage_of": parent if parent in runs else None}
    top = sum(v["seconds"] for k, v in stages.items()
              if k != "generate" and v["sub_stage_of"] is None)
    results: dict[str, Any] = {
        "accounts": args.accounts, "months": args.months, "master": args.master,
        "cores": cores, "driver_memory": args.driver_memory, "repeat": args.repeat,
        "until": args.until, "snapshot_month": cfg.snapshot_month,
        "versions": {"python": platform.python_version(), "spark": spark_version,
                     "platform": platform.platform()},
        "input_rows": input_rows, "rows_read": summary.rows_read,
        "rows_written": summary.rows_written, "stages": stages,
        "pipeline_seconds": _median(walls), "pipeline_runs": walls,
        "pipeline_stage_sum_seconds": top,
        "memory": {"after_pipeline": memory_pipeline, "after_references": memory_final,
                   "by_stage": memory_by_stage,
                   "note": "Python: ru_maxrss of the bench process; JVM: VmHWM of its java "
                           "child from /proc (Linux only; null elsewhere). In local mode the "
                           "driver JVM also runs the executors."},
        "references": references,
        "profile": profile,
    }
    results["targets"] = targets(results)
    return results


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def _at_scale(accounts: int) -> str:
    return ("" if accounts >= TARGET_ACCOUNTS else
            f" (measured at {accounts:,} accounts; the target is stated at "
            f"{TARGET_ACCOUNTS:,})")


def _speed(speedup: float) -> str:
    """``12.5x faster`` / ``3.2x slower`` for a reference time / our time."""
    return f"{speedup:.3g}x faster" if speedup >= 1 else f"{1 / speedup:.3g}x slower"


def _status(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "not met")


def targets(results: dict[str, Any], scaling: dict[str, Any] | None = None
            ) -> list[dict[str, Any]]:
    """The issue's targets with the measured numbers (met / not met / not measured)."""
    n = results["accounts"]
    refs = results.get("references") or {}
    rows = []
    feat = refs.get("features", {})
    ratio = feat.get("ratio")
    rows.append({"target": f"window features within {FEATURES_RATIO_MAX:g}x of DuckDB at 1M",
                 "measured": (f"{ratio:.2f}x" + _at_scale(n)) if ratio else
                 feat.get("error", "no references run"),
                 "status": _status(None if ratio is None else ratio <= FEATURES_RATIO_MAX)})
    whole = results["until"] == "model"
    rows.append({"target": f"whole pipeline (generate excluded) at 1M < "
                           f"{PIPELINE_SECONDS_MAX / 60:g} min",
                 "measured": (f"{results['pipeline_seconds']:.1f} s" + _at_scale(n)) if whole
                 else "--until rfm: not the whole pipeline",
                 "status": _status(results["pipeline_seconds"] < PIPELINE_SECONDS_MAX
                                   if whole else None)})
    clv = refs.get("clv", {})
    speedup = clv.get("speedup_vs_bgnbd")
    diff = clv.get("bgnbd_param_max_rel_diff")
    rows.append({"target": f"BG/NBD fit + scoring >= {CLV_SPEEDUP_MIN:g}x faster than "
                           f"lifetimes, parameters within 1e-3 relative",
                 "measured": (f"ours {_speed(speedup)}, params max rel diff {diff:.1e}"
                              + _at_scale(n)) if speedup else
                 clv.get("error", "no references run"),
                 "status": _status(None if speedup is None else
                                   speedup >= CLV_SPEEDUP_MIN and diff <= 1e-3)})
    if scaling is None:
        rows.append({"target": "stage growth 250k -> 1M <= 4.4x", "measured": "needs --scaling",
                     "status": "not measured"})
        rows.append({"target": "driver memory flat in accounts", "measured": "needs --scaling",
                     "status": "not measured"})
    else:
        timed = [(k, v) for k, v in scaling["stages"].items()
                 if k != "generate" and v["growth"] is not None]
        worst = max(timed, key=lambda kv: kv[1]["growth"], default=(None, {"growth": None}))
        limit = scaling["growth_limit"]
        rows.append({"target": f"every stage grows <= {limit:.2f}x from "
                               f"{scaling['sizes'][0]:,} to {scaling['sizes'][-1]:,} accounts "
                               f"({GROWTH_SLACK:g} x the size ratio)",
                     "measured": (f"worst: {worst[0]} {worst[1]['growth']:.2f}x; over: "
                                  + (", ".join(scaling["over_limit"]) or "none"))
                     if worst[0] else "no stages",
                     "status": _status(not scaling["over_limit"] if worst[0] else None)})
        mem = scaling["memory"]
        g = mem.get("python_growth")
        rows.append({"target": f"driver memory flat in accounts (Python RSS growth < "
                               f"{PYTHON_RSS_GROWTH_MAX:g}x)",
                     "measured": (f"Python RSS {g:.2f}x, JVM VmHWM "
                                  + (f"{mem['jvm_growth']:.2f}x" if mem.get("jvm_growth")
                                     else "n/a")) if g else "n/a",
                     "status": _status(None if g is None else g < PYTHON_RSS_GROWTH_MAX)})
    return rows


def agreement_failures(results: dict[str, Any]) -> list[str]:
    """Reference checks that failed (what --strict exits non-zero on)."""
    refs = results.get("references") or {}
    failures = []
    feat = refs.get("features", {})
    if feat and not feat.get("agreement_ok"):
        failures.append("window features: " + feat.get("agreement", feat.get("error", "")))
    clv = refs.get("clv", {})
    if clv and not clv.get("agreement_ok"):
        failures.append("BG/NBD parameters: " + clv.get("agreement", clv.get("error", "")))
    return failures


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else fmt.format(value)


def _mb(value: float | None) -> str:
    return "n/a (Linux only)" if value is None else f"{value:,.0f} MB"


def render(results: dict[str, Any]) -> str:
    """The markdown report of one size."""
    r = results
    lines = [f"# Benchmark: {r['accounts']:,} accounts x {r['months']} months", "",
             f"master {r['master']} ({r['cores']} cores), driver memory {r['driver_memory']}, "
             f"snapshot {r['snapshot_month']}, input rows {r['input_rows']:,}, "
             f"{r['repeat']} repetition(s) (medians), Spark {r['versions']['spark']}, "
             f"Python {r['versions']['python']}", "",
             "## Stages", "", "| stage | seconds | rows | rows/s |", "|---|---:|---:|---:|"]
    for name, v in r["stages"].items():
        label = f"&nbsp;&nbsp;{name}" if v["sub_stage_of"] else name
        rows = f"{v['rows']:,} {v['basis']}" if v["rows"] else ""
        lines.append(f"| {label} | {v['seconds']:.1f} | {rows} | "
                     f"{_f(v['rows_per_second'], '{:,.0f}')} |")
    lines += [f"| **pipeline wall time (generate excluded)** | **{r['pipeline_seconds']:.1f}** "
              f"| | |", "",
              "Sub-stages (indented) are included in their parent's time. The pipeline wall "
              "time is the whole `run_snapshot` call (" +
              ("up to the run log" if r["until"] == "model" else f"stopped after {r['until']}")
              + ").", "",
              f"Driver peak memory after the pipeline: Python RSS "
              f"{_mb(r['memory']['after_pipeline']['python_peak_rss_mb'])}, JVM VmHWM "
              f"{_mb(r['memory']['after_pipeline']['jvm_peak_rss_mb'])}; after the references: "
              f"Python {_mb(r['memory']['after_references']['python_peak_rss_mb'])}, JVM "
              f"{_mb(r['memory']['after_references']['jvm_peak_rss_mb'])} (local mode: the "
              f"driver JVM also runs the executors)."]
    prof = r.get("profile")
    if prof:
        binaries = prof["large_task_binaries_kib"]
        lines += ["", "## Spark profile (from the event log; `--profile`)", "", "```",
                  prof["table"], "```", "",
                  "Large task binaries (Spark's warning, > 1,000 KiB): "
                  + (", ".join(f"{b:,.0f} KiB" for b in binaries) if binaries else "none")
                  + "."]
    refs = r.get("references")
    if refs:
        lines += ["", "## References (same Parquet copy of the accepted inputs)", "",
                  "| work | ours (s) | reference | reference (s) | ours / reference | "
                  "agreement |", "|---|---:|---|---:|---:|---|"]
        names = {"features": "window features (read Parquet, write Parquet)",
                 "future_value": "future value: KMeans + per-cluster regression fit",
                 "clv": "BG/NBD + Gamma-Gamma: fit and score every account"}
        for key, label in names.items():
            v = refs.get(key, {})
            if "error" in v:
                lines.append(f"| {label} | {_f(v.get('ours_seconds'))} | | | | "
                             f"{v['error']} |")
                continue
            lines.append(f"| {label} | {v['ours_seconds']:.1f} | {v['reference']} | "
                         f"{v['reference_seconds']:.1f} | {v['ratio']:.2f} | "
                         f"{v['agreement']} |")
        clv = refs.get("clv", {})
        if "speedup_vs_bgnbd" in clv:
            lines.append(f"| BG/NBD only (ours: the whole row above) | {clv['ours_seconds']:.1f}"
                         f" | {clv['reference']} BetaGeoFitter fit + 2 predictions | "
                         f"{clv['reference_bgnbd_seconds']:.1f} | "
                         f"{1 / clv['speedup_vs_bgnbd']:.2f} | "
                         f"ours {_speed(clv['speedup_vs_bgnbd'])} |")
        feat = refs.get("features", {})
        if feat.get("threads"):
            lines += ["", f"DuckDB ran with {feat['threads']} threads (= Spark's cores) and "
                      f"memory_limit {memory_limit(r['driver_memory'])} (= the driver memory); "
                      f"every reference runs in a process of its own (its peak RSS is not the "
                      f"driver's)."]
        if feat.get("comparison", {}).get("examples"):
            lines += ["", "Feature mismatches (first ones):", ""]
            lines += [f"- {e['account_id']} {e['column']}: ours {e['ours']}, DuckDB "
                      f"{e['reference']}" for e in feat["comparison"]["examples"][:10]]
    lines += ["", "## Targets", "", "| target | measured | status |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['status']} |" for t in r["targets"]]
    return "\n".join(lines) + "\n"


def scaling_summary(per_size: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth of every stage (and reference) from the smallest to the largest size."""
    per_size = sorted(per_size, key=lambda r: r["accounts"])
    sizes = [r["accounts"] for r in per_size]
    size_ratio = sizes[-1] / sizes[0]
    limit = GROWTH_SLACK * size_ratio
    names: list[str] = []
    for r in per_size:
        names += [k for k in r["stages"] if k not in names]
    stages = {}
    for name in names:
        secs = [r["stages"].get(name, {}).get("seconds") for r in per_size]
        growth = secs[-1] / secs[0] if secs[0] and secs[-1] else None
        stages[name] = {"seconds": secs, "growth": growth}
    stages["pipeline (wall)"] = {"seconds": [r["pipeline_seconds"] for r in per_size],
                                 "growth": per_size[-1]["pipeline_seconds"]
                                 / per_size[0]["pipeline_seconds"]}
    references = {}
    for key in ("features", "future_value", "clv"):
        ours = [((r.get("references") or {}).get(key) or {}).get("ours_seconds")
                for r in per_size]
        theirs = [((r.get("references") or {}).get(key) or {}).get("reference_seconds")
                  for r in per_size]
        references[key] = {"ours": ours, "reference": theirs,
                           "ours_growth": ours[-1] / ours[0] if ours[0] and ours[-1] else None,
                           "reference_growth": theirs[-1] / theirs[0]
                           if theirs[0] and theirs[-1] else None}
    py = [r["memory"]["after_pipeline"]["python_peak_rss_mb"] for r in per_size]
    jvm = [r["memory"]["after_pipeline"]["jvm_peak_rss_mb"] for r in per_size]
    memory = {"python_peak_rss_mb": py, "jvm_peak_rss_mb": jvm,
              "python_growth": py[-1] / py[0] if py[0] else None,
              "jvm_growth": jvm[-1] / jvm[0] if jvm[0] and jvm[-1] else None}
    over = [k for k, v in stages.items() if k != "generate" and v["growth"] is not None
            and v["growth"] > limit]
    out = {"sizes": sizes, "size_ratio": size_ratio, "growth_limit": limit, "stages": stages,
           "references": references, "memory": memory, "over_limit": over}
    out["targets"] = targets(per_size[-1], out)
    return out


def render_scaling(s: dict[str, Any]) -> str:
    sizes = s["sizes"]
    head = " | ".join(f"{n:,} (s)" for n in sizes)
    lines = [f"# Scaling: {' -> '.join(f'{n:,}' for n in sizes)} accounts", "",
             f"Growth = time at {sizes[-1]:,} / time at {sizes[0]:,} (size ratio "
             f"{s['size_ratio']:.2f}; linear scaling = {s['size_ratio']:.2f}x, the limit is "
             f"{s['growth_limit']:.2f}x). Each size ran in a fresh process and Spark session.",
             "", f"| stage | {head} | growth |", "|---|" + "---:|" * (len(sizes) + 1)]
    for name, v in s["stages"].items():
        cells = " | ".join(_f(x) for x in v["seconds"])
        mark = " (over)" if name in s["over_limit"] else ""
        lines.append(f"| {name} | {cells} | {_f(v['growth'], '{:.2f}x')}{mark} |")
    lines += ["", "| reference | " + " | ".join(f"ours / ref at {n:,}" for n in sizes)
              + " | growth ours | growth reference |", "|---|" + "---:|" * (len(sizes) + 2)]
    for key, v in s["references"].items():
        cells = " | ".join(f"{_f(o)} / {_f(t)}" for o, t in zip(v["ours"], v["reference"],
                                                                strict=True))
        lines.append(f"| {key} | {cells} | {_f(v['ours_growth'], '{:.2f}x')} | "
                     f"{_f(v['reference_growth'], '{:.2f}x')} |")
    m = s["memory"]
    lines += ["", "| driver peak memory | " + " | ".join(f"{n:,}" for n in sizes)
              + " | growth |", "|---|" + "---:|" * (len(sizes) + 1),
              "| Python RSS (MB) | " + " | ".join(_f(x, "{:,.0f}") for x in
                                                 m["python_peak_rss_mb"])
              + f" | {_f(m['python_growth'], '{:.2f}x')} |",
              "| JVM VmHWM (MB) | " + " | ".join(_f(x, "{:,.0f}") for x in m["jvm_peak_rss_mb"])
              + f" | {_f(m['jvm_growth'], '{:.2f}x')} |",
              "", "## Targets", "", "| target | measured | status |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['status']} |" for t in s["targets"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


PASS_THROUGH = ("months", "config", "master", "driver_memory", "work", "until", "repeat",
                "reference_timeout", "feature_sample", "feature_tolerance", "param_tolerance")


def child_argv(args: argparse.Namespace, accounts: int) -> list[str]:
    """This script's arguments for one size of a scaling run."""
    argv = ["--accounts", str(accounts), "--out", args.out]
    for name in PASS_THROUGH:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    argv += ["--references" if args.references else "--no-references"]
    argv += ["--keep-data"] if args.keep_data else []
    argv += ["--strict"] if args.strict else []
    argv += ["--profile"] if args.profile else []
    return argv


def run_scaling(args: argparse.Namespace) -> int:
    sizes = sorted(int(s) for s in args.scaling.split(","))
    if len(sizes) < 2:
        raise SystemExit("--scaling needs at least two sizes, e.g. 250000,1000000")
    out = Path(args.out)
    per_size, code = [], 0
    for n in sizes:
        log.info("scaling: %d accounts in a fresh process", n)
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                               *child_argv(args, n)], check=False)
        result = out / f"bench_{n}.json"
        if proc.returncode not in (0, 1) or not result.exists():
            raise SystemExit(f"scaling: the run with {n} accounts failed "
                             f"(exit {proc.returncode})")
        code = max(code, proc.returncode)
        per_size.append(json.loads(result.read_text()))
    summary = scaling_summary(per_size)
    stem = out / f"bench_scaling_{'_'.join(str(n) for n in sizes)}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str))
    text = render_scaling(summary)
    stem.with_suffix(".md").write_text(text)
    print(text)
    return code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--config", default=str(ROOT / "conf" / "cvm.yaml"))
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--work", default="/tmp/cvm-bench")
    parser.add_argument("--out", default=str(ROOT / "bench-out"))
    parser.add_argument("--until", choices=["rfm", "model"], default="model",
                        help="stop after this stage (rfm = the foundation: validate, "
                             "features, RFM)")
    parser.add_argument("--keep-data", action="store_true",
                        help="reuse generated data (and its Parquet copy) in --work")
    parser.add_argument("--references", action=argparse.BooleanOptionalAction, default=True,
                        help="time DuckDB, scikit-learn and lifetimes on the same data")
    parser.add_argument("--scaling", default=None, metavar="N1,N2",
                        help="run each size in a fresh process and report the growth per "
                             "stage (e.g. 250000,1000000); --accounts is ignored")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the pipeline and each reference N times; report medians")
    parser.add_argument("--reference-timeout", type=float, default=1800.0,
                        help="seconds after which a reference process is stopped")
    parser.add_argument("--feature-sample", type=int, default=1000,
                        help="accounts compared column by column (seeded)")
    parser.add_argument("--feature-tolerance", type=float, default=1e-6,
                        help="relative (and absolute) tolerance of the feature comparison")
    parser.add_argument("--param-tolerance", type=float, default=1e-3,
                        help="largest relative BG/NBD parameter difference that agrees")
    parser.add_argument("--profile", action="store_true",
                        help="write the Spark event log and report jobs, stages, tasks, task "
                             "time, shuffle, spill and the largest plan per pipeline stage")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when the features or the BG/NBD parameters disagree")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.scaling:
        return run_scaling(args)
    results = run_once(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench_{args.accounts}"
    failures = agreement_failures(results)
    results["agreement_failures"] = failures
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    text = render(results)
    stem.with_suffix(".md").write_text(text)
    print(text)
    for failure in failures:
        print(f"DISAGREEMENT: {failure}", file=sys.stderr)
    return 1 if args.strict and failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the pipeline stages on generated data.

    python scripts/bench.py --accounts 1000000 [--months 24] [--master local[*]] [--out bench-out]

Generates the sample with the project's generator (Parquet under --work), then runs the
snapshot pipeline and reports each stage's wall time, rows per second and the driver's peak
memory (Python process RSS) as JSON and a markdown table in --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvm_spark.config import load_config  # noqa: E402
from cvm_spark.generate import generate_tables, write_tables  # noqa: E402
from cvm_spark.pipeline import run_snapshot  # noqa: E402
from cvm_spark.session import build_spark  # noqa: E402


def main() -> int:
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
                        help="reuse generated data in --work if it is there")
    args = parser.parse_args()

    work = Path(args.work) / f"a{args.accounts}_m{args.months}"
    cfg = load_config(args.config, {
        "generator.accounts": args.accounts, "generator.months": args.months,
        "inputs.root": str(work / "data"), "output.warehouse": str(work / "wh"),
    })
    shutil.rmtree(work / "wh", ignore_errors=True)
    spark = build_spark("cvm-bench", master=args.master,
                        conf={**cfg.spark, "spark.driver.memory": args.driver_memory})
    results: dict[str, object] = {"accounts": args.accounts, "months": args.months,
                                  "master": args.master, "stages": {}}
    stages: dict[str, dict[str, float]] = {}
    if not (args.keep_data and (work / "data" / "accounts").exists()):
        start = time.monotonic()
        write_tables(generate_tables(spark, cfg.generator, cfg.snapshot, cfg.validation),
                     cfg.inputs.root, cfg.inputs.format)
        stages["generate"] = {"seconds": time.monotonic() - start}
    class _Stop(Exception):
        pass

    last_summary: list = [None]

    def stop_after(stage: str, run_summary: object) -> None:
        last_summary[0] = run_summary
        if stage == args.until:
            raise _Stop

    with contextlib.suppress(_Stop):
        run_snapshot(spark, cfg, on_stage=stop_after)
    summary = last_summary[0]
    rows_in = sum(summary.rows_read.values())
    for name, seconds in summary.stage_seconds.items():
        stages[name] = {"seconds": seconds}
    stages["validate"]["rows_per_second"] = rows_in / stages["validate"]["seconds"]
    for name in ("features", "rfm"):
        if name not in stages:
            continue
        stages[name]["rows_per_second"] = summary.rows_written[name] / stages[name]["seconds"]
    total = sum(v["seconds"] for k, v in stages.items() if k != "generate")
    results.update(stages=stages, rows_read=summary.rows_read,
                   rows_written=summary.rows_written, pipeline_seconds=total,
                   driver_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    spark.stop()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench_{args.accounts}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    lines = [f"accounts {args.accounts:,} x {args.months} months, master {args.master}, "
             f"input rows {rows_in:,}", "", "| stage | seconds | rows/s |", "|---|---:|---:|"]
    for name, v in stages.items():
        rate = v.get("rows_per_second")
        lines.append(f"| {name} | {v['seconds']:.1f} | {f'{rate:,.0f}' if rate else ''} |")
    lines += [f"| pipeline (excl. generate) | {total:.1f} | |", "",
              f"driver peak RSS (Python): {results['driver_peak_rss_mb']:.0f} MB"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

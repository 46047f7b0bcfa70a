"""The ``cvm`` command line (also ``python -m cvm_spark``).

Subcommands:

* ``cvm validate-config``: load and check a config file; no Spark.
* ``cvm generate``: write a synthetic input sample (see docs/generator.md).
* ``cvm run``: run the snapshot pipeline (optionally generating the sample first, optionally
  writing the HTML report after it).
* ``cvm report``: write the HTML report of a snapshot from the Delta tables (docs/report.md).
* ``cvm thrift``: serve the output tables over JDBC (Spark Thrift Server) until stopped;
  ``scripts/thrift.sh`` runs it in the background under spark-submit.

The config is validated before the SparkSession is built, so a bad key costs no JVM start.
Under ``spark-submit`` the master comes from spark-submit; run directly with ``python`` the
default is local mode (``local[*]``) unless ``--master`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from cvm_spark.config import ConfigError, CvmConfig, load_config

log = logging.getLogger("cvm_spark")

DEFAULT_CONFIG = "conf/cvm.yaml"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=os.environ.get("CVM_CONFIG", DEFAULT_CONFIG),
                        help="YAML config file (default: %(default)s; env CVM_CONFIG)")
    parser.add_argument("--snapshot", metavar="YYYY-MM",
                        help="snapshot month (overrides snapshot_month in the config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set output.warehouse=/tmp/wh "
                             "(value parsed as YAML); repeatable")


def _spark_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--master", default=None,
                        help="Spark master URL; default: spark-submit's, else local[*]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvm", description="Customer value model on Spark.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-config", help="check a config file and print its fingerprint")
    _common(p)

    p = sub.add_parser("generate", help="write a synthetic input sample")
    _common(p)
    _spark_args(p)
    p.add_argument("--accounts", type=int, help="number of accounts (generator.accounts)")
    p.add_argument("--months", type=int, help="months of history (generator.months)")
    p.add_argument("--out", help="output folder (inputs.root)")
    p.add_argument("--format", choices=["parquet", "csv", "delta"], help="inputs.format")

    p = sub.add_parser("run", help="run the pipeline for one snapshot")
    _common(p)
    _spark_args(p)
    p.add_argument("--generate", action="store_true",
                   help="generate the synthetic sample into inputs.root first")
    p.add_argument("--accounts", type=int, help="with --generate: number of accounts")
    p.add_argument("--run-id", help="run identifier (default: snapshot + config fingerprint)")
    p.add_argument("--reuse-models", action="store_true",
                   help="score with the future-value models saved for the snapshot instead of "
                        "training new ones")
    p.add_argument("--report", nargs="?", const="", default=None, metavar="PATH",
                   help="after the run, write the HTML report (default path: "
                        "cvm_report_<YYYY-MM>.html)")

    p = sub.add_parser(
        "report", help="write the HTML report of a snapshot from the Delta tables",
        description="Write a self-contained HTML report of one snapshot (tiers, lifecycle "
                    "funnel, RFM heat maps, future-value clusters and back-test, tier "
                    "migration from the previous snapshot, run log), read from the Delta "
                    "tables of an earlier `cvm run`. See docs/report.md.")
    _common(p)
    _spark_args(p)
    p.add_argument("--out", dest="report_out", metavar="PATH",
                   help="HTML file to write (default: cvm_report_<YYYY-MM>.html)")

    p = sub.add_parser("thrift", help="serve the output tables over JDBC (Spark Thrift "
                                      "Server, HiveServer2 protocol) until stopped")
    _common(p)
    _spark_args(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s; 0.0.0.0 = all interfaces)")
    p.add_argument("--port", type=int, default=10000, help="port (default: %(default)s)")
    p.add_argument("--print-driver-classpath", action="store_true",
                   help="only print the Delta jars of this spark-submit run that belong on "
                        "--driver-class-path (used by scripts/thrift.sh)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    if args.snapshot:
        out["snapshot_month"] = args.snapshot
    for flag, key in (("accounts", "generator.accounts"), ("months", "generator.months"),
                      ("out", "inputs.root"), ("format", "inputs.format")):
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    return out


def _session(args: argparse.Namespace, cfg: CvmConfig, app: str,
             extra: dict[str, str] | None = None):
    from cvm_spark.session import build_spark

    master = args.master
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = "local[*]"  # plain `python`: not launched by spark-submit
    return build_spark(app, master=master, conf={**cfg.spark, **(extra or {})})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cvm`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"cvm: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "validate-config":
        print(f"{args.config}: ok (snapshot {cfg.snapshot_month}, "
              f"fingerprint {cfg.fingerprint()})")
        return 0

    if args.command == "thrift" and args.print_driver_classpath:
        from cvm_spark.thrift import print_driver_class_path

        print_driver_class_path()
        return 0

    from cvm_spark.report import ReportError
    from cvm_spark.validate import InputSchemaError

    start = time.monotonic()
    # the edge: the only place that reads the clock and asks git for the run log
    started_at = datetime.now(UTC)
    extra = None
    if args.command == "thrift":
        from cvm_spark.thrift import thrift_conf

        extra = thrift_conf(args.host, args.port)
    spark = _session(args, cfg, f"cvm-{args.command}", extra)
    try:
        if args.command == "thrift":
            from cvm_spark.thrift import ThriftStartError, serve

            try:
                serve(spark, cfg.output, args.host, args.port)
            except ThriftStartError as exc:
                print(f"cvm: thrift: {exc}", file=sys.stderr)
                return 1
            return 0
        if args.command == "generate":
            from cvm_spark.generate import generate_tables, write_tables

            tables = generate_tables(spark, cfg.generator, cfg.snapshot, cfg.validation)
            paths = write_tables(tables, cfg.inputs.root, cfg.inputs.format)
            print(f"generated {cfg.generator.accounts:,} accounts x {cfg.generator.months} "
                  f"months ending {cfg.snapshot_month} in {time.monotonic() - start:.0f}s:")
            for name, path in paths.items():
                print(f"  {name:<16}{path}")
            return 0
        from cvm_spark.report import write_report

        if args.command == "report":
            path = write_report(spark, cfg, args.report_out or None)
            print(f"report for {cfg.snapshot_month} written to {path} "
                  f"({time.monotonic() - start:.0f}s)")
            return 0
        from cvm_spark.pipeline import run_snapshot
        from cvm_spark.run_log import detect_code_version

        if args.accounts is not None and not args.generate:
            print("cvm: --accounts only applies with --generate", file=sys.stderr)
            return 2
        summary = run_snapshot(spark, cfg, run_id=args.run_id, generate=args.generate,
                               retrain=not args.reuse_models,
                               code_version=detect_code_version(), started_at=started_at)
        print(summary.render())
        if args.report is not None:
            path = write_report(spark, cfg, args.report or None)
            print(f"\nreport written to {path}")
        print(f"\ntotal {time.monotonic() - start:.0f}s; query with "
              f"spark.sql('select * from {cfg.output.database}.rfm')")
        return 0
    except InputSchemaError as exc:
        print(f"cvm: input error: {exc}", file=sys.stderr)
        return 3
    except ReportError as exc:
        print(f"cvm: report error: {exc}", file=sys.stderr)
        return 4
    finally:
        spark.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

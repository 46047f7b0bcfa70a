"""The ``cvm`` argument parser: the options shared by the subcommands and one sub-parser
per subcommand. ``cvm_spark.cli`` parses with it and runs the command."""

from __future__ import annotations

import argparse
import os

from cvm_spark.config import GENERATOR_PROFILES
from cvm_spark.pipeline.summary import STEP_NAMES

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


def version_text() -> str:
    """``cvm --version``: the code (package version and git commit when known), the pyspark
    and delta-spark versions and the Delta jar they resolve (no Spark session)."""
    import pyspark

    from cvm_spark.common.session import delta_maven_coordinates
    from cvm_spark.pipeline.run_log import detect_code_version

    code = detect_code_version()
    commit = f" (git {code.git_commit})" if code.git_commit else ""
    delta = delta_maven_coordinates()
    return (f"cvm_spark {code.package}{commit}\n"
            f"Spark {pyspark.__version__} (pyspark)\n"
            f"Delta {delta.rsplit(':', 1)[-1]} ({delta})")


class _Version(argparse.Action):
    """Print :func:`version_text` and exit (computed only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the code, Spark and Delta versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``cvm`` parser: one sub-parser per subcommand (``_<command>_parser``)."""
    parser = argparse.ArgumentParser(prog="cvm", description="Customer value model on Spark.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_validate_config_parser, _generate_parser, _import_parser, _run_parser,
                _report_parser,
                _thrift_parser, _package_parser, _submit_parser):
        add(sub)
    return parser


def _validate_config_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate-config", help="check a config file and print its fingerprint")
    _common(p)


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="write a synthetic input sample")
    _common(p)
    _spark_args(p)
    p.add_argument("--accounts", type=int, help="number of accounts (generator.accounts)")
    p.add_argument("--months", type=int, help="months of history (generator.months)")
    # dest generator_profile: `args.profile` is the run's Spark profiling folder
    p.add_argument("--profile", dest="generator_profile", metavar="NAME",
                   help="industry to imitate (generator.profile): "
                        f"{' | '.join(GENERATOR_PROFILES)}")
    p.add_argument("--out", help="output folder (inputs.root)")
    p.add_argument("--format", choices=["parquet", "csv", "delta"], help="inputs.format")


def _import_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-purchases", help="turn a purchase log into the input tables",
        description="Read the purchase log of the config's purchases section (customer, "
                    "time, amount; optionally order id, quantity, channel) and write the "
                    "six input tables where inputs.root says (docs/purchase-log.md). "
                    "Example: cvm import-purchases --config conf/retail.yaml --log "
                    "shop.csv")
    _common(p)
    _spark_args(p)
    p.add_argument("--log", help="the purchase log, a file or folder (purchases.path)")
    p.add_argument("--out", help="where the tables go (inputs.root)")
    p.add_argument("--format", choices=["parquet", "csv", "delta"], help="inputs.format")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the pipeline for one snapshot")
    _common(p)
    _spark_args(p)
    p.add_argument("--generate", action="store_true",
                   help="generate the synthetic sample into inputs.root first")
    p.add_argument("--accounts", type=int, help="with --generate: number of accounts")
    # not --profile, which is the Spark profiling folder below
    p.add_argument("--generate-profile", dest="generator_profile", metavar="NAME",
                   help="with --generate: industry to imitate (generator.profile): "
                        f"{' | '.join(GENERATOR_PROFILES)}")
    p.add_argument("--run-id", help="run identifier (default: snapshot + config fingerprint)")
    p.add_argument("--until", choices=STEP_NAMES, default=STEP_NAMES[-1],
                   help="the last step to run (default: all); a partial run writes the tables "
                        "of its steps and no run_log rows")
    p.add_argument("--reuse-models", action="store_true",
                   help="score with the future-value models saved for the snapshot instead of "
                        "training new ones")
    p.add_argument("--report", nargs="?", const="", default=None, metavar="PATH",
                   help="after the run, write the HTML report (default path: "
                        "cvm_report_<YYYY-MM>.html)")
    p.add_argument("--break-lock", action="store_true",
                   help="take over the snapshot month's lock left by a run that is not "
                        "running any more (e.g. killed on another host); make sure it is not "
                        "running first (docs/reliability.md, section 'concurrent runs')")
    p.add_argument("--profile", metavar="DIR",
                   help="write the Spark event log under DIR and print, per stage, the Spark "
                        "jobs, tasks, task time, shuffle, spill and largest plan "
                        "(docs/performance.md, 'profiling a run')")


def _report_parser(sub: argparse._SubParsersAction) -> None:
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


def _thrift_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("thrift", help="serve the output tables over JDBC (Spark Thrift "
                                      "Server, HiveServer2 protocol) until stopped")
    _common(p)
    _spark_args(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s; 0.0.0.0 = all interfaces)")
    p.add_argument("--port", type=int, default=10000, help="port (default: %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="only check the config, the authentication for --host and the "
                        "environment, then exit (no Spark; exit code 2 on a config error)")
    p.add_argument("--print-driver-classpath", action="store_true",
                   help="only print the Delta jars of this spark-submit run that belong on "
                        "--driver-class-path (used by scripts/thrift.sh)")


def _package_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("package", help="build dist/ for spark-submit (zip, job file, config)",
                       description="Write the cvm_spark package zip (for --py-files), the job "
                                   "file, the config (for --files) and the driver's "
                                   "requirements to one folder.")
    p.add_argument("--dist", default="dist", help="output folder (default: %(default)s)")
    p.add_argument("--config", default=os.environ.get("CVM_CONFIG", DEFAULT_CONFIG),
                   help="config file to ship (default: %(default)s; env CVM_CONFIG)")
    _jars_argument(p)


def _jars_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jars", dest="bundle_jars", action="store_true",
                   help="also copy the Delta jars into DIST/jars/ (from the local cache, "
                        "resolved once if absent): spark-submit then gets them with --jars "
                        "and no node needs Maven Central")


def _submit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit", allow_abbrev=False, help="run the pipeline on a cluster with spark-submit",
        usage="cvm submit [options] [spark-submit options] [-- [SUBCOMMAND] JOB_ARGS...]",
        description="Package (see `cvm package`), then call spark-submit with the Delta "
                    "package and SQL settings, the package zip as --py-files and the config "
                    "as --files. Options not listed below (--conf K=V, --executor-memory 2g, "
                    "--num-executors 4, --archives ...) go to spark-submit unchanged, after "
                    "ours. Arguments after `--` go to the job: a subcommand (run or generate; "
                    "default run) and its options, e.g. `-- --config conf/cvm.yaml "
                    "--snapshot 2024-12`. The job's --config is a local file.",
        epilog="Example: cvm submit --master spark://host:7077 --executor-memory 2g -- "
               "--snapshot 2024-12 --set output.warehouse=hdfs:///warehouse")
    p.add_argument("--master", help="master URL: spark://host:7077, yarn, k8s://https://host:6443 "
                                    "(default: spark-submit's, from spark-defaults.conf)")
    p.add_argument("--deploy-mode", choices=["client", "cluster"], default="client",
                   help="where the driver runs (default: %(default)s; standalone clusters run "
                        "Python drivers in client mode only)")
    p.add_argument("--packages", help="extra Maven coordinates (the Delta artifact for the "
                                      "installed pyspark is always added)")
    p.add_argument("--py-files", default="", help="extra comma-separated --py-files")
    p.add_argument("--files", default="", help="extra comma-separated --files")
    p.add_argument("--spark-submit", help="spark-submit executable (default: "
                                          "$SPARK_HOME/bin/spark-submit, PATH, then pyspark's)")
    p.add_argument("--dist", default="dist", help="distribution folder (default: %(default)s)")
    p.add_argument("--no-package", action="store_true",
                   help="use the zip (and jars/) already in --dist instead of packaging")
    _jars_argument(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the spark-submit command instead of running it")

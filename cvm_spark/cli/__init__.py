"""The ``cvm`` command line (also ``python -m cvm_spark``).

Subcommands:

* ``cvm validate-config``: load and check a config file; no Spark.
* ``cvm generate``: write a synthetic input sample (see docs/generator.md).
* ``cvm import-purchases``: turn a purchase log into the input tables
  (docs/purchase-log.md).
* ``cvm run``: run the snapshot pipeline (optionally generating the sample first, optionally
  writing the HTML report after it).
* ``cvm report``: write the HTML report of a snapshot from the Delta tables (docs/report.md).
* ``cvm thrift``: serve the output tables over JDBC (Spark Thrift Server) until stopped;
  ``scripts/thrift.sh`` runs it in the background under spark-submit. Without
  authentication (``thrift`` in the config) it listens on loopback only.
* ``cvm package``: build ``dist/`` for spark-submit (package zip, job file, config).
* ``cvm submit``: package, then run a subcommand (default ``run``) with spark-submit on any
  master (see docs/cluster.md); ``--dry-run`` prints the command instead.

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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from cvm_spark.cli.parser import build_parser
from cvm_spark.config import CATALOG_DIR, ConfigError, CvmConfig, load_config, parse_yaml

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from cvm_spark.storage.privacy import PseudonymKey

log = logging.getLogger("cvm_spark")

# another run of the same snapshot month holds its lock (nothing was read or written)
EXIT_LOCKED = 5


JOB_COMMANDS = ("run", "generate")


def _split_job_args(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Split ``cvm submit ... -- job args`` at the first ``--``."""
    argv = list(argv)
    if "--" not in argv:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def _submit(args: argparse.Namespace, spark_args: list[str], job_args: list[str]) -> int:
    """``cvm submit``: check the job's arguments and config, package, then spark-submit."""
    import shlex
    import subprocess

    from cvm_spark.serve.submit import PackagingError, build_dist, find_dist, spark_submit_command

    leading = [a for a in job_args[:1] if a in ("-v", "--verbose")]
    rest = job_args[len(leading):]
    if not rest or rest[0] not in (*JOB_COMMANDS, "validate-config", "package", "submit"):
        rest = ["run", *rest]
    if rest[0] not in JOB_COMMANDS:
        print(f"cvm submit: the job runs `run` or `generate`, not {rest[0]!r}", file=sys.stderr)
        return 2
    job = build_parser().parse_args([*leading, *rest])  # exits 2 on bad job arguments
    try:
        load_config(job.config, _overrides(job))  # fail here, not on the cluster
    except ConfigError as exc:
        print(f"cvm submit: config error: {exc}", file=sys.stderr)
        return 2
    kept: list[str] = []
    skip = False
    for token in rest:  # --config is added back by spark_submit_command
        if skip:
            skip = False
        elif token == "--config":
            skip = True
        elif not token.startswith("--config="):
            kept.append(token)
    try:
        dist = (find_dist(args.dist) if args.no_package
                else build_dist(args.dist, job.config, with_jars=args.bundle_jars))
    except PackagingError as exc:
        print(f"cvm submit: {exc}", file=sys.stderr)
        return 2
    cmd = spark_submit_command(
        dist, [*leading, *kept], job.config, master=args.master,
        deploy_mode=args.deploy_mode, packages=args.packages,
        extra_py_files=[f for f in args.py_files.split(",") if f],
        extra_files=[f for f in args.files.split(",") if f], spark_submit_args=spark_args,
        spark_submit=args.spark_submit, app_name=f"cvm-{rest[0]}",
        with_generator=rest[0] == "generate" or bool(getattr(job, "generate", False)))
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    log.info("running %s", shlex.join(cmd))
    return subprocess.run(cmd, check=False).returncode


def _package(args: argparse.Namespace) -> int:
    """``cvm package``: write the distribution folder and list it."""
    from cvm_spark.serve.submit import PackagingError, build_dist

    try:
        dist = build_dist(args.dist, args.config, with_jars=args.bundle_jars)
    except PackagingError as exc:
        print(f"cvm package: {exc}", file=sys.stderr)
        return 2
    print(f"packaged into {dist.root}:")
    for label, path in (("--py-files", dist.zip_path), ("job", dist.job_path),
                        ("--files", dist.config_path), ("driver deps", dist.requirements_path),
                        ("generator", dist.generator_zip)):
        print(f"  {label:<12}{path}")
    if dist.jars:
        print(f"  {'--jars':<12}{dist.root / 'jars'} ({len(dist.jars)} files)")
    return 0


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    import yaml

    out: dict[str, object] = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = parse_yaml(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: not valid YAML: {exc}") from None
    if args.snapshot:
        out["snapshot_month"] = args.snapshot
    for flag, key in (("accounts", "generator.accounts"), ("months", "generator.months"),
                      ("generator_profile", "generator.profile"),
                      ("out", "inputs.root"), ("format", "inputs.format"),
                      ("log", "purchases.path")):
        value = getattr(args, flag, None)
        if value is not None:
            out[key] = value
    return out


def _session(args: argparse.Namespace, cfg: CvmConfig, app: str,
             extra: dict[str, str] | None = None):
    from cvm_spark.common.session import build_spark

    master = args.master
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = "local[*]"  # plain `python`: not launched by spark-submit
    # the catalog's `default` database gets a folder at the first catalog use: inside the
    # warehouse, not ./spark-warehouse of the working directory (the catalog is in-memory, so
    # nothing else uses it; the config's spark section can still name another place)
    catalog = {"spark.sql.warehouse.dir": cfg.output.location(CATALOG_DIR)}
    return build_spark(app, master=master, conf={**catalog, **cfg.spark, **(extra or {})})


def _profile(spark, summary) -> str:
    """The per-stage profile of the run just made, from this application's event log."""
    from cvm_spark.pipeline.profiling import profile_log, render_profile

    log_dir = spark.conf.get("spark.eventLog.dir").removeprefix("file:")
    path = Path(log_dir) / spark.sparkContext.applicationId
    profile = profile_log(str(path) + ".inprogress", summary.run_id)
    return (f"Spark profile of run {summary.run_id} (event log {path}.inprogress):\n"
            + render_profile(profile, summary.stage_seconds))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cvm`` console script; returns the process exit code."""
    parser = build_parser()
    argv, job_args = _split_job_args(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if args.command != "submit" and (extra or job_args is not None):
        parser.error(f"unrecognized arguments: {' '.join([*extra, *(job_args or [])])}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "package":
        return _package(args)
    if args.command == "submit":
        return _submit(args, extra, job_args or [])
    key = None
    try:
        cfg = load_config(args.config, _overrides(args))
        _check_rule_columns(cfg)
        if args.command == "thrift":
            from cvm_spark.serve.thrift import preflight

            preflight(cfg, args.host)  # no authentication beyond loopback, no key in reach
        if args.command == "run":
            from cvm_spark.storage.privacy import run_key

            key = run_key(cfg.privacy)  # a missing key fails here, before Spark starts
    except ConfigError as exc:
        print(f"cvm: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "validate-config":
        print(f"{args.config}: ok (snapshot {cfg.snapshot_month}, "
              f"fingerprint {cfg.fingerprint()})")
        return 0
    if args.command == "thrift" and args.check:
        print(f"cvm thrift: ok to listen on {args.host}:{args.port} (authentication "
              f"{cfg.thrift.authentication})")
        return 0
    if args.command == "thrift" and args.print_driver_classpath:
        from cvm_spark.serve.thrift import print_driver_class_path

        print_driver_class_path()
        return 0
    if args.command == "run" and not args.generate:
        for flag, value in (("--accounts", args.accounts),
                            ("--generate-profile", args.generator_profile)):
            if value is not None:
                print(f"cvm: {flag} only applies with --generate", file=sys.stderr)
                return 2
    return _with_spark(args, cfg, key)


def _check_rule_columns(cfg: CvmConfig) -> None:
    """Campaign and risk-reason conditions name known columns (a ConfigError otherwise)."""
    from cvm_spark.pipeline.scoring import check_rules

    try:
        check_rules(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _with_spark(args: argparse.Namespace, cfg: CvmConfig, key: PseudonymKey | None) -> int:
    """The commands that need a Spark session: start it, run the command, turn the errors
    a user can act on into a message and an exit code, stop the session."""
    from cvm_spark.contract.reading import InputSchemaError
    from cvm_spark.serve.report_data import ReportError
    from cvm_spark.storage.locking import SnapshotLockedError
    from cvm_spark.storage.privacy import WarehouseModeError

    clock = _Clock(time.monotonic(), datetime.now(timezone.utc))
    extra = None
    if args.command == "thrift":
        from cvm_spark.serve.thrift import thrift_conf

        extra = thrift_conf(args.host, args.port, cfg.thrift)
    if getattr(args, "profile", None):
        from cvm_spark.pipeline.profiling import profile_conf

        Path(args.profile).mkdir(parents=True, exist_ok=True)
        extra = profile_conf(str(Path(args.profile).resolve()))
    spark = _session(args, cfg, f"cvm-{args.command}", extra)
    commands = {"thrift": _thrift_command, "generate": _generate_command,
                "report": _report_command, "run": _run_command,
                "import-purchases": _import_command}
    try:
        return commands[args.command](spark, args, cfg, key, clock)
    except InputSchemaError as exc:
        print(f"cvm: input error: {exc}", file=sys.stderr)
        return 3
    except ReportError as exc:
        print(f"cvm: report error: {exc}", file=sys.stderr)
        return 4
    except WarehouseModeError as exc:
        print(f"cvm: privacy: {exc}", file=sys.stderr)
        return 2
    except SnapshotLockedError as exc:
        print(f"cvm: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    finally:
        spark.stop()


@dataclass(frozen=True)
class _Clock:
    """When the command started: ``monotonic`` for durations, ``started_at`` for the run log
    (the edge: the only place that reads the clock)."""

    monotonic: float
    started_at: datetime

    def seconds(self) -> float:
        return time.monotonic() - self.monotonic


def _thrift_command(spark: SparkSession, args: argparse.Namespace, cfg: CvmConfig,
                    key: PseudonymKey | None, clock: _Clock) -> int:
    from cvm_spark.serve.thrift import ThriftStartError, serve

    try:
        serve(spark, cfg.output, args.host, args.port, access=cfg.thrift)
    except ThriftStartError as exc:
        print(f"cvm: thrift: {exc}", file=sys.stderr)
        return 1
    return 0


def _generate_command(spark: SparkSession, args: argparse.Namespace, cfg: CvmConfig,
                      key: PseudonymKey | None, clock: _Clock) -> int:
    from cvm_generate import write_sample

    paths = write_sample(spark, cfg)
    print(f"generated {cfg.generator.accounts:,} accounts ({cfg.generator.profile} profile) x "
          f"{cfg.generator.months} months ending {cfg.snapshot_month} in {clock.seconds():.0f}s:")
    for name, path in paths.items():
        print(f"  {name:<16}{path}")
    return 0


def _import_command(spark: SparkSession, args: argparse.Namespace, cfg: CvmConfig,
                    key: PseudonymKey | None, clock: _Clock) -> int:
    from cvm_spark.cli.purchases import import_command

    return import_command(spark, args, cfg)


def _report_command(spark: SparkSession, args: argparse.Namespace, cfg: CvmConfig,
                    key: PseudonymKey | None, clock: _Clock) -> int:
    from cvm_spark.serve.report import write_report

    path = write_report(spark, cfg, args.report_out or None)
    print(f"report for {cfg.snapshot_month} written to {path} ({clock.seconds():.0f}s)")
    return 0


def _run_command(spark: SparkSession, args: argparse.Namespace, cfg: CvmConfig,
                 key: PseudonymKey | None, clock: _Clock) -> int:
    from cvm_spark.pipeline.run_log import detect_code_version
    from cvm_spark.pipeline.runner import run_snapshot
    from cvm_spark.serve.report import write_report

    generate = None
    if args.generate:
        from cvm_generate import write_sample as generate
        if cfg.generator.profile == "purchases":
            from cvm_spark.cli.purchases import generate_and_import

            generate = generate_and_import(generate)
    summary = run_snapshot(spark, cfg, run_id=args.run_id, generate=generate,
                           retrain=not args.reuse_models,
                           code_version=detect_code_version(), started_at=clock.started_at,
                           break_lock=args.break_lock, pseudonym_key=key,
                           until=args.until)
    print(summary.render())
    if getattr(args, "profile", None):
        print("\n" + _profile(spark, summary))
    report = None
    if args.report is not None:
        report = write_report(spark, cfg, args.report or None)
    print(closing_lines(cfg, summary.tables, report, clock.seconds()))
    return 0


def closing_lines(cfg: CvmConfig, tables: dict[str, str], report: Path | None,
                  seconds: float) -> str:
    """The end of ``cvm run``'s output: the time, where the report is (or the command that
    writes it) and a first query on what the run wrote."""
    db, month = cfg.output.database, cfg.snapshot
    where = f"where snapshot_month = date '{month:%Y-%m-%d}'"
    if "tier_summary" in tables:
        query = (f"select tier, sum(accounts) as accounts, round(100 * sum(share_of_accounts), 1)"
                 " as pct_accounts, round(sum(total_contribution_money)) as money from"
                 f" {db}.tier_summary {where} group by tier order by money desc")
    elif tables:
        query = f"select * from {db}.{list(tables)[-1]} {where} limit 20"
    else:
        query = "(no table written)"
    shown = (str(report.resolve()) if report is not None
             else f"not written; cvm report --snapshot {month:%Y-%m} writes it")
    return "\n".join(["", f"done in {seconds:.0f}s", f"report:      {shown}",
                      f"start with:  {query}",
                      "             (beeline on `cvm thrift`, or pyspark, DuckDB, Polars on the"
                      " Delta files: docs/bi.md)"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

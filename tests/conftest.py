"""One session-scoped local[2] SparkSession with Delta for the whole suite, and the shared
end-to-end warehouse (a small generated bank, each snapshot run at most once unless a test
asks for a re-run)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SessionLogs:
    """Where the test session's Spark writes its event log and its log file."""

    event_log_dir: Path
    spark_log: Path

    def event_log(self, spark) -> Path:
        """This application's event log (being written)."""
        return self.event_log_dir / f"{spark.sparkContext.applicationId}.inprogress"


@pytest.fixture(scope="session")
def session_logs(tmp_path_factory: pytest.TempPathFactory) -> SessionLogs:
    root = tmp_path_factory.mktemp("spark-logs")
    return SessionLogs(root / "events", root / "spark.log")


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory, session_logs: SessionLogs):
    from cvm_spark.common.session import SPARK_LOG_ENV, build_spark
    from cvm_spark.pipeline.profiling import profile_conf

    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYTHON", "python3"))
    # Spark's own log (cvm_spark/log4j2.properties) goes to the session's file
    os.environ[SPARK_LOG_ENV] = str(session_logs.spark_log)
    session_logs.event_log_dir.mkdir(parents=True, exist_ok=True)
    session = build_spark(
        "cvm-tests",
        master="local[2]",
        conf={
            # the event log of the whole session, uncompressed and with whole plan strings
            # (tests/test_budgets.py profiles the golden run from it)
            **profile_conf(str(session_logs.event_log_dir)),
            # unit tests on a handful of rows; pipeline runs size their shuffles from the
            # inputs, as users' runs do (cvm_spark.common.session.sized_shuffles)
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("spark-warehouse")),
            "spark.driver.memory": "3g",
            # keep every stage and job of the session in the status store: tests read them
            # (tests/test_skew.py); past 1,000 Spark drops the oldest, skipped stages first
            "spark.ui.retainedStages": "20000",
            "spark.ui.retainedJobs": "20000",
        },
    )
    # warnings reach the session's log file (the budget test reads the task-binary warning)
    session.sparkContext.setLogLevel("WARN")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def base_config():
    from cvm_spark.config import load_config

    return load_config(ROOT / "conf" / "cvm.yaml")


@pytest.fixture(scope="session")
def e2e_config(base_config, tmp_path_factory):
    """400 generated accounts x 15 months ending 2024-12, in a warehouse of its own."""
    from cvm_spark.config import load_config_dict, to_dict

    root = tmp_path_factory.mktemp("e2e")
    data = to_dict(base_config)
    data["inputs"]["root"] = str(root / "data")
    data["output"]["warehouse"] = str(root / "wh")
    data["output"]["database"] = "cvm_e2e"
    data["generator"].update(accounts=400, months=15, bad_row_share=0.01)
    return load_config_dict(data)


class LogLines(logging.Handler):
    """Collects the formatted records of a logger (attach with :meth:`capture`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def capture(self, name: str = "cvm_spark"):
        """Context manager: every record of ``name`` at DEBUG and above goes to ``lines``."""
        from contextlib import contextmanager

        @contextmanager
        def attached():
            logger = logging.getLogger(name)
            level = logger.level
            logger.addHandler(self)
            logger.setLevel(logging.DEBUG)
            try:
                yield self
            finally:
                logger.removeHandler(self)
                logger.setLevel(level)

        return attached()


def table_versions(output) -> dict[str, int]:
    """The newest committed Delta version of every output table in a local warehouse
    (-1: no table), read from the ``_delta_log`` folder listings."""
    from cvm_spark.schemas.outputs import TABLE_DESCRIPTIONS
    from cvm_spark.storage.delta import table_path

    versions = {}
    for table in TABLE_DESCRIPTIONS:
        names = [p.name for p in (Path(table_path(output, table)) / "_delta_log").glob("*.json")]
        versions[table] = max((int(n[:20]) for n in names if len(n) == 25 and n[:20].isdigit()),
                              default=-1)
    return versions


class SnapshotRuns:
    """The runs made on the shared end-to-end warehouse, in order, per snapshot month.

    Every run of that warehouse goes through here, so a test can compare the run log with
    every run made so far, whichever tests ran before it. The first run generates the data
    (for the config's own snapshot month). Runs get a fixed start time and code version so
    the run log has known values. The ``cvm_spark`` log lines of each run are kept in
    ``logs`` (the privacy tests read them). The physical plans of every Spark execution of the
    first run are recorded by ``plan_recorder`` (tests/plan_check.py; checked by
    tests/test_plans.py). ``history`` keeps, in run order, the month and every table's
    Delta version after the run (for time travel to the state after any run).
    """

    CODE_COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, spark, cfg) -> None:
        self.spark, self.cfg = spark, cfg
        self.runs: dict[str, list] = {}
        self.started: dict[str, list[datetime]] = {}
        self.logs: dict[str, list[list[str]]] = {}
        self.history: list[tuple[str, dict[str, int]]] = []
        self._generated = False
        self.plan_recorder = None   # tests/plan_check.PlanRecorder of the first run

    def run(self, month: str | None = None):
        """Run the snapshot (again) and return its RunSummary."""
        from cvm_generate import write_sample
        from cvm_spark.pipeline.run_log import CodeVersion
        from cvm_spark.pipeline.runner import run_snapshot

        month = month or self.cfg.snapshot_month
        if not self._generated and month != self.cfg.snapshot_month:
            self.run(self.cfg.snapshot_month)
        n = sum(len(v) for v in self.runs.values())
        started = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC) + timedelta(minutes=n)

        def run():
            return run_snapshot(self.spark, self.cfg.with_snapshot(month),
                                generate=None if self._generated else write_sample,
                                code_version=CodeVersion(git_commit=self.CODE_COMMIT),
                                started_at=started)

        with LogLines().capture() as lines:
            if self._generated:
                summary = run()
            else:
                from plan_check import PlanRecorder

                self.plan_recorder = PlanRecorder(self.spark)
                with self.plan_recorder:
                    summary = run()
        self._generated = True
        self.logs.setdefault(month, []).append(lines.lines)
        self.runs.setdefault(month, []).append(summary)
        self.started.setdefault(month, []).append(started)
        self.history.append((month, table_versions(self.cfg.output)))
        return summary

    def first(self, month: str | None = None):
        """The first run of the snapshot, running it now if it has not run yet."""
        month = month or self.cfg.snapshot_month
        if not self.runs.get(month):
            self.run(month)
        return self.runs[month][0]

    def latest(self, month: str | None = None):
        """The latest run of the snapshot, running it first if it has not run yet."""
        month = month or self.cfg.snapshot_month
        if not self.runs.get(month):
            self.run(month)
        return self.runs[month][-1]


@pytest.fixture(scope="session")
def golden_run(spark, base_config, session_logs, tmp_path_factory):
    """The seeded 3,000-account run of tests/golden.py, once per session: compared with the
    golden copy (test_golden.py) and held to the Spark budgets (test_budgets.py).

    Returns (cfg, summary, spark log lines written during the run)."""
    import golden

    from cvm_generate import write_sample
    from cvm_spark.pipeline.run_log import CodeVersion
    from cvm_spark.pipeline.runner import run_snapshot

    cfg = golden.golden_config(base_config, tmp_path_factory.mktemp("golden"))
    log = session_logs.spark_log
    start = log.stat().st_size if log.exists() else 0
    summary = run_snapshot(spark, cfg, run_id=golden.RUN_ID, generate=write_sample,
                           code_version=CodeVersion(git_commit="golden"))
    lines = []
    if log.exists():
        with log.open(encoding="utf-8", errors="replace") as fh:
            fh.seek(start)
            lines = fh.read().splitlines()
    return cfg, summary, lines


@pytest.fixture(scope="session")
def e2e_runs(spark, e2e_config) -> SnapshotRuns:
    return SnapshotRuns(spark, e2e_config)


@pytest.fixture(scope="session")
def e2e_summary(e2e_runs):
    """The first run of the whole pipeline on the generated bank, shared by the e2e, report
    and BI tests: the model stages take minutes on two cores, so the suite runs them once.
    Tests that change the warehouse (re-runs, other snapshots) go through ``e2e_runs``; the
    BI tests work on a copy."""
    return e2e_runs.first()


# Fixtures that run the whole pipeline: a test that uses one belongs to the e2e tier even
# if its module forgot the marker, so `scripts/test.sh --fast` never starts a pipeline run.
_PIPELINE_FIXTURES = frozenset({"e2e_runs", "e2e_summary", "golden_run"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)

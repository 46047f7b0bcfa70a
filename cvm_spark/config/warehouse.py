"""Where and how the job writes: the warehouse and its layout, Spark sizing and
pseudonymisation (YAML sections ``output``, ``performance`` and ``privacy``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cvm_spark.config.checks import ConfigError, check
from cvm_spark.schemas.outputs import TABLE_DESCRIPTIONS

# Folders the job writes under ``<warehouse>`` besides ``<database>/<table>``: fitted models,
# the catalog's database folder (cvm_spark.storage.delta.create_database), the run locks
# (cvm_spark.storage.locking) and the runs' work areas (cvm_spark.storage.workarea).
MODELS_DIR = "_models"
CATALOG_DIR = "_catalog"
LOCKS_DIR = "_locks"
# a run's intermediate results (cvm_spark.storage.workarea), removed when the run ends
WORK_DIR = "_work"
WAREHOUSE_DIRS = (MODELS_DIR, CATALOG_DIR, LOCKS_DIR, WORK_DIR)


def is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class OutputConfig:
    """Where the Delta tables go and how they are named in the catalog.

    ``warehouse`` is the root of everything the job writes: every write location is built by
    :meth:`location` and refused when it would resolve outside the root (``..``, an absolute
    part, or, for local paths, a symlink inside the warehouse that points elsewhere).
    """

    warehouse: str = "warehouse"
    database: str = "cvm"
    target_file_rows: int = 1_000_000

    def __post_init__(self) -> None:
        check(bool(self.warehouse.strip()), "warehouse must not be blank")
        check("\x00" not in self.warehouse, "warehouse must not contain a NUL character")
        check(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.database) is not None,
              f"database must be a plain SQL identifier, got {self.database!r}")
        check(self.target_file_rows >= 1000, "target_file_rows must be >= 1000")
        # symlinks that exist now; write paths are checked again when they are used
        for table in TABLE_DESCRIPTIONS:
            self.location(self.database, table)
        for folder in WAREHOUSE_DIRS:
            self.location(folder)

    def location(self, *parts: str) -> str:
        """``<warehouse>/<parts...>``, refused if it resolves outside the warehouse.

        Local paths come back absolute and resolved (symlinks followed); URIs
        (``hdfs://``, ``s3a://``) as given, checked lexically only.

        Raises:
            ConfigError: a part is empty, ``.``/``..`` or contains a separator, or the
                resolved location is outside the resolved warehouse (a symlink escape).
        """
        for part in parts:
            if not part or part in (".", "..") or any(c in part for c in "/\\\x00"):
                raise ConfigError(f"output: write location part {part!r} under the warehouse "
                                  "must be a plain name")
        if is_uri(self.warehouse):
            return "/".join([self.warehouse.rstrip("/"), *parts])
        root = Path(self.warehouse).resolve()
        target = root.joinpath(*parts).resolve()
        if not target.is_relative_to(root):
            raise ConfigError(
                f"output.warehouse: {'/'.join(parts)} resolves to {target}, outside the "
                f"warehouse {root} (a symlink pointing out of it?); every write stays inside "
                "output.warehouse")
        return str(target)


@dataclass(frozen=True)
class PerformanceConfig:
    """How a run sizes its Spark work (docs/performance.md, "partitions").

    Attributes:
        shuffle_partitions: partitions of every shuffle of the run; 0 (default) sizes them
            from the inputs: their bytes (files), times the in-memory expansion of their
            format, over ``partition_mb``, rounded up to a multiple of Spark's default
            parallelism (the cores), and at least that.
        partition_mb: target in-memory size of one shuffle partition, in MB.
        broadcast_accounts: the accepted account ids are sent to every task (a broadcast
            join, no shuffle of the event rows) up to this many accounts; above it the
            orphan check joins by shuffling. The same bound applies to the hashes of
            repeated keys that validation marks in a larger table.
        parallel_fits: model fits that run side by side on driver threads (the loyalty,
            lifetime-value and future-value fits and the back-test's origins); 1 = one after
            the other. A fit is a chain of small Spark jobs that leaves the cores idle
            between jobs; the results do not depend on this.
    """

    shuffle_partitions: int = 0
    partition_mb: int = 128
    broadcast_accounts: int = 2_000_000
    parallel_fits: int = 4

    def __post_init__(self) -> None:
        check(0 <= self.shuffle_partitions <= 100_000,
              f"shuffle_partitions must be in 0..100000 (0 = from the input size), "
              f"got {self.shuffle_partitions}")
        check(8 <= self.partition_mb <= 4096,
              f"partition_mb must be in 8..4096, got {self.partition_mb}")
        check(self.broadcast_accounts >= 0,
              f"broadcast_accounts must be >= 0, got {self.broadcast_accounts}")
        check(1 <= self.parallel_fits <= 32,
              f"parallel_fits must be in 1..32, got {self.parallel_fits}")


PRIVACY_KEY_ENV = "CVM_PSEUDONYM_SECRET"
# privacy keys that exist; any other key there that looks like a secret gets a clear refusal
PRIVACY_FIELDS = ("pseudonymise", "key_env", "key_file")
SECRET_LIKE = re.compile(r"key|secret|salt|pepper|password|token", re.IGNORECASE)


@dataclass(frozen=True)
class PrivacyConfig:
    """Pseudonymous account keys for the BI-facing tables (docs/reliability.md, section "privacy").

    The key itself is never part of the config: it is read at the job's edge from the
    environment variable named by ``key_env`` or, when ``key_file`` is set, from that file.
    """

    pseudonymise: bool = False
    key_env: str = PRIVACY_KEY_ENV
    key_file: str | None = None

    def __post_init__(self) -> None:
        # the value is not echoed: a key pasted here by mistake must not reach a log
        # upper case only: a hex or base64 key pasted here by mistake does not pass, so the
        # "variable not set" message (which names key_env) cannot print it
        check(re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", self.key_env) is not None,
              "key_env must be the name of an environment variable (upper-case letters, "
              "digits, _; at most 64), not the key itself")
        check(self.key_file is None or bool(self.key_file.strip()),
              "key_file must not be blank (leave it out to read key_env)")

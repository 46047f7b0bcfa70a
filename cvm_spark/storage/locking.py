"""Run locks: one run per snapshot month at a time, one writer per table on a local warehouse.

**Snapshot lock.** Delta makes each table write atomic, but a run writes ten tables one after
the other. Two runs of the same month at the same time (with inputs or a config that changed
in between) could each win some of the tables: run A's ``features`` next to run B's ``tiers``.
:func:`snapshot_lock` lets one run of a month in and stops the other before it reads or writes
anything, with a :class:`SnapshotLockedError` naming the run that holds the lock. Runs of
different months take different locks and run side by side.

The lock is a small JSON file, ``<warehouse>/_locks/<database>/snapshot_month=<date>.lock``
(outside every table folder, so it is never mistaken for a table), created with an atomic
create-if-absent and removed when the run ends, also when it fails:

* local paths and ``file:`` URIs: the content goes to a private temporary file, which is then
  hard-linked to the lock name; ``link(2)`` fails when the name exists (also on NFS), so two
  runs can never both create it and a reader never sees a half-written lock. (Hadoop's local
  ``FileSystem.create(path, overwrite=false)`` checks and then creates: not atomic.)
* other URIs (``hdfs://``, ``s3a://``, ``abfs://``, ``gs://``, ...): Hadoop
  ``FileSystem.create(path, overwrite=false)`` through the session's JVM. Atomic on HDFS (the
  NameNode decides); on object stores it depends on the connector (S3A checks and then puts),
  so there two runs that start within the same moment may both get in: schedule one run per
  month there (docs/reliability.md, section "concurrent runs", "the document" below).

A lock left behind by a run that died without cleaning up (``kill -9``, a lost machine) is
*stale*. When the holder ran on this machine (same host name, boot and PID namespace) and its
process is gone (or is a zombie, or the PID now belongs to a process started later), the next
run logs a warning and takes the lock over. A holder on another machine cannot be checked from
here: the run stops, and ``cvm run --break-lock`` takes the lock over once the operator has
made sure the other run is dead. Take-overs are serialised by a second file
(``<lock>.takeover``) and only remove the lock content they judged stale, so two runs that
find the same stale lock cannot both end up holding it.

**Table write guard.** Delta commits a table version by writing ``_delta_log/<version>.json``
and relies on the file system to let only one writer create it. On the local file system its
default log store (``HDFSLogStore``) checks that the file is absent and then renames a
temporary file onto it (a local rename replaces an existing file); the only protection it adds
is a ``synchronized`` block inside one JVM. Two processes committing to the same table at the
same moment could both "win" a version, and one commit would be lost.
:func:`table_write_guard` closes that gap for local warehouses: writes to one table from
different processes take turns (``flock(2)``, which the kernel releases when a process dies,
so it never goes stale). Elsewhere the guard does nothing: Delta's log store for the scheme
provides the mutual exclusion (atomic on HDFS; for object stores see the document above).

No wall clock is read here: the start time recorded in the lock comes from the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cvm_spark.config import LOCKS_DIR, OutputConfig
from cvm_spark.storage.locations import is_local, local_path
from cvm_spark.storage.lock_holder import LockHolder, current_holder, holder_state
from cvm_spark.storage.lock_store import LockStore, lock_store

try:  # POSIX only; without it the table write guard is a no-op (see table_write_guard)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

TAKEOVER_SUFFIX = ".takeover"
# How often a lock that is there but unreadable (being written on HDFS) is read again, and
# how long to wait between reads.
READ_ATTEMPTS = 5
READ_PAUSE_SECONDS = 0.2
# create -> found -> judged stale -> taken over -> create again: bounded.
ACQUIRE_ATTEMPTS = 3


class SnapshotLockedError(RuntimeError):
    """Another run holds the lock of this snapshot month (or its lock could not be taken).

    Attributes:
        snapshot: first day of the snapshot month.
        path: the lock file.
        holder: the run named in the lock file (None when it could not be read).
    """

    def __init__(self, snapshot: date, path: str, holder: LockHolder | None, reason: str) -> None:
        self.snapshot, self.path, self.holder = snapshot, path, holder
        who = holder.describe() if holder is not None else "an unknown run (unreadable lock)"
        super().__init__(f"snapshot {snapshot.isoformat()} is locked by {who}: {reason} "
                         f"(lock file {path})")


def lock_dir(output: OutputConfig) -> str:
    """``<warehouse>/_locks/<database>``: absolute for local paths, as given for URIs.

    Raises:
        ConfigError: a local lock folder that resolves outside the warehouse (a symlink
            escape; see :meth:`cvm_spark.config.OutputConfig.location`).
    """
    if is_local(output.warehouse):
        if output.warehouse.startswith("file:"):
            return str((local_path(output.warehouse) / LOCKS_DIR
                        / output.database).resolve())
        return output.location(LOCKS_DIR, output.database)
    return f"{output.warehouse.rstrip('/')}/{LOCKS_DIR}/{output.database}"


def lock_path(output: OutputConfig, snapshot: date) -> str:
    """The lock file of one snapshot month."""
    return f"{lock_dir(output)}/snapshot_month={snapshot.isoformat()}.lock"


def _read_settled(store: LockStore, path: str) -> tuple[bytes | None, LockHolder | None]:
    """The lock's content and holder; None, None when there is no lock (any more).

    A lock created through Hadoop is visible before its content is written: an unreadable
    lock is read again a few times before it counts as unreadable (holder None).
    """
    raw = None
    for attempt in range(READ_ATTEMPTS):
        raw = store.read(path)
        if raw is None:
            return None, None
        try:
            return raw, LockHolder.from_json(raw)
        except ValueError:
            if attempt + 1 < READ_ATTEMPTS:
                time.sleep(READ_PAUSE_SECONDS)
    return raw, None


def _take_over(store: LockStore, path: str, seen: bytes, me: bytes, force: bool) -> bool:
    """Remove the lock if it still holds ``seen``; False if another run is taking it over.

    The check and the removal run under ``<path>.takeover``, which only one process can create,
    so a lock created meanwhile by another run is never removed by mistake.
    """
    guard = path + TAKEOVER_SUFFIX
    if not store.create(guard, me):
        raw, other = _read_settled(store, guard)
        if not force and (other is None or holder_state(other) != "dead"):
            return False
        # a take-over that died half-way (or --break-lock): clear it and try once more
        log.warning("removing the take-over marker %s left by %s", guard,
                    other.describe() if other else "an unknown run")
        if store.read(guard) == raw:
            store.delete(guard)
        if not store.create(guard, me):
            return False
    try:
        if store.read(path) == seen:
            store.delete(path)
        return True
    finally:
        store.delete(guard)


@contextmanager
def snapshot_lock(output: OutputConfig, snapshot: date, run_id: str, *,
                  spark: SparkSession | None = None, app_id: str | None = None,
                  started_at: datetime | None = None,
                  break_lock: bool = False) -> Iterator[LockHolder]:
    """Hold the lock of one snapshot month for the duration of the ``with`` block.

    Args:
        output: the warehouse settings (the lock lives under ``<warehouse>/_locks``).
        snapshot: first day of the snapshot month.
        run_id: the run taking the lock (shown to a run that finds it taken).
        spark: the session; needed for warehouses that are not local paths (Hadoop API).
        app_id: the Spark application id, recorded for the operator.
        started_at: the run's start time, recorded for the operator (from the caller).
        break_lock: take the lock over even when its holder cannot be shown to be dead
            (another machine, unreadable lock); never when the holder is running here.

    Yields:
        The :class:`LockHolder` written to the lock file.

    Raises:
        SnapshotLockedError: another run holds the lock (its details are in the message).
    """
    store = lock_store(output, spark)
    path = lock_path(output, snapshot)
    me = current_holder(run_id, snapshot, app_id, started_at)
    content = me.to_json()
    for _ in range(ACQUIRE_ATTEMPTS):
        if store.create(path, content):
            break
        raw, holder = _read_settled(store, path)
        if raw is None:
            continue  # released meanwhile: try again
        state = holder_state(holder) if holder is not None else "unknown"
        if state == "alive" and (not break_lock or holder.process_start is not None):
            raise SnapshotLockedError(
                snapshot, path, holder,
                "another run of this month is in progress on this host; wait for it to end"
                + (" (--break-lock only takes over locks of runs that are not running)"
                   if break_lock else ""))
        if state == "unknown" and not break_lock:
            raise SnapshotLockedError(
                snapshot, path, holder,
                "another run of this month may be in progress; wait for it to end, or, once "
                "you have made sure it is not running any more, re-run with "
                "`cvm run --break-lock`")
        log.warning("snapshot %s: taking over the lock of %s (%s) at %s", snapshot.isoformat(),
                    holder.describe() if holder else "an unknown run",
                    "--break-lock" if state != "dead" else "its process is gone", path)
        if not _take_over(store, path, raw, content, force=break_lock):
            raise SnapshotLockedError(snapshot, path, holder,
                                      "another run is taking over this stale lock right now")
    else:
        raw, holder = _read_settled(store, path)
        raise SnapshotLockedError(snapshot, path, holder,
                                  f"could not take the lock in {ACQUIRE_ATTEMPTS} attempts")
    log.info("snapshot %s: lock taken by run %s (%s)", snapshot.isoformat(), run_id, path)
    try:
        yield me
    finally:
        if store.read(path) == content:
            store.delete(path)
            log.info("snapshot %s: lock released by run %s", snapshot.isoformat(), run_id)
        else:
            log.warning("snapshot %s: the lock %s no longer belongs to run %s (taken over "
                        "with --break-lock?); left as it is", snapshot.isoformat(), path, run_id)


@contextmanager
def table_write_guard(output: OutputConfig, table: str) -> Iterator[None]:
    """Let one process at a time write ``table`` of a local warehouse (no-op elsewhere).

    ``<warehouse>/_locks/<database>/<table>.write.lock`` is locked with ``flock(2)`` for the
    duration of the ``with`` block; a second process waits for it. The kernel releases the lock
    when the process ends however it ends, so it is never stale; the empty file stays.
    """
    if not is_local(output.warehouse) or fcntl is None:
        yield
        return
    path = Path(lock_dir(output)) / f"{table}.write.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("table %s: waiting for another process writing it (%s)", table, path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

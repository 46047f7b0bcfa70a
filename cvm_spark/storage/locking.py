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

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from cvm_spark.common.jvm import hadoop_file, read_stream
from cvm_spark.config import LOCKS_DIR, OutputConfig

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

HolderState = Literal["alive", "dead", "unknown"]


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


@dataclass(frozen=True)
class LockHolder:
    """Who holds a snapshot lock: the run and the process (the JSON content of the lock file).

    ``boot_id``, ``pid_namespace`` and ``process_start`` (the process's start in clock ticks
    since boot, from ``/proc/<pid>/stat``) are None where ``/proc`` is not available; with them
    a stale lock is recognised even when its PID has been reused.
    """

    run_id: str
    snapshot_month: str
    host: str
    pid: int
    boot_id: str | None = None
    pid_namespace: str | None = None
    process_start: str | None = None
    app_id: str | None = None
    started_at: str | None = None

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LockHolder:
        """Parse a lock file; ValueError when it is not a complete lock (e.g. half-written)."""
        try:
            data = json.loads(raw.decode())
        except UnicodeDecodeError as exc:
            raise ValueError(f"not a lock file: {exc}") from None
        if (not isinstance(data, dict) or not isinstance(data.get("pid"), int)
                or not data.get("run_id") or not data.get("host")):
            raise ValueError("not a lock file: run_id, host or pid missing")
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """``run <id> (host h, pid p, Spark application a, started t)``."""
        parts = [f"host {self.host}", f"pid {self.pid}"]
        if self.app_id:
            parts.append(f"Spark application {self.app_id}")
        if self.started_at:
            parts.append(f"started {self.started_at}")
        return f"run {self.run_id} ({', '.join(parts)})"


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from ``/proc``."""
    text = _read_text(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    fields = text[text.rindex(")") + 2:].split()   # fields 3.. of proc(5); comm may hold ')'
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _machine() -> tuple[str, str | None, str | None]:
    """(host name, boot id, PID namespace) of this process: where its PIDs mean something."""
    return (socket.gethostname(), _read_text("/proc/sys/kernel/random/boot_id"),
            _pid_namespace())


def current_holder(run_id: str, snapshot: date, app_id: str | None = None,
                   started_at: datetime | None = None) -> LockHolder:
    """The :class:`LockHolder` describing this process running ``run_id``."""
    host, boot_id, pid_namespace = _machine()
    stat = _proc_stat(os.getpid())
    return LockHolder(run_id=run_id, snapshot_month=snapshot.isoformat(), host=host,
                      pid=os.getpid(), boot_id=boot_id, pid_namespace=pid_namespace,
                      process_start=stat[1] if stat else None, app_id=app_id,
                      started_at=started_at.isoformat() if started_at else None)


def holder_state(holder: LockHolder) -> HolderState:
    """Whether the holder's process is running: ``alive``, ``dead`` or ``unknown``.

    Only a process of this machine can be checked: same host name, same boot (a reboot ends
    every process, but a different boot id may as well be another machine with the same
    name, so it counts as unknown) and same PID namespace (a container's PIDs mean nothing
    outside it). A PID that is gone, a zombie, or a PID now used by a process that started
    at another time is dead.
    """
    if (holder.host, holder.boot_id, holder.pid_namespace) != _machine():
        return "unknown"
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # it exists (another user's process)
    stat = _proc_stat(holder.pid)
    if stat is None:
        # no /proc here: the PID exists, take it as the holder; with /proc: it just ended
        return "dead" if Path("/proc/self/stat").exists() else "alive"
    state, started = stat
    if state in ("Z", "X") or (holder.process_start is not None
                               and started != holder.process_start):
        return "dead"
    return "alive"


def is_local(warehouse: str) -> bool:
    """A local path or ``file:`` URI (the lock uses ``link(2)``, writes take ``flock(2)``)."""
    return "://" not in warehouse or warehouse.startswith("file:")


def _local_path(location: str) -> str:
    for prefix in ("file://", "file:"):
        if location.startswith(prefix):
            return location[len(prefix):]
    return location


def lock_dir(output: OutputConfig) -> str:
    """``<warehouse>/_locks/<database>``: absolute for local paths, as given for URIs.

    Raises:
        ConfigError: a local lock folder that resolves outside the warehouse (a symlink
            escape; see :meth:`cvm_spark.config.OutputConfig.location`).
    """
    if is_local(output.warehouse):
        if output.warehouse.startswith("file:"):
            return str((Path(_local_path(output.warehouse)) / LOCKS_DIR
                        / output.database).resolve())
        return output.location(LOCKS_DIR, output.database)
    return f"{output.warehouse.rstrip('/')}/{LOCKS_DIR}/{output.database}"


def lock_path(output: OutputConfig, snapshot: date) -> str:
    """The lock file of one snapshot month."""
    return f"{lock_dir(output)}/snapshot_month={snapshot.isoformat()}.lock"


class LockStore(Protocol):
    """The three file operations a lock needs."""

    def create(self, path: str, content: bytes) -> bool:
        """Atomically create ``path`` with ``content``; False if it exists."""

    def read(self, path: str) -> bytes | None:
        """The content, or None if there is no such file."""

    def delete(self, path: str) -> None:
        """Remove the file if it exists."""


class LocalLockStore:
    """Lock files on a local or NFS-mounted file system (``link(2)`` is the atomic step)."""

    def create(self, path: str, content: bytes) -> bool:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}."
                               f"{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: O_EXCL is atomic locally
                try:
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as out:
                    out.write(content)
            return True
        finally:
            with suppress(FileNotFoundError):
                tmp.unlink()

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, path: str) -> None:
        with suppress(FileNotFoundError):
            Path(path).unlink()


class HadoopLockStore:
    """Lock files through Hadoop's FileSystem API (``hdfs://``, ``s3a://``, ``abfs://``, ...).

    The JVM is reached through the session's py4j gateway (:mod:`cvm_spark.common.jvm`): the
    DataFrame API has no create-if-absent, so this part does not run under Spark Connect.
    """

    ALREADY_EXISTS = ("org.apache.hadoop.fs.FileAlreadyExistsException",
                      "java.nio.file.FileAlreadyExistsException",
                      "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException")

    def __init__(self, spark: SparkSession) -> None:
        self._spark = spark

    def _fs(self, path: str):
        return hadoop_file(self._spark, path)

    def create(self, path: str, content: bytes) -> bool:
        from py4j.protocol import Py4JJavaError

        fs, jpath = self._fs(path)
        try:
            out = fs.create(jpath, False)
        except Py4JJavaError as exc:
            name = exc.java_exception.getClass().getName()
            if name in self.ALREADY_EXISTS or fs.exists(jpath):
                return False
            raise
        try:
            out.write(bytearray(content))
        finally:
            out.close()
        return True

    def read(self, path: str) -> bytes | None:
        from py4j.protocol import Py4JJavaError

        fs, jpath = self._fs(path)
        try:
            stream = fs.open(jpath)
        except Py4JJavaError as exc:
            if exc.java_exception.getClass().getName() == "java.io.FileNotFoundException":
                return None
            raise
        try:
            return read_stream(self._spark, stream)
        finally:
            stream.close()

    def delete(self, path: str) -> None:
        fs, jpath = self._fs(path)
        fs.delete(jpath, False)


def lock_store(output: OutputConfig, spark: SparkSession | None = None) -> LockStore:
    """The store for the warehouse: local files, or Hadoop's FileSystem (needs ``spark``)."""
    if is_local(output.warehouse):
        return LocalLockStore()
    if spark is None:
        raise ValueError(f"a lock in {output.warehouse} needs a SparkSession (Hadoop FileSystem)")
    return HadoopLockStore(spark)


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

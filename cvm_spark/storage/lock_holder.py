"""Who holds a snapshot lock (the run and its process) and whether that process is still
running: host name, boot id, PID namespace and the process's start time from ``/proc``, so a
lock left by a dead run is recognised even when its PID has been reused.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Literal

HolderState = Literal["alive", "dead", "unknown"]


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

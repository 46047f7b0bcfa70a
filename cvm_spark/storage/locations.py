"""Where a warehouse location lives: a local path (or ``file:`` URI) or a Hadoop file system.

Local locations get POSIX tools (``link(2)`` for locks, ``flock(2)`` for table writes,
``shutil`` for the work area); every other scheme (``hdfs://``, ``s3a://``, ``abfs://``, ...)
goes through Hadoop's FileSystem.
"""

from __future__ import annotations

from pathlib import Path


def is_local(location: str) -> bool:
    """A local path or ``file:`` URI."""
    return "://" not in location or location.startswith("file:")


def local_path(location: str) -> Path:
    """The local path of a local location (``file:`` / ``file://`` prefix removed)."""
    for prefix in ("file://", "file:"):
        if location.startswith(prefix):
            return Path(location[len(prefix):])
    return Path(location)

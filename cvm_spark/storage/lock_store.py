"""The three file operations a snapshot lock needs (create-if-absent, read, delete), on a
local file system (``link(2)``) or through Hadoop's FileSystem API (``hdfs://``, ``s3a://``,
...). What makes each atomic, and where it is not, is in :mod:`cvm_spark.storage.locking`.
"""

from __future__ import annotations

import os
import socket
import threading
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cvm_spark.common.jvm import hadoop_file, read_stream
from cvm_spark.config import OutputConfig
from cvm_spark.storage.locations import is_local

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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

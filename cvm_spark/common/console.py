"""Keep the driver JVM's start-up chatter off the console.

Spark's own logging goes through log4j (``cvm_spark/log4j2.properties``: INFO and up to the
log file, WARN and up also to the console). Some of what the driver JVM prints does not go
through log4j: the JVM's notice about incubator modules, PySpark's "Setting default log level"
lines and, on a first start, Ivy's resolution report of the Delta jars (dozens of lines, more
behind a proxy). :func:`jvm_stderr_filtered` starts the JVM with its standard error going
through a pipe that a thread of this process reads: every line is appended to the log file,
and only the lines that are not known chatter reach the console, so a real problem the JVM
prints (a crash, an out-of-memory error, log4j's warnings) still shows.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# single lines the JVM prints at every start
CHATTER = re.compile(
    rb"^(WARNING: Using incubator modules|Setting default log level to|"
    rb"To adjust logging level use sc\.setLogLevel|"
    rb"WARNING: (A terminally deprecated method in sun\.misc\.Unsafe|sun\.misc\.Unsafe::)|"
    rb"WARNING: (Please consider reporting this|.* will be removed in a future release))")
# Ivy's resolution report: from its first line to its "artifacts copied" line
IVY_START = re.compile(rb"^(:: loading settings ::|Ivy Default Cache set to|"
                       rb"The jars for the packages stored in|:: resolving dependencies ::)")
IVY_END = re.compile(rb"\d+ artifacts copied, \d+ already retrieved")
# a failed resolution: shown, and so is everything after it
IVY_PROBLEM = re.compile(rb"UNRESOLVED DEPENDENCIES|^Exception in thread|^\S*(Error|Exception)\b")


class ChatterFilter:
    """Reads the JVM's standard error line by line: all of it to the log file, what is not
    chatter to the console."""

    def __init__(self, read_fd: int, console_fd: int, log_file: Path) -> None:
        self._read_fd, self._console_fd, self._log_file = read_fd, console_fd, log_file
        self._in_ivy = False
        self.thread = threading.Thread(target=self._pump, name="cvm-jvm-stderr", daemon=True)

    def is_chatter(self, line: bytes) -> bool:
        """Known chatter, following Ivy's report from its first line to its last (a failed
        resolution ends the report: its problem is not chatter)."""
        if IVY_PROBLEM.search(line):
            self._in_ivy = False
            return False
        if self._in_ivy or IVY_START.match(line):
            self._in_ivy = not IVY_END.search(line)
            return True
        return bool(CHATTER.match(line))

    def _pump(self) -> None:
        log = None
        try:
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            log = open(self._log_file, "ab")  # noqa: SIM115 - open for the JVM's lifetime
        except OSError:
            pass  # no log file: the chatter is dropped, the rest still reaches the console
        with os.fdopen(self._read_fd, "rb") as lines:
            # drain until the JVM closes its end: a full pipe would block the JVM
            for line in lines:
                for target, wanted in ((log, True), (None, not self.is_chatter(line))):
                    if not wanted:
                        continue
                    try:
                        if target is None:
                            os.write(self._console_fd, line)
                        else:
                            target.write(line)
                            target.flush()
                    except (OSError, ValueError):
                        pass  # a closed console or full disk must not stop the draining
        if log is not None:
            log.close()
        os.close(self._console_fd)


@contextmanager
def jvm_stderr_filtered(log_file: Path) -> Iterator[ChatterFilter]:
    """While the block starts a child process (the driver JVM), give it a standard error that
    :class:`ChatterFilter` reads; this process's own standard error is restored on exit.

    The child keeps the pipe for its lifetime; the filter thread ends when it exits.
    """
    read_fd, write_fd = os.pipe()
    console_fd = os.dup(2)
    saved = os.dup(2)
    chatter = ChatterFilter(read_fd, console_fd, log_file)
    chatter.thread.start()
    sys.stderr.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield chatter
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the last write end held here closes: only the child's remains
        os.close(saved)

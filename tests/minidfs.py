"""A real HDFS on this machine for the tests: Hadoop's MiniDFSCluster in a JVM of its own.

The cluster is the one Hadoop's own tests use (a NameNode and a DataNode on 127.0.0.1, data
in a folder the caller owns), started through the command-line launcher that the
``org.apache.hadoop:hadoop-client-minicluster`` jar ships
(``org.apache.hadoop.mapreduce.MiniHadoopClusterManager -nomr``: HDFS only, no MapReduce or
YARN). Its version is the one of the ``hadoop-client-api`` jar inside the installed pyspark
(3.4.2 for pyspark 4.1.1), so the cluster speaks exactly the protocol of Spark's HDFS client.

The classpath is that jar, JUnit (``MiniDFSCluster`` asserts with it) and Hamcrest, fetched
once with Maven (``mvn dependency:copy``) into ``~/.cache/cvm_spark/minicluster-<version>/``
(or ``$CVM_MINICLUSTER_JARS``), plus Hadoop's shaded client and the logging jars from
pyspark's ``jars/`` folder. Nothing is compiled.

Run by hand to try the job on HDFS (stops with Ctrl-C or ``kill``)::

    python tests/minidfs.py /tmp/minidfs      # prints hdfs://127.0.0.1:<port>
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MAIN_CLASS = "org.apache.hadoop.mapreduce.MiniHadoopClusterManager"
JARS_ENV = "CVM_MINICLUSTER_JARS"
# Maven artifacts besides the minicluster jar itself (its pom's runtime dependencies that
# pyspark does not bring)
EXTRA_ARTIFACTS = ("junit:junit:4.13.2", "org.hamcrest:hamcrest-core:1.3")
# from pyspark's jars/ folder: Hadoop's shaded client and the logging the cluster uses
PYSPARK_JARS = ("hadoop-client-api-", "hadoop-client-runtime-", "slf4j-api-",
                "log4j-slf4j2-impl-", "log4j-api-", "log4j-core-", "jcl-over-slf4j-")
START_SECONDS = 120
MVN_SECONDS = 600


class MiniDfsError(RuntimeError):
    """The cluster could not be set up or started (the message says why)."""


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def hadoop_version() -> str:
    """The Hadoop version of pyspark's ``hadoop-client-api`` jar (e.g. ``3.4.2``)."""
    names = sorted(pyspark_jars_dir().glob("hadoop-client-api-*.jar"))
    if not names:
        raise MiniDfsError(f"no hadoop-client-api jar in {pyspark_jars_dir()}")
    return names[-1].name[len("hadoop-client-api-"):-len(".jar")]


def jars_dir(version: str) -> Path:
    return Path(os.environ.get(JARS_ENV)
                or Path.home() / ".cache" / "cvm_spark" / f"minicluster-{version}")


def _artifacts(version: str) -> tuple[str, ...]:
    return (f"org.apache.hadoop:hadoop-client-minicluster:{version}", *EXTRA_ARTIFACTS)


def _jar_name(artifact: str) -> str:
    _, name, version = artifact.split(":")
    return f"{name}-{version}.jar"


def fetch_jars(version: str | None = None) -> list[Path]:
    """The minicluster's jars from the cache, fetched with ``mvn dependency:copy`` when absent.

    Raises:
        MiniDfsError: Maven is missing or could not fetch an artifact (its output included).
    """
    version = version or hadoop_version()
    target = jars_dir(version)
    wanted = [target / _jar_name(a) for a in _artifacts(version)]
    missing = [a for a, p in zip(_artifacts(version), wanted, strict=True) if not p.is_file()]
    if missing:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise MiniDfsError("Maven (mvn) is needed once to fetch "
                               f"{', '.join(missing)} into {target} (apt-get install maven)")
        target.mkdir(parents=True, exist_ok=True)
        staging = target / f".staging-{os.getpid()}"
        try:
            for artifact in missing:  # into a private folder, then renamed: no half jars
                proc = subprocess.run(
                    [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}",
                     f"-DoutputDirectory={staging}"], capture_output=True, text=True,
                    timeout=MVN_SECONDS, stdin=subprocess.DEVNULL, check=False)
                jar = staging / _jar_name(artifact)
                if proc.returncode != 0 or not jar.is_file():
                    raise MiniDfsError(f"mvn could not fetch {artifact} (exit "
                                       f"{proc.returncode}):\n{proc.stdout[-2000:]}"
                                       f"\n{proc.stderr[-2000:]}")
                jar.replace(target / jar.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return wanted


def classpath(version: str | None = None) -> list[Path]:
    """The minicluster's jars and the ones it takes from pyspark."""
    jars = fetch_jars(version)
    folder = pyspark_jars_dir()
    for prefix in PYSPARK_JARS:
        found = sorted(p for p in folder.glob(f"{prefix}*.jar")
                       if p.name[len(prefix)].isdigit())
        if not found:
            raise MiniDfsError(f"no {prefix}*.jar in {folder}")
        jars.append(found[-1])
    return jars


try:  # looked up here, not in the forked child
    _PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _PRCTL = None


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux), so no NameNode
    outlives a killed test run."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


@dataclass
class MiniDfs:
    """A running MiniDFSCluster: its URI (``hdfs://127.0.0.1:<port>``), process and log."""

    uri: str
    proc: subprocess.Popen
    base: Path
    log: Path

    def url(self, path: str) -> str:
        """``hdfs://127.0.0.1:<port>/<path>``."""
        return f"{self.uri}/{path.lstrip('/')}"

    def stop(self) -> None:
        """Stop the JVM (SIGTERM, then SIGKILL) with its process group."""
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)


def start(base: Path, *, datanodes: int = 1, timeout: float = START_SECONDS) -> MiniDfs:
    """Start a MiniDFSCluster with its data under ``base`` and wait until it serves.

    Raises:
        MiniDfsError: Java is missing, the JVM exited, or no NameNode port within ``timeout``
            (the cluster's log is in the message).
    """
    java = shutil.which("java")
    if java is None:
        raise MiniDfsError("Java is needed for the MiniDFSCluster")
    cp = os.pathsep.join(str(p) for p in classpath())
    base.mkdir(parents=True, exist_ok=True)
    details, log = base / "details.json", base / "minidfs.log"
    details.unlink(missing_ok=True)
    cmd = [java, "-Xmx512m", "-XX:+UseSerialGC", f"-Dtest.build.data={base / 'data'}",
           f"-Dhadoop.tmp.dir={base / 'tmp'}", "-cp", cp, MAIN_CLASS, "-nomr", "-format",
           "-datanodes", str(datanodes), "-nnport", "0", "-nnhttpport", "0",
           "-writeDetails", str(details)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent, cwd=base)
    cluster = MiniDfs("", proc, base, log)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise MiniDfsError(f"the MiniDFSCluster exited with {proc.returncode}:\n"
                                   f"{log.read_text(errors='replace')[-4000:]}")
            with contextlib.suppress(OSError, ValueError):  # not written (completely) yet
                port = int(json.loads(details.read_text())["namenode_port"])
                cluster.uri = f"hdfs://127.0.0.1:{port}"
                return cluster
            if time.monotonic() > deadline:
                raise MiniDfsError(f"no NameNode port within {timeout:.0f}s:\n"
                                   f"{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    base = Path(argv[0] if argv else "minidfs").resolve()
    # Ctrl-C and kill both stop the cluster (a background job may ignore SIGINT)
    signal.signal(signal.SIGTERM, _interrupt)
    cluster = start(base)
    print(cluster.uri, flush=True)
    try:
        cluster.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

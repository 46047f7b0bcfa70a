"""Serve the output tables over JDBC/ODBC with the Spark Thrift Server (HiveServer2 protocol).

The catalog is in-memory (no Hive metastore), so the tables only have names in the session
that registered them. The server is therefore started *inside* the driver that registered
them, with ``HiveThriftServer2.startWithSparkSession``: every JDBC session is a new Spark
session over the same shared catalog, so ``select * from cvm.tiers`` and
``cvm.tiers_latest`` work for every client. New snapshots written while the server runs are
visible at once (Delta reads the newest table version per query); a table that did not exist
at start-up needs a restart. Started by ``scripts/thrift.sh``: ``spark-submit
jobs/cvm_job.py thrift`` with the Delta jars on ``--driver-class-path`` as well (see
:func:`driver_class_path`; ``cvm thrift`` refuses to start without them).

Clients authenticate as the config's ``thrift`` section says (none, LDAP or Kerberos;
docs/bi.md, "authentication"): :func:`preflight` refuses, before Spark starts, to listen
beyond loopback without authentication; :func:`thrift_conf` and :func:`serve` hand the
settings to HiveServer2 both as ``spark.hadoop.*`` and as Java system properties (its LDAP
provider reads only the latter) and check that the running server uses them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.sql import SparkSession

from cvm_spark.common.jvm import (
    context_stopped,
    fresh_hive_conf,
    set_system_properties,
    start_with_session,
    system_class_loader,
)
from cvm_spark.config import ConfigError, CvmConfig, OutputConfig, ThriftConfig
from cvm_spark.storage.delta import (
    create_database,
    latest_view_name,
    qualified_name,
    register_tables,
)

log = logging.getLogger(__name__)

# Printed (flushed) once the server accepts connections; scripts/thrift.sh waits for it.
READY_MARKER = "cvm thrift server ready"

THRIFT_SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"

# Printed before the driver class path by `cvm thrift --print-driver-classpath`.
CLASSPATH_MARKER = "cvm thrift driver class path: "

# Jar names (Ivy's <organisation>_<artifact>, or plain artifact names) of Delta itself.
DELTA_JAR_PREFIXES = ("io.delta_", "io.unitycatalog_", "delta-", "unitycatalog-")


class ThriftStartError(RuntimeError):
    """The Thrift server cannot be started as configured."""


def thrift_conf(host: str, port: int, access: ThriftConfig | None = None) -> dict[str, str]:
    """Spark settings of the Thrift server driver, listening on ``host:port`` and
    authenticating clients as ``access`` says (default: no authentication).

    HiveServer2 reads its authentication method from these ``spark.hadoop.*`` settings;
    the LDAP provider reads its own settings from a new ``HiveConf`` per login, which sees
    only system properties, so :func:`serve` sets those as well.
    """
    hive = (access or ThriftConfig()).hive_settings()
    return {
        **{f"spark.hadoop.{name}": value for name, value in hive.items()},
        "spark.hadoop.hive.server2.thrift.bind.host": host,
        "spark.hadoop.hive.server2.thrift.port": str(port),
        "spark.hadoop.hive.server2.transport.mode": "binary",
        # JDBC sessions run with spark.sql.datetime.java8API.enabled=true (forced by the
        # server), and Delta's metadata-only answer to min/max of a DATE column then fails
        # ("LocalDate cannot be cast to java.sql.Date"), e.g. max(snapshot_month) in the
        # _latest views. Without the shortcut Spark reads the partition values itself.
        "spark.databricks.delta.optimizeMetadataQuery.enabled": "false",
    }


def jdbc_url(host: str, port: int, database: str = "") -> str:
    """The Hive JDBC URL of the server, e.g. ``jdbc:hive2://127.0.0.1:10000/cvm``."""
    return f"jdbc:hive2://{host}:{port}/{database}"


def preflight(cfg: CvmConfig, host: str, environ: Mapping[str, str] | None = None) -> None:
    """What ``cvm thrift`` checks before Spark starts.

    Raises:
        ConfigError: no authentication while ``host`` is not a loopback address
            (:meth:`ThriftConfig.check_listener`), or the pseudonym key's environment
            variable is set for the server: any JDBC user could read it back with
            ``reflect('java.lang.System', 'getenv', ...)`` and re-identify the account keys
            (the server never needs the key).
    """
    cfg.thrift.check_listener(host)
    env = os.environ if environ is None else environ
    if env.get(cfg.privacy.key_env):
        raise ConfigError(
            f"thrift: the environment variable {cfg.privacy.key_env} (privacy.key_env, the "
            "pseudonym key) is set; JDBC users could read it from the server's environment. "
            f"Start the server without it, e.g. env -u {cfg.privacy.key_env} "
            "bash scripts/thrift.sh start")


def _configure_authentication(spark: SparkSession, access: ThriftConfig) -> None:
    """Hand the authentication settings to the HiveServer2 code that reads them from a new
    ``HiveConf`` (system properties, as ``--hiveconf`` would) and check that it sees them."""
    hive = access.hive_settings()
    set_system_properties(spark, hive)
    seen = fresh_hive_conf(spark, list(hive))
    wrong = sorted(name for name, value in hive.items() if seen[name] != value)
    if wrong:
        raise ThriftStartError(f"HiveServer2 does not see the authentication settings {wrong} "
                               "that were set; refusing to start")


def _check_server_authentication(server: Any, access: ThriftConfig) -> None:
    """The running server's authentication method is the configured one (else stop it)."""
    name = "hive.server2.authentication"
    want = access.hive_settings()[name]
    have = str(server.getHiveConf().get(name) or "NONE")
    if have.upper() != want:
        server.stop()
        raise ThriftStartError(f"the Thrift server started with {name}={have}, not {want} as "
                               "configured; stopped it")


def _check_environment(host: str, port: int) -> None:
    # HiveServer2 lets these environment variables win over its configuration; refuse a
    # silent mismatch with the requested address.
    for var, wanted in (("HIVE_SERVER2_THRIFT_PORT", str(port)),
                        ("HIVE_SERVER2_THRIFT_BIND_HOST", host)):
        value = os.environ.get(var)
        if value is not None and value != wanted:
            raise ThriftStartError(f"environment variable {var}={value} overrides the requested "
                             f"{wanted}; unset it or use the same value")


def _check_system_class_path(spark: SparkSession) -> None:
    # Fail at start-up rather than on every JDBC connection (see driver_class_path).
    catalog = spark.conf.get("spark.sql.catalog.spark_catalog", None)
    if not catalog:
        return
    loader = system_class_loader(spark)
    try:
        loader.loadClass(catalog)
    except Py4JJavaError as exc:  # ClassNotFoundException
        raise ThriftStartError(
            f"{catalog} is not on the driver's class path, so JDBC sessions could not load "
            "it; start the server with scripts/thrift.sh, or give spark-submit the Delta "
            "jars with --driver-class-path as well as --packages") from exc


def start_thrift_server(spark: SparkSession) -> Any:
    """Start the Thrift server in this driver's JVM, sharing its catalog.

    The listener address comes from :func:`thrift_conf` (set when the session was built).
    There is no Python API for this, so it goes through the py4j gateway; it therefore needs
    a classic (non-Spark-Connect) session, which a spark-submit driver is. JDBC sessions
    load the Delta catalog class through the system class loader (see
    :func:`driver_class_path`), so the Delta jars must be on the driver's class path.

    Returns:
        The JVM ``HiveThriftServer2`` object (``.stop()`` stops it).
    """
    # exitOnError=true: a listener that cannot bind ends the driver instead of leaving a
    # server without a port behind
    return start_with_session(spark, THRIFT_SERVER_CLASS)


def driver_class_path(spark_jars: str) -> list[str]:
    """The Delta jars among ``spark.jars`` that must also be on the driver's class path.

    ``--packages`` jars live in a child class loader that the driver's main thread uses. The
    Thrift server opens each JDBC session in a worker thread whose context class loader Hive
    resets to one over the system class path (HIVE-11878), so the new session cannot load
    ``DeltaCatalog`` (delta-io/delta#1332: "Cannot find catalog plugin class for catalog
    'spark_catalog'"). Putting Delta's own jars (and Unity Catalog's, which Delta links
    against) on ``--driver-class-path`` fixes that; their third-party dependencies
    (Jackson, Parquet, Hadoop, ...) are already in pyspark's jars and are left out, so
    nothing there is shadowed.

    Args:
        spark_jars: the comma-separated ``spark.jars`` of a spark-submit run with
            ``--packages`` (Ivy names them ``<organisation>_<artifact>-<version>.jar``).

    Returns:
        Local paths, in the given order.
    """
    paths = []
    for uri in filter(None, (j.strip() for j in spark_jars.split(","))):
        path = urlparse(uri).path if uri.startswith("file:") else uri
        name = os.path.basename(path)
        if name.endswith(".jar") and name.startswith(DELTA_JAR_PREFIXES):
            paths.append(path)
    return paths


def print_driver_class_path() -> None:
    """Print :func:`driver_class_path` of this spark-submit run (no SparkContext needed)."""
    from pyspark import SparkConf, SparkContext

    # attach to spark-submit's JVM (no SparkContext) so SparkConf sees its resolved settings
    SparkContext._ensure_initialized()
    jars = driver_class_path(SparkConf().get("spark.jars", ""))
    print(f"{CLASSPATH_MARKER}{os.pathsep.join(jars)}", flush=True)


def _context_stopped(spark: SparkSession) -> bool:
    try:
        return context_stopped(spark)
    except Py4JError:  # the JVM is gone (stopped from outside)
        return True


def serve(spark: SparkSession, output: OutputConfig, host: str, port: int,
          stop: threading.Event | None = None, access: ThriftConfig | None = None
          ) -> list[str]:
    """Register the output tables, start the Thrift server and block until asked to stop.

    Args:
        spark: a classic session built with :func:`thrift_conf` for ``host``, ``port`` and
            ``access``.
        output: the warehouse whose tables are served.
        host: the address the listener binds to (shown in the ready line).
        port: the listener port.
        stop: set it to stop the server; by default SIGTERM and SIGINT set it.
        access: how clients authenticate (default: not at all); checked against
            ``host`` by :func:`preflight` before the session was built.

    Returns:
        The tables that were served.

    Raises:
        ThriftStartError: HiveServer2 environment variables contradict ``host``/``port``,
            the session catalog class is not on the driver's system class path, or
            HiveServer2 does not see the configured authentication.
    """
    access = access or ThriftConfig()
    _check_environment(host, port)
    _check_system_class_path(spark)
    _configure_authentication(spark, access)
    tables = register_tables(spark, output)
    if not tables:
        log.warning("no output tables under %s/%s; serving an empty database",
                    output.warehouse, output.database)
    create_database(spark, output)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    server = start_thrift_server(spark)
    _check_server_authentication(server, access)
    names = [f"{qualified_name(output, t)} ({latest_view_name(output, t)})" for t in tables]
    print(f"{READY_MARKER}: {jdbc_url(host, port, output.database)} (authentication "
          f"{access.authentication}) serving {', '.join(names) or 'no tables'}", flush=True)
    try:
        while not stop.wait(2.0):
            if _context_stopped(spark):
                log.warning("the Spark context stopped; the Thrift server ends")
                break
    finally:
        try:
            server.stop()
        except Py4JError as exc:  # the JVM may already be shutting down (SIGTERM to both)
            log.debug("stopping the Thrift server: %s", exc)
    log.info("thrift server on %s:%d stopped", host, port)
    return tables

"""The py4j gateway: the few things Spark has no public Python API for, in one place.

Every use of ``spark._jvm``, ``spark._jsc``, ``spark._jsparkSession`` or ``df._jdf`` in
``cvm_spark`` is here (``tests/test_architecture.py`` checks it). Each needs a classic
session (a driver with a JVM), not Spark Connect; callers that can do without say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # no pyspark import at run time: the lock tests run without Spark
    from pyspark.sql import DataFrame, SparkSession


def hadoop_file(spark: SparkSession, location: str) -> tuple[Any, Any]:
    """``(FileSystem, Path)`` of a location through Hadoop's FileSystem API (any scheme the
    cluster knows: ``hdfs://``, ``s3a://``, ``abfs://``, ``file:``). The DataFrame API can
    neither create a file only if it is absent nor delete one."""
    path = spark._jvm.org.apache.hadoop.fs.Path(location)
    return path.getFileSystem(spark._jsc.hadoopConfiguration()), path


def read_stream(spark: SparkSession, stream: Any) -> bytes:
    """All bytes of a JVM ``InputStream`` (the caller closes it)."""
    return bytes(spark._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))


def plan_size_in_bytes(df: DataFrame) -> int:
    """Spark's size estimate of ``df``'s optimised plan (no job runs).

    Raises:
        AttributeError: Spark Connect (no ``_jdf``).
        Py4JError: the plan has no statistics.
    """
    size = df._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()
    # a Scala BigInt: py4j hands it over as a Python int (older versions: a JavaObject)
    return int(size) if isinstance(size, int) else int(str(size.toString()))


def system_class_loader(spark: SparkSession) -> Any:
    """The driver JVM's system class loader (``loadClass(name)`` raises if it is absent)."""
    return spark.sparkContext._jvm.java.lang.ClassLoader.getSystemClassLoader()


def set_system_properties(spark: SparkSession, properties: dict[str, str]) -> None:
    """Set Java system properties of the driver's JVM (what ``--hiveconf k=v`` does for
    the Thrift server's own ``main``)."""
    system = spark.sparkContext._jvm.java.lang.System
    for name, value in properties.items():
        system.setProperty(name, value)


def fresh_hive_conf(spark: SparkSession, names: list[str]) -> dict[str, str | None]:
    """The values of ``names`` in a ``new HiveConf()`` of the driver's JVM: what HiveServer2
    code that builds its own configuration (e.g. the LDAP provider, per login) sees."""
    conf = spark.sparkContext._jvm.org.apache.hadoop.hive.conf.HiveConf()
    return {name: conf.get(name) for name in names}


def start_with_session(spark: SparkSession, class_name: str) -> Any:
    """Call ``<class_name>.startWithSparkSession(session, exitOnError=true)`` in the driver's
    JVM (the Thrift server) and return what it returns."""
    target = spark.sparkContext._jvm
    for part in class_name.split("."):
        target = getattr(target, part)
    return target.startWithSparkSession(spark._jsparkSession, True)


def context_stopped(spark: SparkSession) -> bool:
    """Has the JVM's SparkContext stopped (e.g. from outside the Python driver)?

    Raises:
        Py4JError: the JVM is gone.
    """
    return bool(spark.sparkContext._jsc.sc().isStopped())

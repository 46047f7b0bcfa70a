"""cvm_spark: customer value model jobs on Apache Spark with Delta Lake outputs."""

__version__ = "0.1.0"

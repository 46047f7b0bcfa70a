"""spark-submit entry point for the cvm_spark pipeline.

    spark-submit --master spark://host:7077 \
        --packages io.delta:delta-spark_4.1_2.13:4.4.0 \
        --py-files cvm_spark.zip --files conf/cvm.yaml \
        jobs/cvm_job.py run --config cvm.yaml

It only hands its arguments to the ``cvm`` command line (same subcommands and flags), which
parses them, loads and validates the config, builds the session and calls the library.
"""

import sys

from cvm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""spark-submit entry point for the cvm_spark pipeline.

    bash scripts/submit.sh --master spark://host:7077 -- --snapshot 2024-12

packages the code (``dist/cvm_spark-*.zip``, copied with this file to ``dist/``) and runs
spark-submit with the Delta package and settings; ``--dry-run`` prints the command, and
docs/cluster.md shows it written out by hand for standalone, YARN and Kubernetes.

It only hands its arguments to the ``cvm`` command line (same subcommands and flags), which
parses them, loads and validates the config, builds the session and calls the library.
"""

import sys

from cvm_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

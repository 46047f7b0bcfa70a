"""``python -m cvm_spark`` runs the ``cvm`` command line."""

import sys

from cvm_spark.cli import main

sys.exit(main())

#!/usr/bin/env bash
# Build what a cluster needs into dist/ (see docs/cluster.md):
#   dist/cvm_spark-<version>.zip   the package, for spark-submit --py-files
#   dist/cvm_generate-<version>.zip  the synthetic data generator (generate jobs only)
#   dist/cvm_job.py                the spark-submit entry point (copy of jobs/cvm_job.py)
#   dist/cvm.yaml                  the config, for --files
#   dist/requirements-driver.txt   what the driver imports besides pyspark (executors: none)
# Usage: bash scripts/package.sh [--dist DIR] [--config FILE]   (paths relative to the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
# `python -m` from the checkout root imports this checkout's cvm_spark, installed or not.
. scripts/env.sh
exec "$PY" -m cvm_spark package "$@"

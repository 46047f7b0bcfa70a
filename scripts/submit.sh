#!/usr/bin/env bash
# Package this checkout (scripts/package.sh) and run the pipeline with spark-submit on any
# master, with the Delta package and SQL settings, dist/cvm_spark-*.zip as --py-files and the
# config as --files (see docs/cluster.md and `python -m cvm_spark submit --help`).
#
#   bash scripts/submit.sh [--master URL] [--deploy-mode client|cluster] [--dry-run]
#        [other spark-submit options] -- [run|generate] [job options]
#
# e.g. bash scripts/submit.sh --master spark://127.0.0.1:7077 --executor-memory 1g -- \
#        --config conf/cvm.yaml --snapshot 2024-12 --set output.warehouse=/abs/path
# Relative paths (--config, --dist, output.warehouse, inputs.root) are relative to the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
# `python -m` from the checkout root imports this checkout's cvm_spark, installed or not.
. scripts/env.sh
exec "$PY" -m cvm_spark submit "$@"

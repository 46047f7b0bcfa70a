#!/usr/bin/env bash
# Install cvm_spark and its dependencies into the current Python (idempotent).
# Usage: bash scripts/setup.sh [extras]   e.g. bash scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v java >/dev/null 2>&1; then
  echo "setup: Java 17+ is required by Spark 4 (e.g. apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi
extras=${1:-}
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
"$PY" -m pip install --quiet --disable-pip-version-check -e "$spec"

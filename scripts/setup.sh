#!/usr/bin/env bash
# Install cvm_spark (editable) and its dependencies into the project's virtual environment,
# creating it if absent (idempotent): .venv at the checkout root, or $CVM_VENV.
# The environment is made with uv when it is on PATH, else with `$PYTHON -m venv` and pip;
# $PYTHON (default python3) chooses the interpreter: any Python that pyspark supports (>= 3.10).
# Usage: bash scripts/setup.sh [extras]   e.g. bash scripts/setup.sh test
# Afterwards: .venv/bin/cvm ..., or `source .venv/bin/activate` and cvm ...
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CVM_VENV:-$PWD/.venv}
BASE=${PYTHON:-python3}
if ! command -v java >/dev/null 2>&1; then
  echo "setup: Java 17+ is required by Spark 4 (e.g. apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi
extras=${1:-}
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
UV=$(command -v uv || true)
if [ ! -x "$VENV/bin/python" ]; then
  if [ -n "$UV" ]; then
    "$UV" venv --quiet --python "$BASE" "$VENV"
  elif ! "$BASE" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "setup: could not create a virtual environment with $BASE -m venv; on Debian or" \
         "Ubuntu install python3-venv (apt-get install python3-venv), or install uv" >&2
    exit 1
  fi
  echo "setup: created $VENV ($("$VENV/bin/python" --version 2>&1))" >&2
fi
if [ -n "$UV" ]; then
  "$UV" pip install --quiet --python "$VENV/bin/python" -e "$spec"
else
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
fi

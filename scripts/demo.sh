#!/usr/bin/env bash
# One command from a fresh clone: install, generate a sample bank (20,000 accounts x 24
# months), run validate -> features -> RFM for the latest snapshot in local mode, write the
# Delta tables under ./warehouse and print a summary.
# Extra arguments go to `cvm run`, e.g. bash scripts/demo.sh --accounts 2000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
exec "$PY" -m cvm_spark run --config conf/cvm.yaml --generate --master 'local[*]' "$@"

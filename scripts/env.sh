# Sourced by the scripts (not run): the project's Python.
#   VENV  the project's virtual environment: $CVM_VENV, default <checkout>/.venv
#   PY    its interpreter once scripts/setup.sh has created it; before that the Python that
#         creates it: $PYTHON, default python3 (scripts/setup.sh)
# The scripts that install (demo, test, bench) run scripts/setup.sh first; the others
# (package, submit, thrift) use the environment if it is there and $PYTHON / python3 if not.
_cvm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${CVM_VENV:-$_cvm_root/.venv}
if [ -x "$VENV/bin/python" ]; then
  PY="$VENV/bin/python"
else
  PY=${PYTHON:-python3}
fi
unset _cvm_root

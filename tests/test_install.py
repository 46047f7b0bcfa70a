"""Installs where users are: ``scripts/setup.sh`` makes a project virtual environment with
another Python than the suite's (the newest one on the machine that pyspark supports) and
the job runs there end to end.

The other Python is ``$CVM_TEST_PYTHON`` when set, else the newest ``python3.N`` (N >= 10,
not the suite's own minor version) found on PATH or under pyenv's versions folder. Without
one the test is skipped with that reason (CI machines have pyenv's 3.13).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OLDEST_MINOR = 10  # pyspark 4.1 and delta-spark 4.4: requires-python >= 3.10
INSTALL_SECONDS = 1200
RUN_SECONDS = 900

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed"),
]


def _minor(python: str) -> int | None:
    """The minor version of a working ``python3`` interpreter with ``venv``, else None."""
    try:
        out = subprocess.run([python, "-c", "import sys, venv; print(sys.version_info[1])"],
                             capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return None
    return int(out.stdout) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def _candidates() -> list[str]:
    found = [shutil.which(f"python3.{m}") for m in range(OLDEST_MINOR, 20)]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found += [str(p) for p in sorted(Path(pyenv_root, "versions").glob("3.*/bin/python3"))]
    return [p for p in found if p]


def other_python() -> str | None:
    """The Python to install into: ``$CVM_TEST_PYTHON`` or the newest other supported one."""
    if os.environ.get("CVM_TEST_PYTHON"):
        return os.environ["CVM_TEST_PYTHON"]
    best: tuple[int, str] | None = None
    for python in _candidates():
        minor = _minor(python)
        if minor is None or minor < OLDEST_MINOR or minor == sys.version_info[1]:
            continue
        if best is None or minor > best[0]:
            best = (minor, python)
    return best[1] if best else None


def test_setup_makes_a_venv_of_another_python_and_the_job_runs_there(tmp_path):
    python = other_python()
    if python is None:
        pytest.skip("no other Python >= 3.10 with venv on this machine (set CVM_TEST_PYTHON)")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env.update(CVM_VENV=str(venv), PYTHON=python)
    setup = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=INSTALL_SECONDS, check=False)
    assert setup.returncode == 0, setup.stderr[-3000:]
    assert f"setup: created {venv}" in setup.stderr
    version = subprocess.run([venv / "bin" / "python", "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"3.{_minor(python)}."), version

    cvm = str(venv / "bin" / "cvm")  # the console script of the editable install
    shown = subprocess.run([cvm, "--version"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120, check=False)
    assert shown.returncode == 0 and "spark 4.1" in shown.stdout.lower(), shown

    env["CVM_SPARK_LOG"] = str(tmp_path / "spark.log")
    run = subprocess.run(
        [cvm, "run", "--config", str(ROOT / "conf" / "cvm.yaml"), "--generate",
         "--accounts", "300", "--master", "local[2]",
         "--set", f"inputs.root={tmp_path / 'data'}",
         "--set", f"output.warehouse={tmp_path / 'wh'}", "--set", "generator.months=13",
         "--set", "future_value.backtest.origins=1"],   # tests/banks.py ONE_BACKTEST_ORIGIN
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=RUN_SECONDS,
        check=False)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    scored = re.search(r"accounts scored: ([\d,]+)", run.stdout)
    assert scored and int(scored.group(1).replace(",", "")) > 200, run.stdout
    assert re.search(r"tiers\s+[\d,]+ rows", run.stdout), run.stdout
    # the tables are Delta tables any reader opens, written by the other Python's driver
    from deltalake import DeltaTable

    tiers = DeltaTable(str(tmp_path / "wh" / "cvm" / "tiers")).to_pyarrow_table()
    assert tiers.num_rows == int(scored.group(1).replace(",", ""))

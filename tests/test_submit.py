"""Packaging and the spark-submit command line (no Spark started)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cvm_spark import __version__
from cvm_spark.cli import build_parser, main
from cvm_spark.common.session import delta_maven_coordinates
from cvm_spark.serve.submit import build_dist, find_dist, spark_submit_command, write_package_zip

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "conf" / "cvm.yaml"


def test_zip_holds_the_package_sources_and_is_reproducible(tmp_path):
    first = write_package_zip(tmp_path / "a.zip", ROOT / "cvm_spark")
    second = write_package_zip(tmp_path / "b.zip", ROOT / "cvm_spark")
    names = zipfile.ZipFile(first).namelist()
    expected = sorted(f"cvm_spark/{p.relative_to(ROOT / 'cvm_spark').as_posix()}"
                      for p in (ROOT / "cvm_spark").rglob("*.py") if "__pycache__" not in p.parts)
    assert names == expected
    assert "cvm_spark/serve/submit.py" in names and "cvm_spark/__init__.py" in names
    # the synthetic data generator is not part of the job's zip
    assert not any("generate" in n for n in names)
    assert first.read_bytes() == second.read_bytes()


def test_build_dist_writes_what_the_cluster_needs(tmp_path):
    (tmp_path / "cvm_spark-0.0.1.zip").write_text("stale")
    dist = build_dist(tmp_path, CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"cvm_spark-{__version__}.zip", f"cvm_generate-{__version__}.zip", "cvm_job.py",
         "cvm.yaml", "requirements-driver.txt"])
    assert sorted(zipfile.ZipFile(dist.generator_zip).namelist()) == sorted(
        f"cvm_generate/{p.name}" for p in (ROOT / "cvm_generate").glob("*.py"))
    assert "cvm_generate/bank.py" in zipfile.ZipFile(dist.generator_zip).namelist()
    assert dist.job_path.read_text() == (ROOT / "jobs" / "cvm_job.py").read_text()
    assert dist.config_path.read_text() == CONFIG.read_text()
    reqs = [r for r in dist.requirements_path.read_text().splitlines() if not r.startswith("#")]
    assert [r.split(">")[0].split("=")[0] for r in reqs] == ["pyyaml", "numpy", "scipy"]
    assert find_dist(tmp_path) == dist


def test_command_ships_zip_and_config_and_delta(tmp_path):
    dist = build_dist(tmp_path, CONFIG)
    cmd = spark_submit_command(dist, ["run", "--snapshot", "2024-11"], CONFIG,
                               master="spark://h:7077", spark_submit="spark-submit",
                               spark_submit_args=["--conf", "a=b"])
    assert cmd == [
        "spark-submit", "--master", "spark://h:7077", "--deploy-mode", "client",
        "--name", "cvm_spark", "--packages", delta_maven_coordinates(),
        "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
        "--conf",
        "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "--py-files", str(dist.zip_path), "--files", str(CONFIG), "--conf", "a=b",
        str(dist.job_path), "run", "--snapshot", "2024-11", "--config", str(CONFIG)]
    # cluster mode: the driver finds the shipped config in its working directory
    cmd = spark_submit_command(dist, ["run"], CONFIG, deploy_mode="cluster",
                               packages="org.x:y:1", spark_submit="spark-submit")
    assert cmd[-2:] == ["--config", "cvm.yaml"] and "--master" not in cmd
    assert cmd[cmd.index("--packages") + 1] == f"org.x:y:1,{delta_maven_coordinates()}"
    cmd = spark_submit_command(dist, [], CONFIG, packages="io.delta:delta-spark_4.0_2.13:4.0.0")
    assert cmd[cmd.index("--packages") + 1] == "io.delta:delta-spark_4.0_2.13:4.0.0"


def test_cvm_submit_dry_run(tmp_path, capsys):
    rc = main(["submit", "--dry-run", "--master", "yarn", "--dist", str(tmp_path),
               "--executor-memory", "2g", "--", "--config", str(CONFIG),
               "--snapshot", "2024-11", "--set", "output.warehouse=/wh"])
    assert rc == 0
    cmd = shlex.split(capsys.readouterr().out)
    job = cmd.index(str(tmp_path / "cvm_job.py"))
    assert cmd[job + 1:] == ["run", "--snapshot", "2024-11", "--set", "output.warehouse=/wh",
                             "--config", str(CONFIG)]  # `run` is the default subcommand
    assert cmd[job - 2:job] == ["--executor-memory", "2g"]  # passed through after ours
    assert cmd[cmd.index("--name") + 1] == "cvm-run"
    assert (tmp_path / f"cvm_spark-{__version__}.zip").is_file()  # packaged first
    # the scoring job ships its own zip only, not the generator's
    assert cmd[cmd.index("--py-files") + 1] == str(tmp_path / f"cvm_spark-{__version__}.zip")


@pytest.mark.parametrize("job", [["generate"], ["run", "--generate"]])
def test_cvm_submit_ships_the_generator_for_generate_jobs(tmp_path, capsys, job):
    rc = main(["submit", "--dry-run", "--dist", str(tmp_path), "--", *job,
               "--config", str(CONFIG)])
    assert rc == 0
    cmd = shlex.split(capsys.readouterr().out)
    assert cmd[cmd.index("--py-files") + 1].split(",") == [
        str(tmp_path / f"cvm_spark-{__version__}.zip"),
        str(tmp_path / f"cvm_generate-{__version__}.zip")]


def test_cvm_submit_rejects_a_bad_job_config_before_submitting(tmp_path, capsys):
    rc = main(["submit", "--dry-run", "--dist", str(tmp_path), "--",
               "generate", "--config", str(CONFIG), "--set", "nope=1"])
    assert rc == 2
    assert "config error" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing packaged or submitted
    assert main(["submit", "--dry-run", "--", "validate-config"]) == 2
    assert main(["submit", "--dry-run", "--no-package", "--dist", str(tmp_path), "--",
                 "--config", str(CONFIG)]) == 2  # no zip there yet


def test_only_submit_takes_pass_through_arguments():
    with pytest.raises(SystemExit) as exc:
        main(["run", "--executor-memory", "2g"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["run", "--", "--snapshot", "2024-11"])


@pytest.mark.parametrize("command", ["validate-config", "generate", "run", "package", "submit"])
def test_every_subcommand_has_help(command):
    assert command in build_parser().format_help()
    out = subprocess.run([sys.executable, "-m", "cvm_spark", command, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("usage: cvm ") and "--help" in out


def test_project_dependencies_without_tomllib(monkeypatch):
    """On Python 3.10 (no tomllib) the dependencies array is read by its quoted strings."""
    from cvm_spark.serve.submit import project_dependencies

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    with_tomllib = project_dependencies(text)
    monkeypatch.setitem(sys.modules, "tomllib", None)  # import tomllib now fails
    assert project_dependencies(text) == with_tomllib
    assert "pyspark==4.1.1" in with_tomllib and "matplotlib>=3.8" in with_tomllib


def _cached_delta_jars(tmp_path, monkeypatch):
    """A jar cache (``$CVM_JARS_CACHE``) recording two local jar files for the Delta
    coordinates, as a first start leaves it."""
    from cvm_spark.common.session import JARS_CACHE_ENV

    jars = []
    for name in ("io.delta_delta-spark_4.1_2.13-4.4.0.jar", "io.delta_delta-storage-4.4.0.jar"):
        jars.append(tmp_path / "ivy" / name)
        jars[-1].parent.mkdir(exist_ok=True)
        jars[-1].write_bytes(b"PK" + name.encode())
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / (delta_maven_coordinates().replace(":", "_") + ".txt")).write_text(
        "".join(f"{j}\n" for j in jars))
    monkeypatch.setenv(JARS_CACHE_ENV, str(cache))
    return jars


def test_package_bundles_the_delta_jars_for_an_offline_cluster(tmp_path, monkeypatch):
    jars = _cached_delta_jars(tmp_path, monkeypatch)
    dist = build_dist(tmp_path / "dist", ROOT / "conf" / "cvm.yaml", with_jars=True)
    assert [j.name for j in dist.jars] == sorted(j.name for j in jars)
    assert all(j.read_bytes() == (tmp_path / "ivy" / j.name).read_bytes() for j in dist.jars)
    assert find_dist(tmp_path / "dist").jars == dist.jars
    cmd = spark_submit_command(dist, ["run"], ROOT / "conf" / "cvm.yaml")
    assert cmd[cmd.index("--jars") + 1] == ",".join(str(j) for j in dist.jars)
    assert "--packages" not in cmd  # nothing for Ivy to resolve
    cmd = spark_submit_command(dist, ["run"], ROOT / "conf" / "cvm.yaml", packages="org.x:y:1")
    assert cmd[cmd.index("--packages") + 1] == "org.x:y:1" and "--jars" in cmd
    # packaging again without --jars removes them: the folder never holds stale jars
    assert build_dist(tmp_path / "dist", ROOT / "conf" / "cvm.yaml").jars == ()
    assert not (tmp_path / "dist" / "jars").exists()
    cmd = spark_submit_command(find_dist(tmp_path / "dist"), ["run"], ROOT / "conf" / "cvm.yaml")
    assert cmd[cmd.index("--packages") + 1] == delta_maven_coordinates()


def test_package_jars_without_a_cache_or_maven_central_is_a_clear_error(tmp_path, monkeypatch,
                                                                      capsys):
    from cvm_spark.common.session import JARS_CACHE_ENV, DeltaJarsError
    from cvm_spark.serve import submit

    monkeypatch.setenv(JARS_CACHE_ENV, str(tmp_path / "empty-cache"))

    def offline(*_args, **_kwargs):
        raise DeltaJarsError("Spark did not start while the Delta jars were to be resolved "
                             "from Maven Central")

    monkeypatch.setattr(submit, "build_spark", offline)
    code = main(["package", "--jars", "--dist", str(tmp_path / "dist"),
                 "--config", str(ROOT / "conf" / "cvm.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert "cvm package: cannot bundle the Delta jars: Spark did not start" in err

"""Packaging for spark-submit and the spark-submit command line of the pipeline.

``build_dist`` writes what a cluster needs into one folder (``dist/`` by default):

* ``cvm_spark-<version>.zip``: the package, for ``--py-files`` (the driver and every
  executor put it on ``sys.path``; nothing has to be installed for cvm_spark itself);
* ``cvm_job.py``: the spark-submit entry point (a copy of ``jobs/cvm_job.py``);
* the config file (``cvm.yaml``), for ``--files``;
* ``requirements-driver.txt``: the third-party modules the *driver* imports (pyyaml, numpy,
  scipy). Executors need only pyspark: the pipeline has no Python UDFs and the fits that use
  numpy/scipy (BG/NBD, Gamma-Gamma, loyalty weights) run on the driver over collected
  aggregates. See docs/cluster.md.

``spark_submit_command`` builds the argv of one spark-submit call; ``cvm submit`` (and
``scripts/submit.sh``) print or run it. The command is plain data so it can be checked by
tests and printed with ``--dry-run``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cvm_spark
from cvm_spark.common.session import (
    DEFAULT_CONF,
    DeltaJarsError,
    build_spark,
    cached_jars,
    delta_maven_coordinates,
)

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(cvm_spark.__file__).resolve().parent
# The checkout the package was imported from (jobs/, conf/ and pyproject.toml live there).
PROJECT_ROOT = PACKAGE_DIR.parent
JOB_FILE = "cvm_job.py"
DRIVER_REQUIREMENTS = "requirements-driver.txt"
JARS_DIR = "jars"  # dist/jars/: the bundled Delta jars (cvm package --jars)
# Modules imported by the driver only (config loading, the BTYD and loyalty fits).
DRIVER_ONLY_DEPENDENCIES = ("pyyaml", "numpy", "scipy")
# Spark settings the job needs whatever the cluster's spark-defaults.conf says.
SUBMIT_CONF_KEYS = ("spark.sql.extensions", "spark.sql.catalog.spark_catalog")
# A fixed timestamp for the zip entries, so the same sources give the same zip.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


class PackagingError(RuntimeError):
    """The distribution cannot be built or is incomplete."""


@dataclass(frozen=True)
class Dist:
    """Paths of a built distribution folder."""

    root: Path
    zip_path: Path
    job_path: Path
    config_path: Path
    requirements_path: Path
    generator_zip: Path   # cvm_generate: shipped for `generate` and `run --generate` only
    jars: tuple[Path, ...] = ()  # the Delta jars for --jars (`cvm package --jars`), if bundled


def zip_name() -> str:
    """File name of the package zip, e.g. ``cvm_spark-0.1.0.zip``."""
    return f"cvm_spark-{cvm_spark.__version__}.zip"


def generator_zip_name() -> str:
    """File name of the generator's zip, e.g. ``cvm_generate-0.1.0.zip``."""
    return f"cvm_generate-{cvm_spark.__version__}.zip"


def write_package_zip(target: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Zip the ``cvm_spark`` sources (``*.py`` only) with ``cvm_spark/`` at the zip root.

    Entries are sorted and time-stamped with a constant, so the zip only changes when a
    source file does.

    Args:
        target: the zip file to write (replaced if it exists).
        package_dir: the package directory to zip.

    Returns:
        ``target``.
    """
    sources = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    if not (package_dir / "__init__.py").is_file():
        raise PackagingError(f"{package_dir} is not a Python package")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sources:
            arcname = f"{package_dir.name}/{path.relative_to(package_dir).as_posix()}"
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    tmp.replace(target)
    return target


def project_dependencies(pyproject_text: str) -> list[str]:
    """``[project] dependencies`` of a pyproject.toml: with ``tomllib`` (Python 3.11+), else
    (Python 3.10) the quoted strings of the ``dependencies = [...]`` array, comments skipped."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", pyproject_text, re.M | re.S)
        if block is None:
            raise PackagingError("pyproject.toml has no [project] dependencies") from None
        lines = (line.split("#", 1)[0] for line in block.group(1).splitlines())
        return [d for line in lines for d in re.findall(r'"([^"]+)"', line)]
    return list(tomllib.loads(pyproject_text)["project"]["dependencies"])


def driver_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml") -> list[str]:
    """The requirement strings of the driver-only dependencies, read from pyproject.toml."""
    deps = project_dependencies(pyproject.read_text(encoding="utf-8"))
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower(): d for d in deps}
    return [names[n] for n in DRIVER_ONLY_DEPENDENCIES if n in names]


def delta_jar_files() -> list[str]:
    """The local files of the Delta artifact for the installed pyspark and of the jars it
    depends on: the cached list (``~/.cache/cvm_spark/jars``) or, on a first use, what a
    short local Spark session resolves from Maven Central (and caches).

    Raises:
        PackagingError: neither a cached copy nor Maven Central is reachable.
    """
    coordinates = delta_maven_coordinates()
    jars = cached_jars(coordinates)
    if jars is None:
        try:
            build_spark("cvm-package", master="local[1]").stop()
        except DeltaJarsError as exc:
            raise PackagingError(f"cannot bundle the Delta jars: {exc}") from exc
        jars = cached_jars(coordinates)
    if not jars:
        raise PackagingError(f"the Delta jars {coordinates} were not resolved into local files")
    return jars


def bundle_jars(out: Path, jars: Sequence[str]) -> tuple[Path, ...]:
    """Copy ``jars`` into ``out/jars/`` (replacing what was there) for spark-submit --jars."""
    target = out / JARS_DIR
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    copied = []
    for jar in jars:
        copied.append(target / Path(jar).name)
        shutil.copyfile(jar, copied[-1])
    return tuple(sorted(copied))


def build_dist(dist: str | Path = "dist", config: str | Path = "conf/cvm.yaml",
               root: Path = PROJECT_ROOT, with_jars: bool = False) -> Dist:
    """Write the package zip, the generator's zip, the job file, the config and the driver
    requirements to ``dist``.

    Older ``cvm_spark-*.zip`` and ``cvm_generate-*.zip`` files in ``dist`` are removed, so
    each pattern always names one file.

    Args:
        dist: the output folder (created).
        config: the YAML config to ship with ``--files``.
        root: the source checkout holding ``cvm_spark/``, ``cvm_generate/``, ``jobs/`` and
            ``pyproject.toml``.
        with_jars: also copy the Delta jars into ``dist/jars/`` (:func:`delta_jar_files`),
            so that spark-submit takes them with ``--jars`` and no node resolves anything
            (an offline cluster). Without it, an older ``dist/jars/`` is removed.

    Returns:
        The paths written.

    Raises:
        PackagingError: the config or the job file is missing, or the jars cannot be found.
    """
    out = Path(dist).resolve()
    config_src = Path(config)
    job_src = root / "jobs" / JOB_FILE
    for path, what in ((config_src, "config file"), (job_src, "job file")):
        if not path.is_file():
            raise PackagingError(f"{what} not found: {path}")
    out.mkdir(parents=True, exist_ok=True)
    for pattern, name in (("cvm_spark-*.zip", zip_name()),
                          ("cvm_generate-*.zip", generator_zip_name())):
        for old in out.glob(pattern):
            if old.name != name:
                old.unlink()
    zip_path = write_package_zip(out / zip_name(), root / "cvm_spark")
    generator_zip = write_package_zip(out / generator_zip_name(), root / "cvm_generate")
    job_path = out / JOB_FILE
    shutil.copyfile(job_src, job_path)
    config_path = out / config_src.name
    if config_src.resolve() != config_path:
        shutil.copyfile(config_src, config_path)
    requirements_path = out / DRIVER_REQUIREMENTS
    requirements_path.write_text(
        "# Imported by the driver only; executors need nothing beyond pyspark.\n"
        + "".join(f"{r}\n" for r in driver_requirements(root / "pyproject.toml")),
        encoding="utf-8")
    jars: tuple[Path, ...] = ()
    if with_jars:
        jars = bundle_jars(out, delta_jar_files())
    else:
        shutil.rmtree(out / JARS_DIR, ignore_errors=True)
    log.debug("wrote %s, %s, %s, %s, %s and %d jars", zip_path, generator_zip, job_path,
              config_path, requirements_path, len(jars))
    return Dist(out, zip_path, job_path, config_path, requirements_path, generator_zip, jars)


def find_dist(dist: str | Path = "dist", config_name: str = "cvm.yaml") -> Dist:
    """The paths of an already built distribution folder.

    Raises:
        PackagingError: a file is missing (run ``cvm package`` first).
    """
    out = Path(dist).resolve()
    zips = sorted(out.glob("cvm_spark-*.zip"))
    if len(zips) != 1:
        raise PackagingError(f"expected one cvm_spark-*.zip in {out}, found {len(zips)}; "
                             "run `cvm package` (scripts/package.sh) first")
    d = Dist(out, zips[0], out / JOB_FILE, out / config_name, out / DRIVER_REQUIREMENTS,
             out / generator_zip_name(), tuple(sorted((out / JARS_DIR).glob("*.jar"))))
    for path in (d.job_path, d.generator_zip):
        if not path.is_file():
            raise PackagingError(f"{path} missing; run `cvm package` first")
    return d


def default_spark_submit() -> str:
    """``$SPARK_HOME/bin/spark-submit`` if SPARK_HOME is set, else the one on PATH, else
    the one shipped with the pip-installed pyspark."""
    home = os.environ.get("SPARK_HOME")
    if home:
        return str(Path(home) / "bin" / "spark-submit")
    found = shutil.which("spark-submit")
    if found:
        return found
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-submit")


def with_delta_package(packages: str | None) -> str:
    """``packages`` plus the Delta artifact for the installed pyspark, unless it names one."""
    items = [p for p in (packages or "").split(",") if p]
    if not any(p.startswith("io.delta:") for p in items):
        items.append(delta_maven_coordinates())
    return ",".join(items)


def spark_submit_command(
    dist: Dist,
    job_args: Sequence[str],
    config: str | Path,
    master: str | None = None,
    deploy_mode: str = "client",
    packages: str | None = None,
    extra_py_files: Sequence[str] = (),
    extra_files: Sequence[str] = (),
    spark_submit_args: Sequence[str] = (),
    spark_submit: str | None = None,
    job: str | Path | None = None,
    app_name: str = "cvm_spark",
    with_generator: bool = False,
) -> list[str]:
    """The argv of a spark-submit call running the pipeline job from ``dist``.

    Args:
        dist: the built distribution (:func:`build_dist` or :func:`find_dist`).
        job_args: the job's own arguments (``run --snapshot 2024-12 ...``) without
            ``--config``, which is added here.
        config: the local config file; it is shipped with ``--files`` and the job reads it
            from its local path in client mode, or by its file name from the container's
            working directory in cluster mode (YARN, Kubernetes).
        master: the master URL; ``None`` leaves it to spark-defaults.conf.
        deploy_mode: ``client`` or ``cluster``.
        packages: Maven coordinates to add; the Delta artifact is included, unless the
            distribution bundles the Delta jars (``dist.jars``: passed with ``--jars``,
            nothing resolved) and ``packages`` names no Delta artifact.
        extra_py_files, extra_files: appended to ``--py-files`` and ``--files``.
        spark_submit_args: further spark-submit options, passed verbatim after ours (so a
            ``--conf`` given there wins).
        spark_submit: the spark-submit executable (default :func:`default_spark_submit`).
        job: the primary resource (default ``dist/cvm_job.py``).
        app_name: ``--name``.
        with_generator: also ship the generator's zip (``generate`` and ``run --generate``
            jobs; the scoring job never imports it).

    Returns:
        The command as a list of arguments.
    """
    if deploy_mode not in ("client", "cluster"):
        raise ValueError(f"deploy mode must be client or cluster, got {deploy_mode!r}")
    config_path = Path(config).resolve()
    cmd = [spark_submit or default_spark_submit()]
    if master:
        cmd += ["--master", master]
    cmd += ["--deploy-mode", deploy_mode, "--name", app_name]
    if dist.jars and "io.delta:" not in (packages or ""):
        cmd += ["--jars", ",".join(str(j) for j in dist.jars)]
        if packages:
            cmd += ["--packages", packages]
    else:
        cmd += ["--packages", with_delta_package(packages)]
    for key in SUBMIT_CONF_KEYS:
        cmd += ["--conf", f"{key}={DEFAULT_CONF[key]}"]
    generator = [str(dist.generator_zip)] if with_generator else []
    cmd += ["--py-files", ",".join([str(dist.zip_path), *generator, *extra_py_files]),
            "--files", ",".join([str(config_path), *extra_files])]
    cmd += list(spark_submit_args)
    job_config = str(config_path) if deploy_mode == "client" else config_path.name
    cmd += [str(job or dist.job_path), *job_args, "--config", job_config]
    return cmd

"""A generated bank of a test's own: the shipped config pointed at a folder the test owns
(inputs under ``<root>/data``, the warehouse under ``<root>/wh``), sized and overridden per
test. ``conftest.make_bank`` is the fixture form (a fresh temporary folder, data generated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# One back-test origin instead of the shipped three, for the runs that test how the job runs
# (locks, crashes, clusters, HDFS, skew, BI readers, privacy), not what the forecast is worth;
# one origin still runs the back-test's code (its fits side by side, its exact rollups). On a
# 400-account x 15-month run: 3 origins 82.1 s of stages / 328 jobs, 1 origin 68.7 s / 256
# jobs (fits 26.0 -> 17.6 s). The golden run, the budgets and the model tests keep the
# shipped config (docs/performance.md, "the suite").
ONE_BACKTEST_ORIGIN: dict[str, Any] = {"backtest": {"origins": 1}}


def bank_config(base_config: Any, root: Path, *, accounts: int, months: int, database: str,
                **overrides: Any) -> Any:
    """The shipped config with a bank of ``accounts`` x ``months`` under ``root``.

    Args:
        base_config: the loaded ``conf/cvm.yaml`` (the ``base_config`` fixture).
        root: the test's own folder (inputs in ``root/data``, warehouse in ``root/wh``).
        accounts, months: ``generator.accounts`` / ``generator.months``.
        database: ``output.database`` (each test its own, so catalogs never mix).
        overrides: top-level config keys: a dict is merged into that section (e.g.
            ``generator={"bad_row_share": 0.0}``, ``spark={...}``), anything else replaces
            the key (e.g. ``snapshot_month="2024-11"``).

    Returns:
        The validated config (a wrong key or value fails here, as it would for a user).
    """
    from cvm_spark.config import load_config_dict, to_dict

    data = to_dict(base_config)
    data["inputs"]["root"] = str(root / "data")
    data["output"].update(warehouse=str(root / "wh"), database=database)
    data["generator"].update(accounts=accounts, months=months)
    for key, value in overrides.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    return load_config_dict(data)


def write_bank(spark: Any, cfg: Any) -> Any:
    """Generate the config's bank into its ``inputs.root`` (``cvm generate``); returns cfg."""
    from cvm_generate import write_sample

    write_sample(spark, cfg)
    return cfg


def config_file(cfg: Any, path: Path) -> Path:
    """The config written as YAML (for ``cvm`` and spark-submit children)."""
    import yaml

    from cvm_spark.config import to_dict

    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))
    return path


class KeepOpen:
    """The test session, with stop() made harmless for ``cli.main`` (patch ``cli._session``
    to return it)."""

    def __init__(self, spark: Any) -> None:
        self._spark = spark

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spark, name)

    def stop(self) -> None:
        pass

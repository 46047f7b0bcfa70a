"""The pipeline as a declared graph of steps (cvm_spark/pipeline/runner.py: STEPS) and a run
of a prefix of it (``cvm run --until``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cvm_spark.pipeline.runner import PIPELINE_TABLES, STEPS, check_steps, run_snapshot
from cvm_spark.pipeline.summary import STEP_NAMES
from cvm_spark.storage.locking import lock_path


def test_the_steps_are_a_valid_graph_that_writes_every_table_once():
    check_steps(STEPS)
    assert tuple(s.name for s in STEPS) == STEP_NAMES
    assert sorted(t for s in STEPS for t in s.writes) == sorted(PIPELINE_TABLES)


def test_a_step_before_what_it_needs_is_refused():
    validate, quarantine, features, rfm, model = STEPS
    with pytest.raises(ValueError, match=r"step rfm needs \['features'\]"):
        check_steps((validate, quarantine, rfm, features, model))
    with pytest.raises(ValueError, match="not each of"):
        check_steps((validate, features, rfm, model))                 # quarantine unwritten
    with pytest.raises(ValueError, match="not each of"):
        check_steps((validate, quarantine, features, replace(rfm, writes=("rfm", "features")),
                     model))                                          # features twice


def test_an_unknown_step_is_refused_before_anything_runs(spark, base_config, tmp_path):
    with pytest.raises(ValueError, match="until must be one of"):
        run_snapshot(spark, base_config, until="tiers")


@pytest.mark.e2e
def test_a_run_until_features_writes_its_tables_and_no_run_log(spark, make_bank):
    from cvm_generate import write_sample

    cfg = make_bank(200, 13, name="until", generate=False)
    seen = []
    summary = run_snapshot(spark, cfg, generate=write_sample,
                           on_stage=lambda name, _summary: seen.append(name), until="features")
    assert seen == ["generate", "validate", "quarantine", "features"]
    assert set(summary.rows_written) == {"quarantine", "features"}
    assert summary.rows_written["features"] > 150
    database = Path(cfg.output.warehouse) / "cvm_until"
    assert sorted(p.name for p in database.iterdir() if (p / "_delta_log").is_dir()) == [
        "features", "quarantine"]
    assert not Path(lock_path(cfg.output, cfg.snapshot)).exists()   # the month's lock released

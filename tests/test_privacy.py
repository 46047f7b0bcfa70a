"""Privacy: pseudonymous account keys, the key's handling, no ids in logs or the report,
and write paths that stay inside the warehouse (docs/reliability.md, section "privacy")."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cvm_spark.common.timing import no_stage
from cvm_spark.config import ConfigError, PrivacyConfig, load_config, load_config_dict, to_dict
from cvm_spark.pipeline.runner import PIPELINE_TABLES
from cvm_spark.storage.delta import table_path
from cvm_spark.storage.locking import lock_dir
from cvm_spark.storage.privacy import (
    ACCOUNT_KEY,
    KEY_ID_PROPERTY,
    PseudonymKey,
    PseudonymKeyError,
    WarehouseModeError,
    check_warehouse,
    load_key,
    pseudonymise,
    redact_plans,
)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "cvm.yaml"
SECRET = "correct horse battery staple 42"          # 31 bytes
ACCOUNT_TABLES = ("features", "rfm", "value_scores", "tiers", "campaign_targets")
JAN = date(2024, 1, 1)


def _py_hmac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------
# The key (no Spark)
# --------------------------------------------------------------------------------------------


def test_key_from_environment_variable():
    cfg = load_config(CONF, {"privacy.pseudonymise": True}).privacy
    key = load_key(cfg, {"CVM_PSEUDONYM_SECRET": SECRET})
    assert key.hexdigest("A1") == _py_hmac(SECRET.encode(), "A1")
    assert SECRET not in repr(key) and SECRET not in str(key)
    assert "CVM_PSEUDONYM_SECRET" in repr(key)


def test_key_file_wins_and_drops_one_trailing_newline(tmp_path):
    path = tmp_path / "pseudonym.key"
    path.write_bytes(SECRET.encode() + b"\n")
    cfg = load_config(CONF, {"privacy.pseudonymise": True,
                             "privacy.key_file": str(path)}).privacy
    key = load_key(cfg, {"CVM_PSEUDONYM_SECRET": "another key of enough length"})
    assert key.hexdigest("A1") == _py_hmac(SECRET.encode(), "A1")


@pytest.mark.parametrize(("environ", "file_bytes", "message"), [
    ({}, None, r"environment variable CVM_PSEUDONYM_SECRET \(privacy.key_env\) is not set"),
    ({"CVM_PSEUDONYM_SECRET": ""}, None, r"CVM_PSEUDONYM_SECRET .* not set or empty"),
    ({"CVM_PSEUDONYM_SECRET": "short-secret"}, None, r"has 12 bytes; at least 16"),
    ({}, b"tiny\n", r"file .* has 4 bytes; at least 16"),
])
def test_missing_or_short_key_is_a_config_error_without_the_key(tmp_path, environ, file_bytes,
                                                                 message):
    overrides: dict[str, object] = {"privacy.pseudonymise": True}
    if file_bytes is not None:
        (tmp_path / "k").write_bytes(file_bytes)
        overrides["privacy.key_file"] = str(tmp_path / "k")
    cfg = load_config(CONF, overrides).privacy
    with pytest.raises(PseudonymKeyError, match=message) as err:
        load_key(cfg, environ)
    assert isinstance(err.value, ConfigError)
    assert "short-secret" not in str(err.value) and "tiny" not in str(err.value)


def test_unreadable_key_file_names_the_file(tmp_path):
    cfg = load_config(CONF, {"privacy.pseudonymise": True,
                             "privacy.key_file": str(tmp_path / "absent.key")}).privacy
    with pytest.raises(PseudonymKeyError, match=r"privacy.key_file: cannot read .*absent.key"):
        load_key(cfg, {})


def test_long_and_non_ascii_keys_follow_rfc_2104():
    for secret in (b"k" * 16, b"x" * 64, bytes(range(100)), "schlüssel-密钥-0123456".encode()):
        inner, outer = PseudonymKey(secret, "test").pads()
        k0 = (hashlib.sha256(secret).digest() if len(secret) > 64 else secret).ljust(64, b"\0")
        assert inner == bytes(b ^ 0x36 for b in k0) and outer == bytes(b ^ 0x5C for b in k0)


# --------------------------------------------------------------------------------------------
# Config (no Spark)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["key", "secret", "pseudonym_key", "hmac_salt"])
def test_a_literal_key_in_the_config_is_refused_without_echo(name):
    with pytest.raises(ConfigError, match=rf"privacy\.{name}: the pseudonym key is never read "
                                          "from the config") as err:
        load_config(CONF, {f"privacy.{name}": SECRET})
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("value", [SECRET, "a3f9c2" * 10, "dGhpcyBpcyBhIGtleQ", "X" * 65])
def test_key_env_must_be_a_variable_name_and_is_not_echoed(value):
    with pytest.raises(ConfigError, match=r"privacy\.key_env must be the name of an environment "
                                          "variable") as err:
        load_config(CONF, {"privacy.key_env": value})
    assert value not in str(err.value)


def test_pseudonymised_campaigns_cannot_test_account_ids():
    data = to_dict(load_config(CONF))
    data["privacy"]["pseudonymise"] = True
    data["tiers"]["campaigns"].append({"name": "vip", "reason": "listed", "conditions": [
        {"column": "account_id", "op": "in", "value": ["A0001"]}]})
    with pytest.raises(ConfigError, match=r"tiers\.campaigns \['vip'\]: a condition on "
                                          "account_id"):
        load_config_dict(data)
    data["privacy"]["pseudonymise"] = False
    load_config_dict(data)   # allowed when the tables carry account_id anyway


@pytest.mark.parametrize("database", ["../etc", "cvm/x", "a.b", "", "cvm db"])
def test_database_must_be_a_plain_identifier(database):
    with pytest.raises(ConfigError, match=r"output\.database must be a plain SQL identifier"):
        load_config(CONF, {"output.database": database})


def test_symlink_out_of_the_warehouse_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    wh = tmp_path / "wh"
    (wh / "cvm").mkdir(parents=True)
    cfg = load_config(CONF, {"output.warehouse": str(wh)})
    assert cfg.output.location("cvm", "rfm") == str((wh / "cvm" / "rfm").resolve())
    assert table_path(cfg.output, "rfm") == str((wh / "cvm" / "rfm").resolve())
    (wh / "cvm" / "tiers").symlink_to(outside)           # a table folder pointing out
    with pytest.raises(ConfigError, match=r"output\.warehouse: cvm/tiers resolves to .*outside"):
        load_config(CONF, {"output.warehouse": str(wh)})
    with pytest.raises(ConfigError, match="outside the warehouse"):
        table_path(cfg.output, "tiers")                  # also checked when the path is used
    (wh / "cvm" / "tiers").unlink()
    (wh / "_models").symlink_to(outside)                 # the model folder pointing out
    with pytest.raises(ConfigError, match=r"output\.warehouse: _models resolves to"):
        load_config(CONF, {"output.warehouse": str(wh)})
    (wh / "_models").unlink()
    (wh / "_locks").symlink_to(outside)                  # the run locks pointing out
    with pytest.raises(ConfigError, match=r"output\.warehouse: _locks resolves to"):
        load_config(CONF, {"output.warehouse": str(wh)})
    with pytest.raises(ConfigError, match="outside the warehouse"):
        lock_dir(cfg.output)                             # also checked when a lock is taken
    (wh / "_locks").unlink()
    inside = wh / "models_store"
    inside.mkdir()
    (wh / "_models").symlink_to(inside)                  # a symlink inside the root is fine
    load_config(CONF, {"output.warehouse": str(wh)})


def test_write_locations_take_plain_names_only(tmp_path):
    output = load_config(CONF, {"output.warehouse": str(tmp_path)}).output
    for part in ("..", ".", "", "a/b", "/etc"):
        with pytest.raises(ConfigError, match="must be a plain name"):
            output.location(part)
    uri = replace(output, warehouse="s3a://bucket/wh/")
    assert uri.location("cvm", "rfm") == "s3a://bucket/wh/cvm/rfm"


def test_cli_refuses_a_missing_key_before_spark_starts(monkeypatch, capsys):
    from cvm_spark import cli
    from cvm_spark.common import session

    def no_spark(*_args, **_kwargs):
        raise AssertionError("Spark must not start without the key")

    monkeypatch.setattr(session, "build_spark", no_spark)
    monkeypatch.delenv("CVM_TEST_ABSENT_SECRET", raising=False)
    code = cli.main(["run", "--config", str(CONF), "--set", "privacy.pseudonymise=true",
                     "--set", "privacy.key_env=CVM_TEST_ABSENT_SECRET"])
    assert code == 2
    assert "CVM_TEST_ABSENT_SECRET (privacy.key_env) is not set" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The keyed hash in Spark
# --------------------------------------------------------------------------------------------

IDS = ["A0000001", "", "账户-0042", "ü" * 70, "x'); drop table t; --", None]
KEYS = [b"0123456789abcdef", b"k" * 64, bytes(range(200)), "schlüssel-密钥-0123456".encode()]


def test_account_key_equals_python_hmac(spark):
    rows = [(JAN, i, n) for n, i in enumerate(IDS)]
    df = spark.createDataFrame(rows, "snapshot_month date, account_id string, n int")
    outs = [pseudonymise(df, PseudonymKey(secret, "test")).withColumn("k", F.lit(k))
            for k, secret in enumerate(KEYS)]
    assert outs[0].columns == ["snapshot_month", ACCOUNT_KEY, "n", "k"]
    got = {(r.k, r.n): r.account_key
           for r in outs[0].unionByName(outs[1]).unionByName(outs[2]).unionByName(outs[3])
           .collect()}                                    # one job for the four keys
    want = {(k, n): None if i is None else _py_hmac(secret, i)
            for k, secret in enumerate(KEYS) for n, i in enumerate(IDS)}
    assert got == want


def _plan_text(df, capsys) -> str:
    df.explain("extended")
    df.explain("formatted")
    return "\n".join([capsys.readouterr().out, df._jdf.queryExecution().toString()])


def test_plans_hold_no_key_material(spark, capsys):
    key = PseudonymKey(SECRET.encode(), "test")
    inner, outer = key.pads()
    secrets = [SECRET, SECRET.encode().hex(), inner.hex(), outer.hex()]
    df = spark.createDataFrame([(JAN, "A1")], "snapshot_month date, account_id string")
    out = pseudonymise(df, key)
    out.collect()                       # the executed (adaptive) plan is in toString too
    text = _plan_text(out, capsys)
    assert "BroadcastNestedLoopJoin" in text or "CartesianProduct" in text  # the pad frame
    for secret in secrets:
        assert secret.lower() not in text.lower(), "key material in a plan string"
    # the second guard: a 128-hex literal is masked once redact_plans has run (an earlier
    # pseudonymised run in this session may have run it already: start without it)
    before = spark.conf.get("spark.sql.redaction.string.regex", None)
    spark.conf.unset("spark.sql.redaction.string.regex")
    leaky = df.select(F.lit(inner.hex()).alias("x"))
    try:
        assert inner.hex() in _plan_text(leaky, capsys)
        redact_plans(spark)
        redact_plans(spark)             # idempotent
        text = _plan_text(leaky, capsys)
        assert inner.hex() not in text and "*********(redacted)" in text
    finally:
        if before is None:
            spark.conf.unset("spark.sql.redaction.string.regex")
        else:
            spark.conf.set("spark.sql.redaction.string.regex", before)


def test_quarantine_rows_keep_only_contract_columns_with_keyed_ids(spark):
    rows = [
        ("accounts", json.dumps({"account_id": "A1", "birth_year": "1970", "region": "north",
                                 "full_name": "Jane Roe"})),
        ("relations", json.dumps({"account_id": "A2", "related_account_id": "A3",
                                  "relation": "family"})),
        ("transactions", json.dumps({"account_id": "A4", "amount": -5.5,
                                     "counterparty_id": "C9", "txn_id": "T1"})),
    ]
    df = spark.createDataFrame([(JAN, "r", t, "bad", j) for t, j in rows],
                               "snapshot_month date, run_id string, source_table string, "
                               "reason string, row_json string")
    key = PseudonymKey(SECRET.encode(), "test")
    out = {r.source_table: json.loads(r.row_json) for r in pseudonymise(df, key).collect()}
    assert out["accounts"] == {"account_id": key.hexdigest("A1"), "region": "north"}
    assert out["relations"] == {"account_id": key.hexdigest("A2"),
                                "related_account_id": key.hexdigest("A3"),
                                "relation": "family"}
    assert out["transactions"] == {"account_id": key.hexdigest("A4"), "amount": "-5.5",
                                   "counterparty_id": key.hexdigest("C9"), "txn_id": "T1"}


def test_report_migration_joins_on_the_key(spark):
    from cvm_spark.serve.report_data import NEW_ACCOUNT, tier_migration

    schema = "account_key string, tier string"
    prev = spark.createDataFrame([("k1", "gold"), ("k2", "copper")], schema)
    cur = spark.createDataFrame([("k1", "copper"), ("k3", "gold")], schema)
    got = {(r.prev_tier, r.tier): r.accounts for r in tier_migration(prev, cur).collect()}
    assert got == {("gold", "copper"): 1, ("copper", "(not scored now)"): 1,
                   (NEW_ACCOUNT, "gold"): 1}


def test_catalog_database_folder_is_inside_the_warehouse(spark, base_config, tmp_path):
    from cvm_spark.storage.delta import create_database

    output = replace(base_config.output, warehouse=str(tmp_path / "wh"), database="cvm_priv_db")
    create_database(spark, output)
    assert (tmp_path / "wh" / "_catalog" / "cvm_priv_db.db").is_dir()
    default = spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:")
    assert not (Path(default) / "cvm_priv_db.db").exists()
    spark.sql("drop database cvm_priv_db")


def test_cvm_points_the_default_database_folder_into_the_warehouse(base_config, tmp_path,
                                                                    monkeypatch):
    """The catalog's `default` database gets a folder at its first use; `cvm` puts it at
    <warehouse>/_catalog (it was ./spark-warehouse of the working directory), unless the
    config's spark section names a place."""
    import argparse

    from cvm_spark import cli
    from cvm_spark.common import session

    seen = {}
    monkeypatch.setattr(session, "build_spark",
                        lambda app, master=None, conf=None: seen.update(conf or {}))
    output = replace(base_config.output, warehouse=str(tmp_path / "wh"))
    cfg = replace(base_config, output=output)
    cli._session(argparse.Namespace(master="local[1]"), cfg, "test")
    assert seen["spark.sql.warehouse.dir"] == str((tmp_path / "wh" / "_catalog").resolve())
    cli._session(argparse.Namespace(master="local[1]"),
                 replace(cfg, spark={"spark.sql.warehouse.dir": "/elsewhere"}), "test")
    assert seen["spark.sql.warehouse.dir"] == "/elsewhere"


# --------------------------------------------------------------------------------------------
# A pseudonymised run of the pipeline (on the shared e2e inputs)
# --------------------------------------------------------------------------------------------


def _stand_in_model(spark, cfg, accepted, facts, rfm_cuts, run_id, model_root, materialize,
                    accounts, k_data_start, retrain=True, stage=no_stage):
    """A cheap stand-in for the model steps (minutes of fits on two cores): frames of the
    model tables' shape built from the real features and RFM, so the pipeline writes all
    eight tables through the same ``_write`` and the report has its tables."""
    from cvm_spark.features.rfm import score_rfm
    from cvm_spark.pipeline.facts import features_of
    from cvm_spark.pipeline.scoring import ModelOutputs, metrics_frame
    from cvm_spark.schemas.inputs import ACCOUNT_ID, SNAPSHOT_MONTH
    from cvm_spark.storage.tables import declared_schema

    features = features_of(facts, cfg)
    rfm = score_rfm(features, cfg.rfm, rfm_cuts)

    tiers = rfm.select(SNAPSHOT_MONTH, ACCOUNT_ID, F.col("segment").alias("tier"),
                       F.lit("stable").alias("lifecycle_stage"))

    def declared(df, table):
        """Every declared column of the table: the frame's, or a typed null."""
        schema = declared_schema(table, replace(cfg, privacy=PrivacyConfig()))
        return df.select(*[F.col(f.name) if f.name in df.columns
                           else F.lit(None).cast(f.dataType).alias(f.name)
                           for f in schema.fields])

    return ModelOutputs(
        value_scores=declared(features.select(SNAPSHOT_MONTH, ACCOUNT_ID,
                                              F.col("profit_12m").alias("current_value")),
                              "value_scores"),
        tiers=declared(tiers, "tiers"),
        campaign_targets=declared(tiers.where(F.col("tier") == "Lost").select(
            SNAPSHOT_MONTH, ACCOUNT_ID, F.lit("reactivation").alias("campaign"),
            F.concat(F.lit("segment="), F.col("tier")).alias("reason")), "campaign_targets"),
        tier_summary=declared(tiers.groupBy(SNAPSHOT_MONTH, "tier", F.col("tier").alias(
            "segment")).agg(F.count(F.lit(1)).alias("accounts")), "tier_summary"),
        kpi_summary=declared(tiers.groupBy(SNAPSHOT_MONTH).agg(
            F.count(F.lit(1)).cast("double").alias("value")).select(
            "*", F.lit("all").alias("dimension"), F.lit("all").alias("group_name"),
            F.lit("accounts").alias("kpi")), "kpi_summary"),
        model_metrics=metrics_frame(spark, [("loyalty", "weights", "tenure", 0.25)],
                                    cfg.snapshot, run_id))


@pytest.fixture(scope="module")
def pseudonymised(spark, e2e_config, e2e_summary, tmp_path_factory):
    """The pipeline with pseudonymise on, on the inputs the shared e2e run generated, in a
    warehouse of its own, with the model stage stood in for (:func:`_stand_in_model`); with
    every cvm_spark log line, the printed summary and the HTML report."""
    from conftest import LogLines

    from cvm_spark.pipeline.runner import run_snapshot
    from cvm_spark.serve.report import write_report

    root = tmp_path_factory.mktemp("privacy")
    data = to_dict(e2e_config)
    data["output"].update(warehouse=str(root / "wh"), database="cvm_private")
    data["privacy"].update(pseudonymise=True, key_env="CVM_TEST_PSEUDONYM_SECRET")
    cfg = load_config_dict(data)
    key = PseudonymKey(SECRET.encode(), "test")
    with LogLines().capture() as logs:
        summary = run_snapshot(spark, cfg, pseudonym_key=key,
                               started_at=datetime(2025, 1, 1, tzinfo=timezone.utc),
                               score_models=_stand_in_model)
        report = write_report(spark, cfg, root / "report.html").read_text(encoding="utf-8")
    text = "\n".join([*logs.lines, summary.render()])
    return cfg, key, summary, text, report


def _snapshot(spark, output, table, month=date(2024, 12, 1)):
    return (spark.read.format("delta").load(table_path(output, table))
            .where(F.col("snapshot_month") == F.lit(month)))


def _input_ids(spark, e2e_config) -> set[str]:
    accounts_path, _fmt = e2e_config.inputs.location("accounts")
    return {r.account_id for r in spark.read.parquet(accounts_path).select("account_id")
            .collect() if r.account_id and len(r.account_id.strip()) >= 3}   # test side


@pytest.mark.e2e
def test_every_table_carries_the_key_and_nothing_else_changes(spark, e2e_config,
                                                              pseudonymised):
    cfg, key, summary, _text, _report = pseudonymised
    assert set(summary.tables) == {*PIPELINE_TABLES, "run_log"}
    for table in ACCOUNT_TABLES:
        private = _snapshot(spark, cfg.output, table)
        assert ACCOUNT_KEY in private.columns and "account_id" not in private.columns, table
        assert private.where(~F.col(ACCOUNT_KEY).rlike("^[0-9a-f]{64}$")).count() == 0, table
        # every account table of the real (raw) run takes the key the same way (plan only)
        raw = _snapshot(spark, e2e_config.output, table)
        assert pseudonymise(raw, key).columns == [
            ACCOUNT_KEY if c == "account_id" else c for c in raw.columns], table
    for table in ("features", "rfm"):   # real stages: the raw run's rows, keyed, are these
        raw = pseudonymise(_snapshot(spark, e2e_config.output, table), key)
        private = _snapshot(spark, cfg.output, table)
        assert raw.exceptAll(private).count() == 0 and private.exceptAll(raw).count() == 0
    ids = [r.account_id for r in _snapshot(spark, e2e_config.output, "rfm")
           .select("account_id").limit(5).collect()]
    keys = {r.account_key for r in _snapshot(spark, cfg.output, "rfm").select(ACCOUNT_KEY)
            .collect()}                                   # 400 rows, test side
    assert {key.hexdigest(i) for i in ids} <= keys        # Spark's HMAC = Python's
    for table in PIPELINE_TABLES:
        props = spark.sql(f"show tblproperties delta.`{table_path(cfg.output, table)}`")
        assert {r.key: r.value for r in props.collect()}.get(KEY_ID_PROPERTY) \
            == key.key_id, table


@pytest.mark.e2e
def test_no_account_id_or_attribute_in_logs_summary_or_report(spark, e2e_config, e2e_runs,
                                                              pseudonymised):
    cfg, key, _summary, text, report = pseudonymised
    ids = _input_ids(spark, e2e_config)
    assert len(ids) >= 400
    assert "stage write_tiers: done" in text and "tables written" in text   # logs were seen
    # the shared raw run's log lines, with the real model steps (same logging in both modes)
    first = "\n".join(e2e_runs.logs[e2e_config.snapshot_month][0])
    assert "future value: fitted" in first and "stage tiers: done" in first
    row_json = " ".join(r.row_json for r in _snapshot(spark, cfg.output, "quarantine")
                        .select("row_json").collect())
    for place, content in (("logs", text), ("raw run's logs", first), ("report", report),
                           ("quarantine", row_json)):
        leaked = sorted(i for i in ids if i in content)
        assert not leaked, f"raw account ids in the {place}: {leaked[:5]}"
        assert "birth_year" not in content, place
    inner, outer = key.pads()
    for secret in (SECRET, inner.hex(), outer.hex()):
        assert secret not in text + report


@pytest.mark.e2e
def test_the_warehouse_keeps_its_key(spark, pseudonymised):
    cfg, key, *_ = pseudonymised
    other = PseudonymKey(b"b" * 32, "test")
    check_warehouse(spark, cfg.output, PIPELINE_TABLES, key)
    with pytest.raises(WarehouseModeError, match=r"cvm_private\.quarantine .* another pseudonym "
                                                 rf"key \(key id {key.key_id}, this key "
                                                 rf"{other.key_id}\)"):
        check_warehouse(spark, cfg.output, PIPELINE_TABLES, other)
    with pytest.raises(WarehouseModeError, match=r"holds pseudonymous account keys .* with "
                                                 "privacy.pseudonymise off"):
        check_warehouse(spark, cfg.output, PIPELINE_TABLES, None)


@pytest.mark.e2e
def test_switching_a_raw_warehouse_is_refused_before_any_write(spark, e2e_config, e2e_summary,
                                                               monkeypatch):
    from delta.tables import DeltaTable

    from cvm_spark.pipeline.runner import run_snapshot

    versions = {t: DeltaTable.forPath(spark, table_path(e2e_config.output, t)).history(1)
                .first().version for t in ("quarantine", "features")}
    data = to_dict(e2e_config)
    data["privacy"]["pseudonymise"] = True
    cfg = load_config_dict(data)
    monkeypatch.delenv(cfg.privacy.key_env, raising=False)
    with pytest.raises(PseudonymKeyError, match="CVM_PSEUDONYM_SECRET"):
        run_snapshot(spark, cfg)                         # no key: refused first
    with pytest.raises(WarehouseModeError, match=r"cvm_e2e\.quarantine .* written without "
                                                 "pseudonymisation"):
        run_snapshot(spark, cfg, pseudonym_key=PseudonymKey(SECRET.encode(), "test"))
    for table, version in versions.items():
        assert DeltaTable.forPath(spark, table_path(e2e_config.output, table)).history(1) \
            .first().version == version, table

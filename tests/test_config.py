"""Config loading: typed objects, and clear errors naming the key before Spark starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cvm_spark.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "cvm.yaml"


def test_shipped_config_loads():
    cfg = load_config(CONF)
    assert cfg.features.windows == [1, 3, 6, 12]
    assert cfg.rfm.bins == 5
    assert cfg.snapshot.day == 1
    assert len(cfg.fingerprint()) == 16


@pytest.mark.parametrize(("override", "message"), [
    ({"features.windows_months": [1, 0]}, r"features\.windows_months\[1\] must be >= 1"),
    ({"rfm.bins": 1}, r"rfm\.bins must be in 2\.\.9"),
    ({"rfm.binz": 4}, r"rfm\.binz: unknown key"),
    ({"output.warehouse": 3}, r"output\.warehouse: expected a string"),
    ({"rfm.bins": "five"}, r"rfm\.bins: expected an integer"),
    ({"snapshot_month": "2024-13"}, r"snapshot_month: month out of range"),
    ({"snapshot_month": "Dec 2024"}, r"snapshot_month: expected a month"),
    ({"inputs.format": "xlsx"}, r"inputs\.format must be one of"),
    ({"inputs.tables": {"acounts": {"path": "x"}}}, r"inputs\.tables has unknown table"),
    ({"rfm.window_months": 2}, r"rfm\.window_months \(2\) must be one of"),
    ({"rfm.segments": [{"name": "All", "r": [1, 5], "f": [1, 5], "m": [1, 4]}]},
     r"segments leave 25 score combination"),
    ({"rfm.segments": [{"name": "X", "r": [1, 6], "f": [1, 5], "m": [1, 5]}]},
     r"rfm\.segments\[0\]\.r \[1, 6\] outside 1\.\.5"),
    ({"generator.accounts": 0}, r"generator\.accounts must be >= 10"),
    ({"validation.data_start": "2030-01-01"}, r"data_start must be before snapshot_month"),
    ({"tiers.campaigns": [{"name": "x", "reason": "y", "conditions": [
        {"column": "lifecycle_stage", "op": "in", "value": ["new", "churn"]}]}]},
     r"tiers\.campaigns\[0\]\.conditions\[0\]\.value names lifecycle stage\(s\) "
     r"\['churn'\] that do not exist; the stages are \['potential'"),
    ({"value.no_evidence_rank": "middle"}, r"value\.no_evidence_rank must be one of"),
    ({"tiers.dormancy_months": 0}, r"tiers\.dormancy_months must be in 1\.\.120"),
    ({"tiers.dormancy_months": 5}, r"tiers\.dormancy_months \(5\) must be one of "
                                   r"features\.windows_months"),
    ({"tiers.tiers": [{"name": "all", "value_levels": [], "loyalty_bands": [],
                       "credit_grades": [], "channel": "c", "service_level": "s",
                       "label_en": "a", "label_zh": "a", "require_active": True}]},
     r"the last tier \(all\) must have no conditions"),
    ({"tiers.tiers": [{"name": "top", "value_levels": [], "loyalty_bands": [],
                       "credit_grades": [], "channel": "c", "service_level": "s",
                       "label_en": "a", "label_zh": "a", "min_value_pct": 100}]},
     r"tiers\.tiers\[0\]\.min_value_pct must be null or in \(0, 100\)"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONF, override)


def test_missing_required_key(tmp_path):
    data = yaml.safe_load(CONF.read_text())
    del data["snapshot_month"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="snapshot_month: required key is missing"):
        load_config(path)


def test_yaml_object_construction_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("version: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_cli_rejects_bad_config_without_spark(capsys):
    from cvm_spark.cli import main

    assert main(["validate-config", "--config", str(CONF), "--set", "rfm.bins=1"]) == 2
    assert "rfm.bins" in capsys.readouterr().err


def test_rule_columns_are_checked_from_the_config_alone(base_config, telecom_config):
    """Campaign and risk-reason conditions must name columns the frames will have: the
    shipped configs pass, a misspelt column is refused before Spark starts."""
    from dataclasses import replace

    from cvm_spark.config import CampaignCondition, RiskCustomersConfig, RiskReason
    from cvm_spark.pipeline.scoring import check_rules

    check_rules(base_config)
    check_rules(telecom_config)
    reasons = RiskCustomersConfig(reasons=[
        RiskReason("late", [CampaignCondition("overdue_amount", ">", 0)]),
        RiskReason("typo", [CampaignCondition("payment_methd", "in", ["cash"])])])
    cfg = replace(telecom_config, tiers=replace(telecom_config.tiers, risk_customers=reasons))
    with pytest.raises(ValueError, match=r"risk_customers.reasons refer to unknown column\(s\) "
                                         r"\['payment_methd'\]"):
        check_rules(cfg)


def test_run_ends_with_the_report_and_a_first_query(tmp_path):
    from cvm_spark.cli import closing_lines

    cfg = load_config(CONF, {"snapshot_month": "2024-06"})
    tables = {"features": "/wh/cvm/features", "rfm": "/wh/cvm/rfm",
              "tier_summary": "/wh/cvm/tier_summary"}
    text = closing_lines(cfg, tables, tmp_path / "r.html", 42.4)
    lines = text.splitlines()
    assert lines[1:3] == ["done in 42s", f"report:      {tmp_path / 'r.html'}"]
    assert lines[3] == ("start with:  select tier, sum(accounts) as accounts, "
                        "round(100 * sum(share_of_accounts), 1) as pct_accounts, "
                        "round(sum(total_contribution_money)) as money from "
                        "cvm.tier_summary where snapshot_month = date '2024-06-01' "
                        "group by tier order by money desc")
    # a run stopped early (--until rfm) and without --report
    text = closing_lines(cfg, {"features": "f", "rfm": "r"}, None, 3.0)
    assert "report:      not written; cvm report --snapshot 2024-06 writes it" in text
    assert "start with:  select * from cvm.rfm where snapshot_month = date '2024-06-01' " \
        "limit 20" in text


def test_version_prints_code_spark_and_delta_without_a_session(monkeypatch, capsys):
    import pyspark

    from cvm_spark.cli import main
    from cvm_spark.common import session

    def no_spark(*_args, **_kwargs):
        raise AssertionError("--version must not start Spark")

    monkeypatch.setattr(session, "build_spark", no_spark)
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"cvm_spark \d+\.\d+\.\d+( \(git [0-9a-f]{40}(-dirty)?\))?", lines[0])
    assert lines[1] == f"Spark {pyspark.__version__} (pyspark)"
    minor = ".".join(pyspark.__version__.split(".")[:2])
    assert re.fullmatch(rf"Delta (\S+) \(io\.delta:delta-spark_{re.escape(minor)}_2\.13:\1\)",
                        lines[2])


# --------------------------------------------------------------------------------------------
# thrift: who may connect to the JDBC server
# --------------------------------------------------------------------------------------------

LDAP = {"url": "ldaps://ldap.example.com:636",
        "user_dn_pattern": "uid=%s,ou=bi,dc=example,dc=com"}


def _thrift(section):
    return load_config(CONF, {"thrift": section}).thrift


@pytest.mark.parametrize(("section", "message"), [
    ({"authentication": "basic"},
     r"thrift\.authentication must be one of \['none', 'ldap', 'kerberos'\], got 'basic'"),
    ({"authentication": "LDAP", "ldap": LDAP}, r"thrift\.authentication must be one of"),
    ({"authentication": "ldap"}, r"thrift\.ldap: the ldap settings are required"),
    ({"ldap": LDAP}, r"thrift\.ldap: settings given but authentication is 'none'"),
    ({"authentication": "ldap", "ldap": {**LDAP, "url": ""}}, r"thrift\.ldap\.url is required"),
    ({"authentication": "ldap", "ldap": {**LDAP, "url": "ldap.example.com"}},
     r"thrift\.ldap\.url: 'ldap\.example\.com' is not an ldap:// or ldaps:// URL"),
    ({"authentication": "ldap", "ldap": {**LDAP, "url": "ldap://h:389/dc=example,dc=com"}},
     r"no DN"),
    ({"authentication": "ldap", "ldap": {"url": LDAP["url"]}},
     r"thrift\.ldap\.user_dn_pattern or base_dn: give exactly one"),
    ({"authentication": "ldap", "ldap": {**LDAP, "base_dn": "ou=bi,dc=example,dc=com"}},
     r"give exactly one"),
    # Spark's provider would skip these patterns and bind with the name as typed (any DN)
    ({"authentication": "ldap", "ldap": {**LDAP, "user_dn_pattern": "bi-users"}},
     r"thrift\.ldap\.user_dn_pattern: 'bi-users' must be a DN with %s"),
    ({"authentication": "ldap", "ldap": {**LDAP, "user_dn_pattern": "uid=ann,dc=example"}},
     r"'uid=ann,dc=example' must be a DN with %s"),
    ({"authentication": "ldap", "ldap": {**LDAP, "user_dn_pattern": "uid=%s"}},
     r"'uid=%s' must be a DN"),
    ({"authentication": "ldap", "ldap": {**LDAP, "user_dn_pattern": LDAP["user_dn_pattern"]
                                         + "::cn=%s,dc=x"}}, r"empty pattern"),
    ({"authentication": "ldap", "ldap": {"url": LDAP["url"], "base_dn": "example"}},
     r"thrift\.ldap\.base_dn: 'example' must be a DN"),
    ({"authentication": "ldap", "ldap": {**LDAP, "bind_password": "s3cret"}},
     r"thrift\.ldap\.bind_password: unknown key"),
    ({"authentication": "kerberos", "kerberos": {"principal": "hive@EXAMPLE.COM",
                                                 "keytab": "/etc/hive.keytab"}},
     r"thrift\.kerberos\.principal must be a service principal"),
    ({"authentication": "kerberos", "kerberos": {"principal": "hive/_HOST@EXAMPLE.COM"}},
     r"thrift\.kerberos\.keytab .* is required"),
])
def test_bad_thrift_settings_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message) as error:
        _thrift(section)
    assert "s3cret" not in str(error.value)


def test_thrift_authentication_becomes_hiveserver2_settings():
    assert load_config(CONF).thrift.hive_settings() == {"hive.server2.authentication": "NONE"}
    assert _thrift({"authentication": "ldap", "ldap": LDAP}).hive_settings() == {
        "hive.server2.authentication": "LDAP",
        "hive.server2.authentication.ldap.url": "ldaps://ldap.example.com:636",
        "hive.server2.authentication.ldap.userDNPattern": "uid=%s,ou=bi,dc=example,dc=com"}
    two = {"url": "ldaps://a.example.com ldaps://b.example.com",
           "user_dn_pattern": "uid=%s,ou=bi,dc=example,dc=com:cn=%s,ou=svc,dc=example,dc=com"}
    assert _thrift({"authentication": "ldap", "ldap": two}).hive_settings()[
        "hive.server2.authentication.ldap.userDNPattern"] == two["user_dn_pattern"]
    # base_dn is the pattern uid=%s,<base_dn> (what HiveServer2 makes of its baseDN)
    based = {"url": LDAP["url"], "base_dn": "ou=bi,dc=example,dc=com"}
    assert _thrift({"authentication": "ldap", "ldap": based}).hive_settings()[
        "hive.server2.authentication.ldap.userDNPattern"] == LDAP["user_dn_pattern"]
    kerberos = {"principal": "hive/_HOST@EXAMPLE.COM", "keytab": "/etc/security/hive.keytab"}
    assert _thrift({"authentication": "kerberos", "kerberos": kerberos}).hive_settings() == {
        "hive.server2.authentication": "KERBEROS",
        "hive.server2.authentication.kerberos.principal": "hive/_HOST@EXAMPLE.COM",
        "hive.server2.authentication.kerberos.keytab": "/etc/security/hive.keytab"}


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("LOCALHOST", True),
    ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("", False), ("::", False),
    ("10.0.0.5", False), ("192.168.1.10", False), ("bi-host.example.com", False),
    ("localhost.example.com", False),
])
def test_only_loopback_listens_without_authentication(host, loopback):
    from cvm_spark.config import is_loopback

    assert is_loopback(host) is loopback
    cfg = load_config(CONF).thrift
    if loopback:
        cfg.check_listener(host)
    else:
        with pytest.raises(ConfigError, match=r"refusing to listen on .* without authentication"):
            cfg.check_listener(host)
    _thrift({"authentication": "ldap", "ldap": LDAP}).check_listener(host)   # any address


def test_thrift_settings_leave_the_fingerprint_alone():
    plain = load_config(CONF)
    ldap = load_config(CONF, {"thrift": {"authentication": "ldap", "ldap": LDAP}})
    assert ldap.fingerprint() == plain.fingerprint()
    assert load_config(CONF, {"run_seed": 7}).fingerprint() != plain.fingerprint()


@pytest.mark.parametrize("root, expected", [
    ("hdfs://127.0.0.1:8020/landing/bank", "hdfs://127.0.0.1:8020/landing/bank/accounts"),
    ("hdfs:///landing/bank/", "hdfs:///landing/bank/accounts"),
    ("s3a://bucket/bank", "s3a://bucket/bank/accounts"),
    ("data/sample", str(Path("data/sample") / "accounts")),
])
def test_input_locations_keep_the_uri_authority(root, expected):
    from cvm_spark.config import InputsConfig

    assert InputsConfig(root=root).location("accounts") == (expected, "parquet")

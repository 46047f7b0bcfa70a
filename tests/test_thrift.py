"""JDBC through the Spark Thrift Server: scripts/thrift.sh over a small warehouse, queried
with pyspark's beeline; who may connect (no authentication on loopback only, LDAP against a
real slapd) and what a pseudonymised warehouse shows over JDBC."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from cvm_spark.serve.thrift import driver_class_path
from cvm_spark.storage.delta import latest_view_name, qualified_name, write_snapshot

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "cvm.yaml"
NOV, DEC = date(2024, 11, 1), date(2024, 12, 1)
SCRIPT = ["bash", str(ROOT / "scripts" / "thrift.sh")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _beeline() -> Path:
    import pyspark

    beeline = Path(pyspark.__file__).parent / "bin" / "beeline"
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")) or not beeline.exists():
        pytest.skip("needs Java and pyspark's bin/beeline")
    return beeline


def _env(run_dir: Path) -> dict[str, str]:
    env = {**os.environ,
           "CVM_THRIFT_DIR": str(run_dir),
           "CVM_THRIFT_SUBMIT_ARGS": "--conf spark.ui.enabled=false "
                                     "--conf spark.sql.shuffle.partitions=2",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    env.pop("CVM_PSEUDONYM_SECRET", None)   # cvm thrift refuses to start with the key at hand
    return env


def test_driver_class_path_keeps_only_delta_jars():
    ivy = "/root/.ivy2/jars"
    jars = ",".join([
        f"file://{ivy}/io.delta_delta-spark_4.1_2.13-4.4.0.jar",
        f"file:{ivy}/io.delta_delta-storage-4.4.0.jar",
        f"file://{ivy}/com.fasterxml.jackson.core_jackson-databind-2.13.5.jar",
        f"file://{ivy}/io.unitycatalog_unitycatalog-client-0.6.0.jar",
        "/opt/jars/delta-spark_4.1_2.13-4.4.0.jar",
        f"file://{ivy}/commons-logging_commons-logging-1.3.0.jar",
        "",
    ])
    assert driver_class_path(jars) == [
        f"{ivy}/io.delta_delta-spark_4.1_2.13-4.4.0.jar",
        f"{ivy}/io.delta_delta-storage-4.4.0.jar",
        f"{ivy}/io.unitycatalog_unitycatalog-client-0.6.0.jar",
        "/opt/jars/delta-spark_4.1_2.13-4.4.0.jar",
    ]
    assert driver_class_path("") == []


def _no_spark(monkeypatch):
    from cvm_spark.common import session

    def build_spark(*_args, **_kwargs):
        raise AssertionError("Spark must not start")

    monkeypatch.setattr(session, "build_spark", build_spark)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "bi-host.example.com", ""])
def test_cvm_thrift_refuses_to_listen_beyond_loopback_without_authentication(
        monkeypatch, capsys, host):
    from cvm_spark import cli

    _no_spark(monkeypatch)
    assert cli.main(["thrift", "--host", host, "--config", str(CONF)]) == 2
    err = capsys.readouterr().err
    assert f"cvm: config error: thrift: refusing to listen on {host or 'all interfaces'!r} " \
           "without authentication" in err
    assert "thrift.authentication" in err


def test_cvm_thrift_listens_anywhere_with_ldap(monkeypatch, capsys):
    from cvm_spark import cli

    _no_spark(monkeypatch)
    ldap = "{url: 'ldaps://ldap.example.com', user_dn_pattern: 'uid=%s,ou=bi,dc=example,dc=com'}"
    args = ["thrift", "--check", "--host", "0.0.0.0", "--config", str(CONF),
            "--set", "thrift.authentication=ldap", "--set", f"thrift.ldap={ldap}"]
    assert cli.main(args) == 0
    assert "ok to listen on 0.0.0.0:10000 (authentication ldap)" in capsys.readouterr().out
    assert cli.main(["thrift", "--check", "--config", str(CONF)]) == 0   # loopback, no auth


def test_cvm_thrift_refuses_the_pseudonym_key_in_its_environment(monkeypatch, capsys):
    from cvm_spark import cli

    _no_spark(monkeypatch)
    monkeypatch.setenv("CVM_TEST_THRIFT_KEY", "a-pseudonym-key-of-some-length")
    code = cli.main(["thrift", "--config", str(CONF),
                     "--set", "privacy.key_env=CVM_TEST_THRIFT_KEY"])
    assert code == 2
    err = capsys.readouterr().err
    assert "CVM_TEST_THRIFT_KEY (privacy.key_env, the pseudonym key) is set" in err
    assert "a-pseudonym-key-of-some-length" not in err


def test_thrift_script_stops_at_the_config_error_before_any_jvm(tmp_path):
    env = _env(tmp_path / "thrift")
    done = subprocess.run([*SCRIPT, "start", "--host", "0.0.0.0", "--port", str(_free_port())],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing to listen on '0.0.0.0' without authentication" in done.stderr
    assert not (tmp_path / "thrift" / "thrift.log").exists()   # spark-submit never ran


def _tiers(spark, month: date, accounts: list[str]):
    return spark.createDataFrame([(month, a, "gold") for a in accounts],
                                 "snapshot_month date, account_id string, tier string")


@pytest.fixture
def jdbc_output(spark, base_config, tmp_path):
    """A warehouse with one table, ``tiers``: 3 accounts in November, 2 in December."""
    output = replace(base_config.output, warehouse=str(tmp_path / "wh"), database="cvm_jdbc")
    write_snapshot(_tiers(spark, NOV, ["a", "b", "c"]), "tiers", output, NOV)
    write_snapshot(_tiers(spark, DEC, ["a", "b"]), "tiers", output, DEC)
    return output


@contextlib.contextmanager
def _thrift_server(env: dict[str, str], port: int, cvm_args: list[str]):
    """``scripts/thrift.sh start`` on 127.0.0.1:``port`` (yields its output); stopped at the
    end, and checked stopped."""
    run_dir = Path(env["CVM_THRIFT_DIR"])
    try:
        started = subprocess.run(
            [*SCRIPT, "start", "--port", str(port), "--master", "local[2]", "--timeout", "420",
             *cvm_args], env=env, capture_output=True, text=True, timeout=600, check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        yield started.stdout
        status = subprocess.run([*SCRIPT, "status"], env=env, capture_output=True, text=True,
                                timeout=60, check=False)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        subprocess.run([*SCRIPT, "stop"], env=env, capture_output=True, timeout=120,
                       check=False)
        pid_file = run_dir / "thrift.pid"
        if pid_file.exists():  # stop failed: end the server's process group ourselves
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    stopped = subprocess.run([*SCRIPT, "status"], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert stopped.returncode == 3, stopped.stdout


@pytest.mark.thrift
def test_thrift_server_serves_the_tables_over_jdbc(spark, jdbc_output, tmp_path):
    beeline = _beeline()
    port = _free_port()
    env = _env(tmp_path / "thrift")
    db = jdbc_output.database
    with _thrift_server(env, port, ["--set", f"output.warehouse={jdbc_output.warehouse}",
                                    "--set", f"output.database={db}"]) as started:
        assert f"jdbc:hive2://127.0.0.1:{port}/{db}" in started
        queries = (f"select count(*) from {db}.tiers where snapshot_month = "
                   f"(select max(snapshot_month) from {db}.tiers);"
                   f"select count(*) from {db}.tiers_latest;"
                   f"describe {db}.tiers;")
        result = subprocess.run(
            [str(beeline), "-u", f"jdbc:hive2://127.0.0.1:{port}/{db}", "--silent=true",
             "--showHeader=false", "--outputformat=tsv2", "-e", queries],
            env=env, capture_output=True, text=True, timeout=420, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        latest = spark.table(latest_view_name(jdbc_output, "tiers")).count()
        assert latest == 2
        assert int(lines[0]) == latest
        assert int(lines[1]) == latest
        described = dict(line.split("\t")[::2] for line in lines[2:]
                         if not line.startswith("#") and line.count("\t") == 2)
        columns = spark.table(qualified_name(jdbc_output, "tiers")).columns
        assert all(described.get(c, "").strip() for c in columns), described


# --------------------------------------------------------------------------------------------
# Authentication: LDAP against a real directory, over a pseudonymised warehouse
# --------------------------------------------------------------------------------------------

RAW_IDS = ("RAWID-70001", "RAWID-70002")   # account ids that must never reach a JDBC client
PSEUDONYM_SECRET = "thrift-test-pseudonym-key-0123456789"


def _pseudonymised_warehouse(spark, base_config, root: Path):
    """Every output table (one snapshot, two accounts) written as a pseudonymised run writes
    it (``pipeline.runner._write``: ``pseudonymise``, the declared-schema check, the Delta
    write with the key id); quarantine.row_json holds a raw id before pseudonymisation."""
    import json

    from cvm_spark.config import load_config_dict, to_dict
    from cvm_spark.schemas.outputs import TABLE_DESCRIPTIONS
    from cvm_spark.storage.delta import write_observed
    from cvm_spark.storage.privacy import PseudonymKey, pseudonymise, table_properties
    from cvm_spark.storage.tables import check_output_schema, declared_schema

    data = to_dict(base_config)
    data["output"].update(warehouse=str(root), database="cvm_ldap")
    raw = load_config_dict(data)
    data["privacy"].update(pseudonymise=True, key_env="CVM_TEST_THRIFT_PSEUDONYM_SECRET")
    private = load_config_dict(data)
    key = PseudonymKey(PSEUDONYM_SECRET.encode(), "test")
    for table in TABLE_DESCRIPTIONS:
        schema = declared_schema(table, raw)
        values = [{"snapshot_month": DEC, "account_id": rid, "source_table": "accounts",
                   "reason": "null_key",
                   "row_json": json.dumps({"account_id": rid, "birth_year": "1970"})}
                  for rid in RAW_IDS]
        rows = [tuple(v.get(f.name) for f in schema.fields) for v in values]
        df = pseudonymise(spark.createDataFrame(rows, schema), key)
        check_output_schema(df, table, private)
        write_observed(df, table, private.output, DEC, properties=table_properties(key))
    return private, key, sorted(TABLE_DESCRIPTIONS)


def _run_beeline(beeline: Path, url: str, env: dict[str, str], user: str | None,
                 password: str | None, sql: str, header: bool = False) -> subprocess.Popen:
    cmd = [str(beeline), "-u", url, "--silent=true", f"--showHeader={str(header).lower()}",
           "--outputformat=tsv2", "-e", sql]
    cmd += ["-n", user] if user is not None else []
    cmd += ["-p", password] if password is not None else []
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)


def _sections(stdout: str) -> dict[str, list[list[str]]]:
    """beeline's tsv2 output cut at the marker rows ``BEGIN <what>`` (printed by
    ``select 'BEGIN <what>'``): what -> the rows after it, split at tabs (header first)."""
    out: dict[str, list[list[str]]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("BEGIN "):
            current = out.setdefault(line.removeprefix("BEGIN "), [])
            current.clear()   # the marker's header and its row: keep what follows the row
        elif current is not None and line.strip():
            current.append(line.split("\t"))
    return out


def _described_columns(rows: list[list[str]]) -> list[str]:
    """The column names of a ``describe`` (header first), before its partition section."""
    names = []
    for row in rows[1:]:
        if not row[0].strip() or row[0].startswith("#"):
            break
        names.append(row[0].strip())
    return names


@pytest.mark.thrift
def test_ldap_lets_in_only_the_directory_users_of_its_branch(spark, base_config, tmp_path):
    """`cvm thrift` with thrift.authentication: ldap against a real slapd: a wrong, empty or
    unknown password, an unknown user and a directory user outside the configured branch are
    refused; the analyst is served, and over JDBC no table or view of the pseudonymised
    warehouse shows account_id or a raw account id."""
    import secrets

    import ldap_server
    from banks import config_file

    from cvm_spark.config import load_config_dict, to_dict

    ldap_server.require_slapd()
    beeline = _beeline()
    analyst_pw, clerk_pw = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    users = {"ou=bi": {"analyst": analyst_pw}, "ou=staff": {"clerk": clerk_pw}}
    private, key, tables = _pseudonymised_warehouse(spark, base_config, tmp_path / "wh")
    with ldap_server.running(tmp_path / "ldap", users) as directory:
        # the directory itself accepts the clerk: a refusal below is the branch's doing
        assert directory.bind_works(directory.dn("clerk", "ou=staff"), clerk_pw)
        assert not directory.bind_works(directory.dn("analyst", "ou=bi"), "wrong")
        data = to_dict(private)
        data["thrift"] = {"authentication": "ldap", "ldap": {
            "url": directory.url, "user_dn_pattern": f"uid=%s,ou=bi,{directory.suffix}"}}
        conf = config_file(load_config_dict(data), tmp_path / "cvm_ldap.yaml")
        port = _free_port()
        env = _env(tmp_path / "thrift")
        db = private.output.database
        url = f"jdbc:hive2://127.0.0.1:{port}/{db}"
        with _thrift_server(env, port, ["--config", str(conf)]) as started:
            assert f"{url} (authentication ldap)" in started
            refused = {
                "wrong password": ("analyst", "wrong-" + analyst_pw),
                "empty password": ("analyst", ""),
                "no user": (None, None),
                "unknown user": ("nobody", analyst_pw),
                "user of another branch": ("clerk", clerk_pw),
                "DN of another branch": (directory.dn("clerk", "ou=staff"), clerk_pw),
            }
            views = [f"{t}_latest" for t in tables]
            names = [*tables, *views]
            # describe every table and view; select * from the views (what dashboards read;
            # with one snapshot they hold every row of their tables)
            sql = "select 'BEGIN user'; select current_user(); select 'BEGIN tables'; " \
                  f"show tables in {db}; " + "".join(
                      f"select 'BEGIN describe {n}'; describe {db}.{n}; " for n in names) \
                + "".join(f"select 'BEGIN select {n}'; select * from {db}.{n}; " for n in views)
            # the analyst's session and the refused attempts at the same time
            served = _run_beeline(beeline, url, env, "analyst", analyst_pw, sql, header=True)
            attempts = {case: _run_beeline(beeline, url, env, user, pw, "select 'served'")
                        for case, (user, pw) in refused.items()}
            try:
                for case, proc in attempts.items():
                    out, err = proc.communicate(timeout=300)
                    assert proc.returncode != 0 and "served" not in out, (case, out, err)
                    assert "Could not open client transport" in err, (case, err)
                out, err = served.communicate(timeout=420)
                assert served.returncode == 0, out + err
            finally:
                for proc in (served, *attempts.values()):
                    if proc.poll() is None:
                        proc.kill()
                        proc.communicate()
        log = (tmp_path / "thrift" / "thrift.log").read_text(errors="replace")
    _check_served(out, tables, [key.hexdigest(rid) for rid in RAW_IDS])
    # every refusal went through the LDAP provider; no password reached the server's log
    assert log.count("Error validating LDAP user") >= len(refused), log[-3000:]
    for password in (analyst_pw, clerk_pw):
        assert password not in log


def _check_served(out: str, tables: list[str], keys: list[str]) -> None:
    """The analyst's session: the user, every table and view, their columns and rows."""
    sections = _sections(out)
    views = [f"{t}_latest" for t in tables]
    names = [*tables, *views]
    assert sections["user"][1] == ["analyst"]
    assert sorted(row[1] for row in sections["tables"][1:]) == sorted(names)
    described = {name: _described_columns(sections[f"describe {name}"]) for name in names}
    for name in names:
        assert "account_id" not in described[name], name
    for table in tables:
        assert described[f"{table}_latest"] == described[table], table
    for name in views:
        header, *rows = sections[f"select {name}"]
        columns = [c.split(".")[-1] for c in header]
        assert columns == described[name] and len(rows) == len(RAW_IDS), name
        if "account_key" in columns:
            assert sorted(r[columns.index("account_key")] for r in rows) == sorted(keys), name
    assert {t for t in tables if "account_key" in described[t]} == {
        "features", "rfm", "value_scores", "tiers", "campaign_targets"}
    for raw in (*RAW_IDS, "birth_year"):   # quarantine.row_json had both before pseudonymising
        assert raw not in out, raw

"""The generator's industry profiles: bank or telecom is chosen by ``generator.profile`` (and
``cvm generate --profile``); the telecom sample keeps the data contract, plants ARPU bands by
value group, consistent tariff plans, payment methods and bad debt, and every planted bad row
gets its quarantine reason (docs/generator.md, "Profiles")."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cvm_generate import BAD_KINDS, BAD_ROW_REASONS, INDUSTRIES, PLANTED_GROUP, PLANTED_PATTERN
from cvm_generate import generate_tables as generate
from cvm_generate.plan import Plan
from cvm_spark.config import GENERATOR_PROFILES, INDUSTRY_PROFILES, ConfigError, load_config
from cvm_spark.schemas.inputs import INPUT_TABLES

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "cvm.yaml"
TELECOM_LINES = ["voice", "data", "sms", "value_added", "device_instalment"]
TELECOM_GROUPS = {"services": ["voice", "data", "sms"], "value_added": ["value_added"],
                  "device": ["device_instalment"]}
PLANTED = [PLANTED_GROUP, PLANTED_PATTERN]
# ARPU (monthly income over the lines) cut points that separate the planted groups
HIGH_ARPU, LOW_ARPU = 150.0, 50.0


def telecom_config(base_config, root: Path, bad_row_share: float = 0.0):
    """300 telecom subscribers x 12 months (the telecom product lines and product groups)."""
    from banks import bank_config

    return bank_config(base_config, root, accounts=300, months=12, database="cvm_telecom",
                       validation={"product_lines": TELECOM_LINES},
                       value={"product_groups": TELECOM_GROUPS},
                       generator={"profile": "telecom", "bad_row_share": bad_row_share})


@pytest.fixture(scope="module")
def telecom(spark, base_config, tmp_path_factory):
    """The telecom sample without bad rows, the tables the tests read persisted."""
    cfg = telecom_config(base_config, tmp_path_factory.mktemp("telecom"))
    tables = generate(spark, cfg.generator, cfg.snapshot, cfg.validation)
    kept = {name: df.persist() for name, df in tables.items()}
    yield kept
    for df in kept.values():
        df.unpersist()


# --------------------------------------------------------------------------------------------
# Choosing a profile
# --------------------------------------------------------------------------------------------


def test_every_configurable_profile_exists():
    assert list(INDUSTRIES) == list(INDUSTRY_PROFILES)
    # the other profile writes a purchase log (tests/test_purchases.py)
    assert list(GENERATOR_PROFILES) == [*INDUSTRY_PROFILES, "purchases"]
    assert all(INDUSTRIES[name].name == name for name in INDUSTRIES)


def test_the_config_chooses_the_profile(base_config):
    assert base_config.generator.profile == "bank"
    bank = Plan.build(base_config.generator, date(2024, 12, 1), base_config.validation)
    assert bank.industry is INDUSTRIES["bank"]
    cfg = load_config(CONF, {"generator.profile": "telecom",
                             "validation.product_lines": TELECOM_LINES,
                             "value.product_groups": TELECOM_GROUPS})
    plan = Plan.build(cfg.generator, cfg.snapshot, cfg.validation)
    assert plan.industry is INDUSTRIES["telecom"]
    assert plan.profiles == tuple(INDUSTRIES["telecom"].lines[name] for name in TELECOM_LINES)


def test_a_bad_profile_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"generator\.profile must be one of "
                                          r"\['bank', 'telecom', 'purchases'\], got 'insurer'"):
        load_config(CONF, {"generator.profile": "insurer"})


def test_lines_without_economics_log_one_warning(base_config, caplog):
    cfg = load_config(CONF, {"generator.profile": "telecom"})  # the bank's product lines
    with caplog.at_level(logging.WARNING, logger="cvm_generate"):
        plan = Plan.build(cfg.generator, cfg.snapshot, cfg.validation)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "telecom profile" in warnings[0] and "'demand_deposit'" in warnings[0]
    assert "'fee_other'" in warnings[0]
    assert set(plan.profiles) == {INDUSTRIES["telecom"].default_line}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cvm_generate"):
        Plan.build(base_config.generator, base_config.snapshot, base_config.validation)
    assert not caplog.records


def test_cli_profile_flags():
    from cvm_spark.cli import _overrides, build_parser

    parser = build_parser()
    args = parser.parse_args(["generate", "--profile", "telecom"])
    assert _overrides(args)["generator.profile"] == "telecom"
    args = parser.parse_args(["run", "--generate", "--generate-profile", "telecom",
                              "--profile", "/tmp/events"])
    assert _overrides(args)["generator.profile"] == "telecom"
    assert args.profile == "/tmp/events"  # run's --profile stays the Spark profiling folder
    assert "generator.profile" not in _overrides(parser.parse_args(["generate"]))


def test_cli_profile_errors_stop_before_spark(tmp_path, capsys):
    from cvm_spark.cli import main

    assert main(["run", "--config", str(CONF), "--generate-profile", "telecom"]) == 2
    assert "--generate-profile only applies with --generate" in capsys.readouterr().err
    rc = main(["submit", "--dry-run", "--dist", str(tmp_path), "--", "generate",
               "--config", str(CONF), "--profile", "insurer"])
    assert rc == 2
    assert "generator.profile must be one of" in capsys.readouterr().err


def test_only_telecom_writes_the_optional_columns(spark, base_config, telecom):
    bank = generate(spark, base_config.generator, base_config.snapshot, base_config.validation)
    for name, spec in INPUT_TABLES.items():
        extra = PLANTED if name == "accounts" else []
        assert bank[name].schema.fieldNames() == [*spec.required, *extra], name
        assert telecom[name].schema.fieldNames() == [*spec.columns, *extra], name
        assert [f.dataType for f in telecom[name].schema.fields][:len(spec.columns)] == [
            f.dataType for f in spec.schema.fields], name
    assert bank["credit"].schema.fieldNames() != telecom["credit"].schema.fieldNames()


# --------------------------------------------------------------------------------------------
# The telecom sample
# --------------------------------------------------------------------------------------------


def test_telecom_product_lines_and_holdings(telecom):
    monthly = telecom["monthly_product"]
    assert {r.product_line for r in monthly.select("product_line").distinct().collect()} == set(
        TELECOM_LINES)
    held = {r.product_line: r.n for r in monthly.groupBy("product_line")
            .agg(F.countDistinct("account_id").alias("n")).collect()}
    subscribers = monthly.select("account_id").distinct().count()
    assert held["voice"] >= 0.9 * subscribers and held["data"] >= 0.9 * subscribers
    assert 0 < held["device_instalment"] < 0.5 * subscribers
    channels = {r.acquisition_channel for r in
                telecom["accounts"].select("acquisition_channel").distinct().collect()}
    assert channels == set(INDUSTRIES["telecom"].channels)


def test_arpu_bands_separate_the_planted_groups(telecom):
    """Median monthly income over the lines (ARPU) per subscriber, open at the snapshot and
    not dormant (a dormant subscriber's usage falls to a quarter): >= 80 % of each planted
    group in its band."""
    arpu = (telecom["monthly_product"].groupBy("account_id", "month")
            .agg(F.sum("income").alias("arpu"))
            .groupBy("account_id").agg(F.median("arpu").alias("arpu")))
    band = (F.when(F.col("arpu") >= HIGH_ARPU, "high").when(F.col("arpu") >= LOW_ARPU, "medium")
            .otherwise("low"))
    active = telecom["accounts"].where(F.col("close_date").isNull()
                                       & (F.col(PLANTED_PATTERN) != "dormant"))
    rows = (active.join(arpu, "account_id", "inner").groupBy(PLANTED_GROUP)
            .agg(F.count("*").alias("n"), F.median("arpu").alias("median"),
                 F.avg((band == F.col(PLANTED_GROUP)).cast("double")).alias("in_band"))
            .collect())
    by_group = {r[PLANTED_GROUP]: r for r in rows}
    assert set(by_group) == {"high", "medium", "low"}
    for group, row in by_group.items():
        assert row.n >= 15, group
        assert row.in_band >= 0.8, (group, row.in_band, row.median)
    assert 200 <= by_group["high"].median <= 300
    assert 70 <= by_group["medium"].median <= 110
    assert 20 <= by_group["low"].median <= 40


def test_plan_types_and_payment_types_agree(telecom):
    tariffs = INDUSTRIES["telecom"].tariffs
    accounts = telecom["accounts"]
    pairs = {(r.plan_type, r.payment_type) for r in
             accounts.select("plan_type", "payment_type").distinct().collect()}
    assert pairs == set(tariffs.plans.items())  # every plan, each with its payment type
    relations = telecom["relations"]
    family = relations.where(F.col("relation") == "family")
    members = family.select("account_id").union(family.select("related_account_id"))
    employees = relations.where(F.col("relation") == "employer").select("account_id")

    def share(df, plan: str) -> float:
        return df.select(F.avg((F.col("plan_type") == plan).cast("double"))).first()[0]

    assert share(accounts.join(members, "account_id", "left_semi"), "family_share") >= 0.7
    assert share(accounts.join(employees, "account_id", "left_semi"), "corporate") >= 0.5
    assert share(accounts.where(F.col("customer_type") == "enterprise"), "corporate") == 1.0
    unlimited = {g: share(accounts.where(F.col(PLANTED_GROUP) == g), "postpaid_unlimited")
                 for g in ("high", "medium", "low")}
    assert unlimited["high"] > unlimited["medium"] > unlimited["low"]
    # only postpaid subscribers owe a bill
    billed = telecom["credit"].join(accounts, "account_id", "inner")
    assert {r.payment_type for r in billed.select("payment_type").distinct().collect()} == {
        "postpaid"}


def test_bad_debt_is_written_off_from_90_days(telecom):
    credit = telecom["credit"]
    counts = {(r.bad_debt, r.late): r.n for r in credit.groupBy(
        "bad_debt", (F.col("days_past_due") >= 90).alias("late"))
        .agg(F.count("*").alias("n")).collect()}
    assert counts.get((True, True), 0) > 0  # some debt is written off ...
    assert counts.get((True, False), 0) == 0  # ... never before 90 days past due
    assert counts.get((False, True), 0) == 0  # (only prone subscribers reach 90 days)
    assert credit.where(F.col("bad_debt").isNull() | F.col("payment_method").isNull()).count() == 0


def test_delinquent_subscribers_pay_cash_or_voucher_more_often(telecom):
    credit = telecom["credit"]
    worst = credit.groupBy("account_id").agg(F.max("days_past_due").alias("worst"))
    rows = (credit.join(worst, "account_id", "inner")
            .groupBy((F.col("worst") >= 30).alias("delinquent"))
            .agg(F.avg(F.col("payment_method").isin("cash", "voucher").cast("double"))
                 .alias("cash")).collect())
    cash = {r.delinquent: r.cash for r in rows}
    assert cash[True] > 2 * cash[False], cash
    # the method is mostly the subscriber's usual one
    usual = (credit.groupBy("account_id", "payment_method").count()
             .groupBy("account_id").agg((F.max("count") / F.sum("count")).alias("usual"))
             .select(F.avg("usual")).first()[0])
    assert usual >= 0.75


def test_telecom_credits_are_transfers_and_corporate_payments(telecom):
    txns = telecom["transactions"]
    rows = {r.direction: r for r in txns.groupBy("direction").agg(
        F.count("*").alias("n"), F.count("counterparty_id").alias("with_counterparty"),
        F.median("amount").alias("median")).collect()}
    assert rows["debit"].with_counterparty == 0  # recharges and bill payments
    assert rows["credit"].with_counterparty == rows["credit"].n
    assert rows["debit"].n > rows["credit"].n
    assert 10 <= rows["debit"].median <= 100


def test_telecom_bad_rows_get_their_reasons(spark, base_config, tmp_path_factory, telecom):
    """Every planted bad row, and no other, is quarantined, with its kind's reason: per
    table, the quarantined count is the count of rows that differ from the sample without
    bad rows, and the reasons are those of the table's bad-row kinds."""
    from cvm_spark.contract.validate import validate_inputs

    cfg = telecom_config(base_config, tmp_path_factory.mktemp("telecom_bad"), 0.02)
    raw = {name: df.persist() for name, df in
           generate(spark, cfg.generator, cfg.snapshot, cfg.validation).items()}
    validated = validate_inputs(raw, cfg)
    planted: dict = {}
    try:
        counts = validated.counts()
        # the planted rows: those the sample without bad rows does not have
        planted = {name: raw[name].exceptAll(telecom[name]).persist() for name in raw}
        planted_n = {name: df.count() for name, df in planted.items()}
        # A gap of both profiles, not of this one: the contract accepts accounts opened on or
        # after 1900-01-01 (docs/data-contract.md), so the open_before_start rows, opened
        # 1-3650 days before validation.data_start (2000-01-01), are accepted.
        assert cfg.validation.data_start_date == date(2000, 1, 1)
        missed = {"accounts": planted["accounts"].where(
            F.col("open_date").between(date(1900, 1, 1), date(1999, 12, 31))).count()}
    finally:
        validated.unpersist()
        for df in [*raw.values(), *planted.values()]:
            df.unpersist()
    for name, kinds in BAD_KINDS.items():
        reasons = {k: n for k, n in counts[name].items() if k != "accepted"}
        assert set(reasons) == {BAD_ROW_REASONS[k] for k in kinds}, name
        assert sum(reasons.values()) == planted_n[name] - missed.get(name, 0), name

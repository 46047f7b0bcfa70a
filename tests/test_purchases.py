"""A purchase log as input (docs/purchase-log.md): the mapping onto the six tables on a tiny
hand-written log, what validation then accepts and quarantines under conf/retail.yaml (zero
amounts, repeated lines without an id, a 1997 line), the errors of a log that cannot be
imported, the generator, and an end-to-end run on a generated log."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from cvm_spark.config import ConfigError, load_config
from cvm_spark.contract.purchases import PurchaseLogError, import_purchases
from cvm_spark.contract.reading import read_inputs
from cvm_spark.contract.validate import validate_inputs
from cvm_spark.schemas.inputs import INPUT_TABLES

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "retail.yaml"
HEADER = ["Customer", "When", "Total", "Invoice", "Qty", "Channel"]
COLUMNS = {"customer_id": "Customer", "timestamp": "When", "amount": "Total",
           "order_id": "Invoice", "quantity": "Qty", "channel": "Channel"}
# the hand-written log: c1 buys 10.00 (order o1), 0.00 (o2), then twice the same 5.50 item
# in one second without an order id; c2 first bought in 1997, then returned 3.00 in 2024;
# a line without a customer; c3's only line has a time that does not parse
LOG = [
    ["c1", "2024-01-05 10:00:00", "10.00", "o1", "1", "store"],
    ["c1", "2024-01-20 12:00:00", "0.00", "o2", "1", "online"],
    ["c1", "2024-03-02 09:00:00", "5.50", "", "2", "online"],
    ["c1", "2024-03-02 09:00:00", "5.50", "", "2", "online"],
    ["c2", "1997-06-01 08:00:00", "20", "", "", "app"],
    ["c2", "2024-03-15 16:30:00", "-3.00", "r9", "1", "app"],
    ["", "2024-03-01 11:00:00", "1.00", "o7", "1", "store"],
    ["c3", "not a time", "4.00", "o8", "1", "store"],
]


def _write_log(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "log.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _config(tmp: Path, log: Path, **overrides):
    sets = {"snapshot_month": "2024-03", "inputs.root": str(tmp / "in"),
            "output.warehouse": str(tmp / "wh"), "purchases.path": str(log),
            "purchases.columns": COLUMNS, **overrides}
    return load_config(CONF, sets)


@pytest.fixture(scope="module")
def imported(spark, tmp_path_factory):
    """The hand log imported with conf/retail.yaml: (config, profile, raw tables)."""
    tmp = tmp_path_factory.mktemp("purchases")
    cfg = _config(tmp, _write_log(tmp / "log", LOG))
    profile, paths = import_purchases(spark, cfg)
    assert set(paths) == {"accounts", "transactions", "monthly_product", "marketing",
                          "credit", "relations"}
    return cfg, profile, read_inputs(spark, cfg.inputs)


def test_accounts_open_on_the_first_purchase(spark, imported):
    _, _, raw = imported
    expected = spark.createDataFrame([
        ("c1", dt.date(2024, 1, 5), "store"),
        ("c2", dt.date(1997, 6, 1), "app"),
    ], "account_id string, open_date date, acquisition_channel string")
    got = raw["accounts"]
    assertDataFrameEqual(got.select("account_id", "open_date", "acquisition_channel"),
                         expected)
    assert {r.customer_type for r in got.collect()} == {"individual"}
    assert got.where(F.col("close_date").isNotNull() | F.col("region").isNotNull()
                     | F.col("acquisition_cost").isNotNull()).count() == 0


def test_monthly_income_is_the_months_spend(spark, imported):
    _, _, raw = imported
    expected = spark.createDataFrame([
        ("c1", dt.date(2024, 1, 1), "purchases", 0.0, 10.0, 0.0),
        ("c1", dt.date(2024, 3, 1), "purchases", 0.0, 11.0, 0.0),
        ("c2", dt.date(1997, 6, 1), "purchases", 0.0, 20.0, 0.0),
        ("c2", dt.date(2024, 3, 1), "purchases", 0.0, -3.0, 0.0),   # a return: net spend
    ], INPUT_TABLES["monthly_product"].schema)
    assertDataFrameEqual(raw["monthly_product"], expected)


def test_transactions_keep_every_line_and_its_text(spark, imported):
    _, _, raw = imported
    rows = raw["transactions"].select("account_id", "txn_id", "txn_ts", "amount").collect()
    assert len(rows) == len(LOG)
    by_id = {r.txn_id: r for r in rows}
    assert by_id["o1"].txn_ts == "2024-01-05 10:00:00.000000" and by_id["o1"].amount == "10.0"
    assert by_id["o8"].txn_ts == "not a time"          # reaches validation as it was
    own = sorted(r.txn_id for r in rows if r.account_id == "c1" and r.txn_id.startswith("L"))
    assert len(own) == 2 and own[0] != own[1]
    assert re.fullmatch(r"L[0-9A-F]+-1", own[0]) and own[1] == own[0][:-1] + "2"
    assert {r.product_line for r in raw["transactions"].collect()} == {"purchases"}
    for name in ("marketing", "credit", "relations"):
        assert raw[name].count() == 0
        assert raw[name].schema == INPUT_TABLES[name].required_schema


def test_the_import_profile_counts_what_it_found(imported):
    _, p, _ = imported
    assert (p.lines, p.customers, p.without_customer, p.without_order_id) == (8, 3, 1, 3)
    assert (p.zero_amount, p.negative_amount, p.bad_timestamp, p.bad_amount) == (1, 1, 1, 0)
    assert (p.first_day, p.last_day) == (dt.date(1997, 6, 1), dt.date(2024, 3, 15))


def _reasons(spark, cfg, raw) -> dict[str, str | None]:
    """txn text -> quarantine reason (None: accepted) of every transaction line."""
    validated = validate_inputs(raw, cfg)
    rows = validated.classified["transactions"].select(
        "account_id", "txn_ts", "amount", "_reason").collect()
    validated.unpersist()
    return sorted(((str(r.account_id), str(r.txn_ts)[:10], r.amount, r._reason)
                   for r in rows), key=str)


def test_retail_validation_keeps_zero_amounts_repeats_and_old_lines(spark, imported):
    cfg, _, raw = imported
    got = _reasons(spark, cfg, raw)
    assert got == sorted([
        ("c1", "2024-01-05", 10.0, None),
        ("c1", "2024-01-20", 0.0, None),                  # a purchase with zero spend
        ("c1", "2024-03-02", 5.5, None),
        ("c1", "2024-03-02", 5.5, None),                  # its twin: not duplicate_event
        ("c2", "1997-06-01", 20.0, None),                 # data_start unset: accepted
        ("c2", "2024-03-15", -3.0, "non_positive_amount"),
        ("None", "2024-03-01", 1.0, "null_key"),
        ("c3", "None", 4.0, "malformed_value"),
    ], key=str)


def test_bank_rules_still_refuse_zero_amounts_and_old_lines(spark, imported):
    _, _, raw = imported
    bank = load_config(CONF, {"snapshot_month": "2024-03", "purchases.columns": COLUMNS,
                              "validation.accept_zero_amount": False,
                              "validation.data_start": "2000-01-01"})
    got = {(a, d): reason for a, d, _, reason in _reasons(spark, bank, raw)}
    assert got[("c1", "2024-01-20")] == "non_positive_amount"
    assert got[("c2", "1997-06-01")] == "date_out_of_window"
    assert got[("c1", "2024-01-05")] is None


def test_a_log_that_cannot_be_imported_says_why(spark, tmp_path):
    cases = [
        ("missing", LOG, [h if h != "Total" else "Price" for h in HEADER],
         r"column 'Total' \(purchases.columns.amount\) is missing"),
        ("empty", [], HEADER, r"no lines"),
        ("dates", [["c1", "05/01/2024 10:00", "1.0", "o", "1", "x"]], HEADER,
         r"column 'When' \(purchases.columns.timestamp\): no value parses as a timestamp "
         r"\(e.g. '05/01/2024 10:00'\); set purchases.timestamp_format"),
        ("amounts", [["c1", "2024-01-05", "ten", "o", "1", "x"]], HEADER,
         r"column 'Total' \(purchases.columns.amount\): no value parses"),
    ]
    for name, rows, header, message in cases:
        cfg = _config(tmp_path / name, _write_log(tmp_path / name / "log", rows, header))
        with pytest.raises(PurchaseLogError, match=message):
            import_purchases(spark, cfg)
    with pytest.raises(PurchaseLogError, match="cannot read csv"):
        import_purchases(spark, _config(tmp_path, tmp_path / "nowhere"))


def test_a_timestamp_format_reads_day_first_logs(spark, tmp_path):
    log = _write_log(tmp_path / "log", [["c1", "05/01/2024 10:00", "2", "", "", "x"]])
    cfg = _config(tmp_path, log, **{"purchases.timestamp_format": "dd/MM/yyyy HH:mm"})
    profile, _ = import_purchases(spark, cfg)
    assert (profile.first_day, profile.bad_timestamp) == (dt.date(2024, 1, 5), 0)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"purchases.columns": {"customer_id": "a", "timestamp": "b"}},
     r"purchases\.columns must name the log's column for \['amount'\]"),
    ({"purchases.columns": {"customer_id": "a", "timestamp": "b", "amount": "c", "sku": "d"}},
     r"unknown role\(s\) \['sku'\]"),
    ({"purchases.amount_per_unit": True,
      "purchases.columns": {"customer_id": "a", "timestamp": "b", "amount": "c"}},
     r"amount_per_unit needs a quantity column"),
    ({"purchases.product_line": "books"}, r"purchases.product_line 'books' is not in"),
    ({"purchases.format": "xlsx"}, r"purchases\.format must be one of"),
    ({"validation.data_start": "1899-12-31"}, r"data_start must be on or after 1900-01-01"),
])
def test_purchase_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONF, overrides)


def test_data_start_is_optional_and_explicit_values_still_work():
    retail = load_config(CONF)
    assert retail.validation.data_start_date is None
    assert retail.validation.event_floor == dt.date(1900, 1, 1)
    bank = load_config(ROOT / "conf" / "cvm.yaml")
    assert bank.validation.data_start_date == dt.date(2000, 1, 1)
    assert bank.validation.event_floor == dt.date(2000, 1, 1)
    assert not bank.validation.accept_zero_amount and bank.purchases is None


def test_the_generated_log_is_seeded_and_has_what_logs_have(spark):
    from cvm_generate import generate_purchase_log

    cfg = load_config(CONF, {"generator.accounts": 400})
    log = generate_purchase_log(spark, cfg.generator, cfg.snapshot, cfg.purchases)
    again = generate_purchase_log(spark, cfg.generator, cfg.snapshot, cfg.purchases)
    assertDataFrameEqual(log, again.repartition(3))
    other = load_config(CONF, {"generator.accounts": 400, "generator.seed": 8})
    assert log.exceptAll(generate_purchase_log(spark, other.generator, other.snapshot,
                                               other.purchases)).count() > 0
    s = log.agg(
        F.countDistinct("customer_id").alias("customers"),
        F.min("timestamp").alias("first"), F.max("timestamp").alias("last"),
        F.count_if(F.col("amount") == "0.00").alias("zero"),
        F.count_if(F.col("order_id").isNull()).alias("no_id"),
    ).first()
    assert s.customers == 400 and s.first < "1998" and s.last < "2025-01-01"
    assert s.zero > 0 and s.no_id > 0
    per = log.groupBy("customer_id").count()
    assert per.where("count = 1").count() > 100 and per.where("count > 3").count() > 50
    twins = log.where(F.col("order_id").isNull()).groupBy(*log.columns).count()
    assert twins.where("count > 1").count() > 0


@pytest.mark.e2e
def test_end_to_end_on_a_generated_log(spark, tmp_path, monkeypatch):
    """``cvm generate`` + ``cvm import-purchases`` + ``cvm run`` on 300 customers."""
    import contextlib
    import io

    from banks import KeepOpen

    from cvm_spark import cli
    from cvm_spark.storage.delta import table_path

    sets = {"inputs.root": tmp_path / "in", "output.warehouse": tmp_path / "wh",
            "purchases.path": tmp_path / "log", "generator.accounts": 300}
    flags = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    monkeypatch.setattr(cli, "_session", lambda *a, **k: KeepOpen(spark))
    printed = {}
    for command in ("generate", "import-purchases", "run"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli.main([command, "--config", str(CONF), *flags])
        printed[command] = out.getvalue()
        assert code == 0, printed[command]
    cfg = load_config(CONF, {k: str(v) if isinstance(v, Path) else v for k, v in sets.items()})
    log = spark.read.option("header", True).csv(str(tmp_path / "log"))
    zero_buyers = {r.customer_id for r in log.where("amount = '0.00'").collect()}
    assert zero_buyers
    assert re.search(rf"imported .*: {log.count():,} lines, 300 customers, 1997-",
                     printed["import-purchases"])
    # the data window: from the 1997 lines, derived (validation.data_start unset)
    assert re.search(r"data window: 1997-\d\d-\d\d \.\. 2024-12-31 \(derived from the data",
                     printed["run"]), printed["run"]

    def table(name):
        return spark.read.format("delta").load(table_path(cfg.output, name)).where(
            F.col("snapshot_month") == F.lit(cfg.snapshot))

    quarantine = table("quarantine")
    assert quarantine.where(F.col("reason") == "duplicate_event").count() == 0
    assert quarantine.count() == 0        # the generator writes no bad lines
    for name in ("features", "rfm", "value_scores", "tiers"):
        ids = {r.account_id for r in table(name).select("account_id").collect()}
        assert len(ids) == 300 and zero_buyers <= ids, name
    for name in ("model_metrics", "tier_summary", "kpi_summary", "run_log"):
        assert table(name).count() > 0, name
    # every line is a transaction: the features count all of a customer's lines of the year
    year = log.where(F.col("timestamp") >= "2024-01-01").groupBy(
        F.col("customer_id").alias("account_id")).agg(F.count("*").alias("frequency_12m"))
    got = table("features").select("account_id", F.col("frequency_12m").cast("long"))
    assertDataFrameEqual(got.join(year.select("account_id"), "account_id"),
                         year.select("account_id", F.col("frequency_12m").cast("long")))
    _check_scores_on_a_log(cfg, table)


def _check_scores_on_a_log(cfg, table) -> None:
    """What issue 17 asks of a purchase log's scores: the tiers form a pyramid with the money
    falling down it, nobody without a purchase for 180+ days is in the top two tiers, and
    the forecast that feeds contribution value is not worse out of time than BG/NBD +
    Gamma-Gamma's (a candidate here)."""
    import itertools

    order = [t.name for t in cfg.tiers.tiers]
    tiers = table("tiers").join(table("features").select("account_id", "recency_days"),
                                "account_id")
    rows = {r.tier: r for r in tiers.groupBy("tier").agg(
        F.count(F.lit(1)).alias("n"), F.sum("contribution_money").alias("money")).collect()}
    counts = [rows[t].n if t in rows else 0 for t in order]
    assert all(a < b for a, b in itertools.pairwise(counts)), counts
    assert 0 < counts[0] <= 0.05 * sum(counts), counts
    means = [rows[t].money / rows[t].n for t in order]
    assert all(a > b for a, b in itertools.pairwise(means)), means
    silent = tiers.where(F.col("tier").isin(order[:2])
                         & (F.col("recency_days").isNull() | (F.col("recency_days") > 180)))
    assert silent.count() == 0
    metrics = {(r.model, r.scope, r.metric): r.value for r in table("model_metrics").collect()}
    in_use = [s.split(":", 1)[1] for (m, s, k) in metrics
              if m == "future_value" and s.startswith("method:") and k == "in_use"]
    assert len(in_use) == 1, in_use

    def skill(method: str) -> float:
        return metrics[("future_value_backtest", f"mean/{method}/overall", "mse_skill")]

    assert skill(in_use[0]) >= skill("btyd_spend"), (in_use, skill("btyd_spend"))

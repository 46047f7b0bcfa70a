"""ABC cut points, tier rules at their boundaries, lifecycle stages, matrices, campaigns."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from cvm_spark.segments.tiers import add_tiers, assign_tiers, campaign_targets, fit_abc

S = date(2024, 12, 1)
COLS = ("snapshot_month date, account_id string, contribution_value double, "
        "contribution_value_pct double, contribution_money double, current_value_pct double, "
        "loyalty_band string, "
        "credit_grade string, tenure_months int, recency_days int, is_closed boolean, "
        "income_trend_6m double, arpu_12m double, income_volatility_12m double, "
        "income_6m double")


def _scores(spark, rows):
    defaults = dict(cv=1.0, pct=10.0, money=1.0, cur=10.0, band="average", grade="B",
                    tenure=36, recency=5, closed=False, trend=0.0, arpu=100.0, vol=0.1,
                    income=0.0)
    out = []
    for account, overrides in rows:
        v = {**defaults, **overrides}
        out.append((S, account, v["cv"], v["pct"], v["money"], v["cur"], v["band"], v["grade"],
                    v["tenure"], v["recency"], v["closed"], v["trend"], v["arpu"], v["vol"],
                    v["income"]))
    return spark.createDataFrame(out, COLS)


def _tiers(spark, base_config, rows):
    return assign_tiers(_scores(spark, rows), base_config.tiers, "income_trend_6m",
                        "arpu_12m", "income_volatility_12m")


def test_abc_pareto_cut_points_on_money(spark, base_config):
    # money total 100: 50 and 30 make up the first 80% (A), 10 and 6 the next 15% (B), 4 is
    # C; the percentile composite runs the other way and is not what the classes read
    rows = [(f"a{v}", {"money": float(v), "cv": 100.0 - v}) for v in (50, 30, 10, 6, 4)]
    got = {r.account_id: r.abc_class for r in _tiers(spark, base_config, rows).collect()}
    assert got == {"a50": "A", "a30": "A", "a10": "B", "a6": "B", "a4": "C"}


def test_abc_on_the_composite_when_configured(spark, base_config):
    cfg = replace(base_config, tiers=replace(
        base_config.tiers, abc=replace(base_config.tiers.abc, measure="contribution_value")))
    rows = [(f"a{v}", {"cv": float(v), "money": 100.0 - v}) for v in (50, 30, 10, 6, 4)]
    got = {r.account_id: r.abc_class for r in _tiers(spark, cfg, rows).collect()}
    assert got == {"a50": "A", "a30": "A", "a10": "B", "a6": "B", "a4": "C"}


def test_abc_money_with_many_silent_and_some_loss_making_accounts(spark, base_config):
    """60 silent accounts (0), 5 loss-making (-10) and 5 earning 100, 60, 20, 15, 5 (positive
    total 200): A = 100 and 60 (the bucket crossing 80 %), B = 20 (0.80 -> 0.90) and 15
    (0.90 -> 0.975, crosses 95 %), C = the rest: class A is 2 of 70 accounts."""
    rows = ([(f"z{i:02d}", {"money": 0.0, "cv": 32.3}) for i in range(60)]
            + [(f"l{i}", {"money": -10.0, "cv": 20.0}) for i in range(5)]
            + [(f"p{v}", {"money": float(v), "cv": 60.0}) for v in (100, 60, 20, 15, 5)])
    got = {r.account_id: r.abc_class for r in _tiers(spark, base_config, rows).collect()}
    assert {a for a, c in got.items() if c == "A"} == {"p100", "p60"}
    assert {a for a, c in got.items() if c == "B"} == {"p20", "p15"}
    assert sum(c == "C" for c in got.values()) == 66


def test_abc_all_zero_is_c(spark, base_config):
    rows = [(f"z{i}", {"money": 0.0}) for i in range(3)]
    assert {r.abc_class for r in _tiers(spark, base_config, rows).collect()} == {"C"}


def test_tier_rules_at_their_boundaries(spark, base_config):
    """Bands on the contribution value percentile (97 / 90 / 70), loyalty, credit (a missing
    grade is unknown: not gold or silver, but diamond) and the dormancy guard (no transaction
    for more than 6 x 30 days and no positive income_6m, or closed: not gold or silver)."""
    rows = [
        ("gold", {"pct": 97.0, "band": "fairly_high", "grade": "B", "recency": 180}),
        ("silver_pct", {"pct": 96.99, "band": "high", "grade": "A"}),
        ("silver_credit", {"pct": 97.0, "band": "high", "grade": "C"}),
        ("diamond_no_credit", {"pct": 99.0, "band": "high", "grade": None}),
        ("diamond_dormant", {"pct": 99.0, "band": "high", "grade": "A", "recency": 181}),
        ("diamond_never", {"pct": 99.0, "band": "high", "grade": "A", "recency": None}),
        ("gold_income_only", {"pct": 99.0, "band": "high", "grade": "A", "recency": None,
                              "income": 0.01}),
        ("diamond_closed_income", {"pct": 99.0, "band": "high", "grade": "A", "closed": True,
                                   "income": 50.0}),
        ("diamond_closed", {"pct": 99.0, "band": "high", "grade": "A", "closed": True}),
        ("diamond_low", {"pct": 70.0, "band": "high", "grade": "A"}),
        ("copper_pct", {"pct": 69.99, "band": "high", "grade": "A"}),
        ("copper_loyalty", {"pct": 99.0, "band": "average", "grade": "A"}),
        ("copper_credit", {"pct": 99.0, "band": "high", "grade": "D"}),
    ]
    actual = _tiers(spark, base_config, rows).select(
        "account_id", "value_level", "tier", "tier_label_zh", "contact_channel",
        "service_level", "value_risk_label")
    gold = ("gold_diamond", "金钻", "relationship_manager_visit", "vip_channel")
    silver = ("silver_diamond", "银钻", "relationship_manager_call", "priority")
    diamond = ("diamond", "钻", "call_centre", "normal")
    copper = ("copper", "铜", "sms", "low_priority")
    expected = spark.createDataFrame([
        ("gold", "high", *gold, "protect"),
        ("silver_pct", "high", *silver, "protect"),
        ("silver_credit", "high", *silver, "protect"),
        ("diamond_no_credit", "high", *diamond, "protect"),
        ("diamond_dormant", "high", *diamond, "protect"),
        ("diamond_never", "high", *diamond, "protect"),
        ("gold_income_only", "high", *gold, "protect"),
        ("diamond_closed_income", "high", *diamond, "protect"),
        ("diamond_closed", "high", *diamond, "protect"),
        ("diamond_low", "medium", *diamond, "develop"),
        ("copper_pct", "medium", *copper, "develop"),
        ("copper_loyalty", "high", *copper, "protect"),
        ("copper_credit", "high", *copper, "secure"),
    ], actual.schema)
    assertDataFrameEqual(actual, expected)


def test_tier_reason_says_why(spark, base_config):
    rows = [("s", {"pct": 98.0, "band": "high", "grade": "C"}),
            ("d", {"pct": 99.0, "band": "high", "grade": None, "recency": 200}),
            ("c", {"pct": 20.0, "band": "low", "grade": "E"})]
    reasons = {r.account_id: r.tier_reason for r in _tiers(spark, base_config, rows).collect()}
    assert reasons == {
        "s": "value high (p98.0), loyalty high, credit C; not gold_diamond: credit not in A|B",
        "d": "value high (p99.0), loyalty high, credit unknown; not silver_diamond: credit not "
             "in A|B|C, no activity for 6+ months or closed",
        "c": "value low (p20.0), loyalty low, credit E; not diamond: value below p70, loyalty "
             "not in high|fairly_high, credit not in A|B|C|unknown"}


def test_unknown_grade_and_dormancy_guard_are_configurable(spark, base_config):
    """A bank that admits ungraded accounts to gold (``unknown`` in its credit grades) and
    calls 3 months without a transaction and without income (income_3m) dormant."""
    tiers = base_config.tiers
    gold = replace(tiers.tiers[0], credit_grades=["A", "B", "unknown"])
    cfg = replace(base_config, tiers=replace(tiers, dormancy_months=3,
                                             tiers=[gold, *tiers.tiers[1:]]))
    rows = [("ungraded", {"pct": 99.0, "band": "high", "grade": None}),
            ("quiet_91d", {"pct": 99.0, "band": "high", "grade": "A", "recency": 91}),
            ("quiet_90d", {"pct": 99.0, "band": "high", "grade": "A", "recency": 90})]
    scores = _scores(spark, rows).withColumnRenamed("income_6m", "income_3m")
    abc = fit_abc(scores, cfg.tiers.abc.measure, cfg.tiers)
    assigned = add_tiers(scores, cfg.tiers, "income_trend_6m", "arpu_12m",
                         "income_volatility_12m", abc)
    got = {r.account_id: (r.tier, r.credit_grade_used) for r in assigned.collect()}
    assert got == {"ungraded": ("gold_diamond", "unknown"), "quiet_91d": ("diamond", "A"),
                   "quiet_90d": ("gold_diamond", "A")}


STAGE_CASES = [
    ({"closed": True}, "dormant"),
    ({"recency": 181}, "dormant"),                     # > 6 months * 30 days
    ({"recency": None}, "dormant"),                    # never active, past the new period
    ({"recency": None, "tenure": 2}, "potential"),
    ({"tenure": 5}, "new"),
    ({"recency": 61}, "churn_risk"),
    ({"trend": -10.0}, "churn_risk"),                  # -10% of ARPU per month
    ({"vol": 0.5}, "fluctuating"),
    ({"trend": 5.0}, "growing"),
    ({"trend": 4.9}, "stable"),
]


def test_lifecycle_stages(spark, base_config):
    rows = [(f"case{i}", overrides) for i, (overrides, _) in enumerate(STAGE_CASES)]
    got = {r.account_id: r.lifecycle_stage for r in _tiers(spark, base_config, rows).collect()}
    assert got == {f"case{i}": stage for i, (_, stage) in enumerate(STAGE_CASES)}


def test_value_growth_matrix(spark, base_config):
    rows = [("star", {"cur": 60.0, "trend": 1.0}), ("cow", {"cur": 60.0, "trend": -1.0}),
            ("qm", {"cur": 10.0, "trend": 1.0}), ("dog", {"cur": 10.0, "trend": None})]
    got = {r.account_id: r.value_growth_label for r in _tiers(spark, base_config, rows).collect()}
    assert got == {"star": "star", "cow": "cash_cow", "qm": "question_mark", "dog": "dog"}


def test_campaign_targets_one_row_per_match(spark, base_config):
    scores = spark.createDataFrame([
        (S, "r", "churn_risk", "high", None, None, 80.0, 10.0, 90.0),
        (S, "t", "new", "low", "elastic", "inelastic", 10.0, 10.0, 50.0),
        (S, "both", "growing", "high", "elastic", "elastic", 49.9, 10.0, 99.0),
        (S, "none", "stable", "high", "elastic", "elastic", 10.0, 10.0, 90.0),
        (S, "low_future", "new", "low", "elastic", None, 10.0, 10.0, 49.9),
        (S, "d", "dormant", "low", None, None, 0.0, 70.0, 0.0),
    ], "snapshot_month date, account_id string, lifecycle_stage string, value_level string, "
       "elasticity_class_savings string, elasticity_class_wealth string, "
       "current_value_savings_pct double, historical_value_pct double, "
       "future_value_savings_pct double")
    actual = campaign_targets(scores, base_config.tiers).select("account_id", "campaign")
    expected = spark.createDataFrame(
        [("r", "retention"), ("t", "time_deposit_offer"), ("both", "time_deposit_offer"),
         ("both", "wealth_cross_sell"), ("d", "reactivation")], actual.schema)
    assertDataFrameEqual(actual, expected)
    reason = campaign_targets(scores, base_config.tiers).where("account_id = 'r'").first().reason
    assert reason == ("valuable account at churn risk (lifecycle_stage=churn_risk; "
                      "value_level=high)")
    reason = campaign_targets(scores, base_config.tiers).where(
        "account_id = 't'").first().reason
    assert reason == ("savings respond to marketing, little in deposits now, more to come, not "
                      "yet mature (elasticity_class_savings=elastic; "
                      "current_value_savings_pct=10.0; future_value_savings_pct=50.0; "
                      "lifecycle_stage=new)")


def test_tier_summary_by_abc_class(spark, base_config):
    """Accounts and money per tier x segment x ABC class: the share of accounts and of money
    per class are sums over the rows."""
    from cvm_spark.segments.tiers import tier_summary

    rows = [(f"p{v}", {"money": float(v)}) for v in (50, 30, 10, 6, 4)]
    tiers = _tiers(spark, base_config, rows)
    assigned = tiers.select("*", F.lit("Loyal").alias("segment"),
                            F.lit(2.0).alias("current_value"), F.lit(1.0).alias("future_value"))
    got = tier_summary(assigned).select("abc_class", "accounts", "total_contribution_money",
                                        "mean_contribution_money", "total_current_value",
                                        "share_of_accounts", "share_of_contribution_money")
    # money 100 over 5 accounts: A holds 2 accounts (0.4) and 80 (0.8), B 2 (0.4) and 16,
    # C 1 (0.2) and 4
    expected = spark.createDataFrame(
        [("A", 2, 80.0, 40.0, 4.0, 0.4, 0.8), ("B", 2, 16.0, 8.0, 4.0, 0.4, 0.16),
         ("C", 1, 4.0, 4.0, 2.0, 0.2, 0.04)],
        "abc_class string, accounts long, total_contribution_money double, "
        "mean_contribution_money double, total_current_value double, "
        "share_of_accounts double, share_of_contribution_money double")
    assertDataFrameEqual(got, expected)


# The telecom profile (conf/telecom.yaml): ARPU classes on arpu_3m, risk customers, the
# value x risk matrix and the retention campaign.
TELECOM_COLS = ("snapshot_month date, account_id string, contribution_value double, "
                "contribution_value_pct double, contribution_money double, "
                "current_value_pct double, loyalty_band string, credit_grade string, "
                "tenure_months int, recency_days int, is_closed boolean, income_trend_6m double, "
                "arpu_12m double, income_volatility_12m double, arpu_3m double, "
                "overdue_amount double, payment_method string, bad_debt boolean, "
                "income_3m double")


def _telecom_tiers(spark, cfg, rows):
    defaults = dict(pct=90.0, grade="A", trend=0.0, arpu=200.0, overdue=0.0,
                    method="direct_debit", bad=False)
    out = []
    for account, o in rows:
        v = {**defaults, **o}
        out.append((S, account, 1.0, v["pct"], 1.0, 50.0, "high", v["grade"], 36, 5, False,
                    v["trend"] * (v["arpu"] or 0.0), v["arpu"], 0.1, v["arpu"], v["overdue"],
                    v["method"], v["bad"], 0.0))
    return assign_tiers(spark.createDataFrame(out, TELECOM_COLS), cfg.tiers, "income_trend_6m",
                        "arpu_12m", "income_volatility_12m")


def test_arpu_classes_at_their_cut_points(spark, telecom_config):
    rows = [("a150", {"arpu": 150.0}), ("a149", {"arpu": 149.99}), ("a50", {"arpu": 50.0}),
            ("a49", {"arpu": 49.99}), ("a0", {"arpu": 0.0}), ("none", {"arpu": None})]
    got = {r.account_id: r.arpu_class
           for r in _telecom_tiers(spark, telecom_config, rows).collect()}
    assert got == {"a150": "high", "a149": "medium", "a50": "medium", "a49": "low",
                   "a0": "low", "none": None}


def test_risk_customers_reasons_matrix_and_retention(spark, telecom_config):
    rows = [
        ("clean", {}),
        ("arrears", {"overdue": 12.5}),
        ("falling", {"trend": -0.08}),                  # exactly the threshold: a reason
        ("almost", {"trend": -0.0799}),                 # just above it: none
        ("cash_debt", {"method": "cash", "bad": True}),
        ("low_value", {"pct": 10.0, "overdue": 5.0}),   # a reason, but not high value
        ("no_credit", {"grade": None, "overdue": None, "method": None, "bad": None}),
    ]
    got = {r.account_id: (r.risk_reasons, r.risk_customer, r.value_risk_label)
           for r in _telecom_tiers(spark, telecom_config, rows).collect()}
    assert got == {
        "clean": (None, False, "protect"),
        "arrears": ("arrears", True, "retain"),
        "falling": ("falling_arpu", True, "retain"),
        "almost": (None, False, "protect"),
        "cash_debt": ("bad_debt; churn_prone_payment", True, "retain"),
        "low_value": ("arrears", False, "limit"),
        "no_credit": (None, False, "protect"),
    }
    tiers = _telecom_tiers(spark, telecom_config, rows).select(
        "*", F.lit("stable").alias("elasticity_class"), F.lit(50.0).alias("current_value_data_pct"),
        F.lit(0.0).alias("historical_value_pct"))
    targets = {r.account_id: r.reason for r in campaign_targets(tiers, telecom_config.tiers)
               .where("campaign = 'retention'").collect()}
    assert set(targets) == {"arrears", "falling", "cash_debt"}
    assert targets["cash_debt"] == ("high-value subscriber at risk (risk_customer=true; "
                                    "risk_reasons=bad_debt; churn_prone_payment)")


def test_a_risk_reason_on_an_unknown_column_is_a_clear_error(spark, telecom_config):
    import pytest

    from cvm_spark.config import CampaignCondition, RiskCustomersConfig, RiskReason

    bad = RiskCustomersConfig(reasons=[RiskReason("x", [CampaignCondition("arpu_9m", ">", 1)])])
    cfg = replace(telecom_config.tiers, risk_customers=bad)
    with pytest.raises(ValueError, match=r"risk_customers.reasons refer to unknown column"):
        _telecom_tiers(spark, replace(telecom_config, tiers=cfg), [("a", {})])

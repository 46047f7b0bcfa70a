"""The tiers of the seeded 3,000-account run (tests/golden.py, shipped config) form a pyramid,
accounts without evidence rank at the bottom, and the top two tiers hold no inactive or
ungraded account (docs/model.md, "Value tier")."""

from __future__ import annotations

import itertools

import pytest
from pyspark.sql import functions as F

from cvm_spark.common.cuts import RANK_DECIMALS
from cvm_spark.storage.delta import table_path

pytestmark = pytest.mark.e2e

COMPONENTS = ("historical_value", "current_value", "influence_value", "future_value",
              "contribution_value")


def _month(spark, cfg, table):
    return spark.read.format("delta").load(table_path(cfg.output, table)).where(
        F.col("snapshot_month") == F.lit(cfg.snapshot))


@pytest.fixture(scope="module")
def run(spark, golden_run):
    cfg = golden_run[0]
    tiers = _month(spark, cfg, "tiers")
    scores = _month(spark, cfg, "value_scores").drop("contribution_value",
                                                     "contribution_value_pct",
                                                     "contribution_money")
    features = _month(spark, cfg, "features").select("account_id", "recency_days", "is_closed",
                                                     f"income_{cfg.tiers.dormancy_months}m")
    return cfg, tiers.join(scores.drop("snapshot_month"), "account_id").join(
        features, "account_id")


def test_tiers_form_a_pyramid(spark, run):
    """Each tier holds fewer accounts than the tier below, the top tier at most 5 %, and the
    money per account (contribution money) falls from tier to tier; tier_summary's shares
    add up to the same counts and money."""
    cfg, df = run
    order = [t.name for t in cfg.tiers.tiers]
    rows = {r.tier: r for r in df.groupBy("tier").agg(
        F.count(F.lit(1)).alias("n"), F.sum("contribution_money").alias("money")).collect()}
    total = sum(r.n for r in rows.values())
    counts = [rows[t].n if t in rows else 0 for t in order]
    assert all(a < b for a, b in itertools.pairwise(counts)), counts
    assert 0 < counts[0] <= 0.05 * total, counts
    means = [rows[t].money / rows[t].n for t in order]
    assert all(a > b for a, b in itertools.pairwise(means)), means
    summary = _month(spark, cfg, "tier_summary").groupBy("tier").agg(
        F.sum("share_of_accounts").alias("a"), F.sum("share_of_contribution_money").alias("m"))
    money = sum(r.money for r in rows.values())
    for r in summary.collect():
        assert r.a == pytest.approx(rows[r.tier].n / total, abs=1e-12), r.tier
        assert r.m == pytest.approx(rows[r.tier].money / money, rel=1e-9), r.tier


def test_no_evidence_ranks_at_the_bottom(run):
    """Per component, the accounts at 0 (rounded as ranked, :data:`RANK_DECIMALS`) share one
    percentile, the lowest a 0 can take: below every positive value, at or above every
    negative one, and 0 when nothing is negative."""
    _, df = run
    for c in COMPONENTS:
        v = F.round(F.col(c), RANK_DECIMALS)      # what the ranks compare
        r = df.agg(
            F.min(F.when(v == 0, F.col(f"{c}_pct"))).alias("zero_lo"),
            F.max(F.when(v == 0, F.col(f"{c}_pct"))).alias("zero_hi"),
            F.count(F.when(v == 0, 1)).alias("zeros"),
            F.count(F.when(v < 0, 1)).alias("negative"),
            F.min(F.when(v > 0, F.col(f"{c}_pct"))).alias("positive_lo"),
            F.max(F.when(v < 0, F.col(f"{c}_pct"))).alias("negative_hi")).first()
        if not r.zeros:
            continue
        assert r.zero_lo == r.zero_hi, c
        assert r.positive_lo is None or r.zero_hi < r.positive_lo, c
        assert r.negative_hi is None or r.negative_hi <= r.zero_lo, c
        if r.negative == 0:
            assert r.zero_hi == 0.0, c
    # influence: most accounts have no relation; they no longer sit in the middle
    assert df.where((F.round("influence_value", RANK_DECIMALS) == 0)
                    & (F.col("influence_value_pct") > 5)).count() == 0


def test_top_tiers_hold_no_inactive_or_ungraded_account(run):
    cfg, df = run
    top = [t.name for t in cfg.tiers.tiers[:2]]
    n = cfg.tiers.dormancy_months
    inactive = (F.coalesce(F.col("is_closed"), F.lit(False))
                | ((F.col("recency_days").isNull() | (F.col("recency_days") > 30 * n))
                   & ~F.coalesce(F.col(f"income_{n}m") > 0, F.lit(False))))
    grade = F.col(cfg.tiers.credit_grade_column)
    in_top = df.where(F.col("tier").isin(top))
    assert in_top.where(inactive | grade.isNull()).count() == 0
    # the third tier gives the guard and the grade as its reasons: "not <second tier>: ..."
    third = df.where(F.col("tier") == cfg.tiers.tiers[2].name)
    guarded = third.where(inactive).select("tier_reason").collect()
    assert guarded and all(f"no activity for {n}+ months" in r.tier_reason for r in guarded)
    ungraded = third.where(grade.isNull()).select("tier_reason").collect()
    assert all("credit unknown" in r.tier_reason and "credit not in" in r.tier_reason
               for r in ungraded)

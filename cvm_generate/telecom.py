"""The telecom profile's own columns (``Industry.tariffs``): each subscriber's tariff plan and
payment type (``accounts.plan_type``, ``payment_type``), and how each month's bill was paid
and whether its debt was written off (``credit.payment_method``, ``bad_debt``). The bank
profile has no tariffs and writes none of these optional contract columns.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_generate.draws import per_key, pick_by_share, uniform
from cvm_generate.plan import Plan
from cvm_generate.profile import ANCHORS, GROUPS, Tariffs

POSTPAID = "postpaid"


def _tariffs(plan: Plan) -> Tariffs:
    tariffs = plan.industry.tariffs
    assert tariffs is not None, f"the {plan.industry.name} profile has no tariffs"
    return tariffs


def with_tariff(base: DataFrame, plan: Plan) -> DataFrame:
    """The account base with ``plan_type``, ``payment_type`` and ``usual_method``.

    Enterprises are on the corporate plan; most family pairs share a family plan (one draw per
    pair, from the pair's hash ``h_pair``); most other employees of an enterprise are on its
    corporate plan; everyone else draws a plan by value group (high-value subscribers lean to
    postpaid_unlimited, low ones to prepaid). Anchor accounts drawn prepaid are moved to a
    postpaid plan: only postpaid subscribers have credit rows, and the anchors must have them.
    The usual payment method is drawn from the delinquency-prone or the other subscribers'
    shares.

    Hash slices: h_tariff (4 x 16 bits) corporate?, plan by group, usual method;
    h_pair slice 2 of 4 the family plan.
    """
    t = _tariffs(plan)
    idc, h = F.col("id"), F.col("h_tariff")
    hashed = base.select("*", plan.rng.hash("acct.tariff", idc).alias("h_tariff"))
    is_ent = F.col("customer_type") == plan.industry.customer_types[1]
    own = list(t.plans)[:4]
    by_group = None
    for g in GROUPS:
        pick = pick_by_share(uniform(h, 1, 4), own, t.by_group[g])
        by_group = (F.when(F.col("group") == g, pick) if by_group is None
                    else by_group.when(F.col("group") == g, pick))
    assert by_group is not None
    drawn = (F.when(is_ent, F.lit(t.corporate_plan))
             .when(F.col("family").isNotNull() & (uniform(F.col("h_pair"), 2, 4) < t.family_share),
                   F.lit(t.family_plan))
             .when(F.col("employer").isNotNull() & (uniform(h, 0, 4) < t.corporate_share),
                   F.lit(t.corporate_plan))
             .otherwise(by_group))
    prepaid = per_key(drawn, {name: pay != POSTPAID for name, pay in t.plans.items()})
    plan_type = F.when((idc < ANCHORS) & prepaid, F.lit(t.anchor_plan)).otherwise(drawn)
    usual = F.when(F.col("risky"), pick_by_share(uniform(h, 2, 4), t.methods,
                                                 t.risky_method_shares))
    usual = usual.otherwise(pick_by_share(uniform(h, 2, 4), t.methods, t.method_shares))
    staged = hashed.select("*", plan_type.alias("plan_type"), usual.alias("usual_method"))
    payment = per_key(F.col("plan_type"), dict(t.plans.items()))
    return staged.select("*", payment.alias("payment_type"))


def account_columns() -> dict[str, Column]:
    """The optional accounts columns of the telecom profile."""
    return {"plan_type": F.col("plan_type"), "payment_type": F.col("payment_type")}


def billed_on_credit() -> Column:
    """Whether an account-month can have a credit row: postpaid subscribers only (a prepaid
    subscriber pays before using, so owes nothing).

    The test reads the month index ``m``, so the optimizer cannot push it below the months'
    ``explode``: pushed down to ``range`` it would inline the whole tariff expression into
    one generated method, which then grows beyond the JVM's 64 KB limit (Spark falls back
    to slower, interpreted code).
    """
    return F.when(F.col("m") >= 0, F.col("payment_type") == POSTPAID)


def credit_columns(plan: Plan, dpd: Column, negative_dpd: Column) -> dict[str, Column]:
    """The optional credit columns of the telecom profile for an account-month row.

    ``payment_method``: the subscriber's usual method in most months, otherwise a fresh draw
    from the same shares (hash of account and month). ``bad_debt``: the debt of a
    delinquency-prone subscriber at ``write_off_days`` or more days past due is written off;
    false on the ``negative_days_past_due`` bad row (``negative_dpd``) so that a written-off
    row always shows its days past due.
    """
    t = _tariffs(plan)
    h = plan.rng.hash("credit.pay", F.col("id"), F.col("m"))
    shares = F.when(F.col("risky"), pick_by_share(uniform(h, 1, 2), t.methods,
                                                  t.risky_method_shares))
    shares = shares.otherwise(pick_by_share(uniform(h, 1, 2), t.methods, t.method_shares))
    method = F.when(uniform(h, 0, 2) < t.usual_method, F.col("usual_method")).otherwise(shares)
    written_off = F.col("risky") & (dpd >= t.write_off_days) & ~negative_dpd
    return {"payment_method": method, "bad_debt": written_off}

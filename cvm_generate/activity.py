"""Account-months and the event and monthly tables built from them: ``transactions``,
``monthly_product``, ``marketing`` and ``credit``, for either industry profile (the telecom
profile's own credit columns come from :mod:`cvm_generate.telecom`).
"""

from __future__ import annotations

import logging

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_generate.draws import int_between, lookup_at, normal_draw, uniform
from cvm_generate.plan import Plan, bad_key, codegen_split, conform
from cvm_generate.profile import (
    ANCHORS,
    CREDIT_BAD_KINDS,
    MARKETING_BAD_KINDS,
    MAX_TXN_PER_MONTH,
    MONTHLY_BAD_KINDS,
    RESPONSE_HALF,
    RESPONSE_LIFT,
    TXN_BAD_KINDS,
)
from cvm_generate.telecom import billed_on_credit, credit_columns
from cvm_spark.common.months import add_months
from cvm_spark.schemas import inputs as schemas

log = logging.getLogger(__name__)




def _spend(plan: Plan, h: Column, m: Column) -> tuple[Column, Column]:
    """(spend, contacts) of an account-month from its marketing hash; spend 0 = not marketed."""
    marketed = (uniform(h, 0, 4) < F.col("marketed")) | ((F.col("id") < ANCHORS) & (m == plan.last))
    contacts = int_between(uniform(h, 1, 4), 1, 4)
    spend = F.round(F.exp(normal_draw(h, 2, 3, 4) * 0.4) * 8.0 * contacts, 2)
    return F.when(marketed, spend).otherwise(F.lit(0.0)), contacts


def account_months(base: DataFrame, plan: Plan) -> DataFrame:
    """One row per account and month in which the account is open (within the window).

    Hash slices: h_am1 noise/volatility normals, two count uniforms; h_am2 count rounding,
    duplicate decision; h_mkt (and h_mkt_prev for the month before) marketing.
    """
    rng, last = plan.rng, plan.last
    idc, m, pat = F.col("id"), F.col("m"), F.col("pattern")
    first, last_open = F.col("first_idx"), F.col("last_idx")
    # sequence() counts down when start > stop: an account closed before the window has no rows.
    span = F.when(first <= last_open, F.sequence(first, last_open))
    hashed = base.select("*", F.explode(span).alias("m")).select(
        "*",
        rng.hash("am.1", idc, m).alias("h_am1"),
        rng.hash("am.2", idc, m).alias("h_am2"),
        rng.hash("mkt", idc, m).alias("h_mkt"),
        F.when(F.col("responsive") & (m > first), rng.hash("mkt", idc, m - 1))
        .alias("h_mkt_prev"),
    )
    h1, h2 = F.col("h_am1"), F.col("h_am2")
    # Activity factor: 1 = the account's usual level. Trends are centred 6 months before the
    # snapshot so the 12-month level stays close to the group's.
    centred = (m - (last - 6)) / 12.0
    factor = (
        F.when(pat == "growing", F.exp(F.col("rate") * centred))
        .when(pat == "declining", F.exp(-F.col("rate") * centred))
        .when(pat == "volatile", F.exp(normal_draw(h1, 0, 1, 4, sine=True) * 0.6 - 0.18))
        .when(pat == "new", F.lit(1.0) - F.exp((m - first + 1) / -1.5))
        .when((pat == "dormant") & (m >= F.col("dormant_from")), F.lit(0.25))
        .when((pat == "closed") & (m >= last_open - 1), F.lit(0.6))
        .otherwise(F.lit(1.0)))
    transacting = ~((pat == "dormant") & (m >= F.col("dormant_from")))
    spend, contacts = _spend(plan, F.col("h_mkt"), m)
    month = F.add_months(F.lit(plan.snapshot), m - last)
    close_day = F.when(m == last_open, F.dayofmonth("close_date"))
    stage = codegen_split(hashed, "am2").select(
        "*",
        month.alias("month"),
        factor.alias("factor"),
        F.exp(normal_draw(h1, 0, 1, 4) * 0.08).alias("noise"),
        F.when(transacting, F.col("freq") * plan.txn_per_month).otherwise(0.0).alias("lam"),
        spend.alias("spend"),
        contacts.alias("contacts"),
        F.coalesce(_spend(plan, F.col("h_mkt_prev"), m - 1)[0], F.lit(0.0)).alias("spend_prev"),
        close_day.alias("close_day"),
    )
    month_c, spend_prev = F.col("month"), F.col("spend_prev")
    # Transaction count: floor(lam * s + u) with s the mean of two uniforms times 2 (mean 1,
    # triangular), so the mean is lam and the spread is modest (frequency separates groups).
    lam = F.col("lam") * F.sqrt(F.col("factor"))
    n = F.floor(lam * (uniform(h1, 2, 4) + uniform(h1, 3, 4)) + uniform(h2, 0, 4)).cast("int")
    n = F.when((idc < ANCHORS) & (m == last), F.greatest(n, F.lit(1))).otherwise(n)
    n = F.least(n, F.lit(MAX_TXN_PER_MONTH))
    uplift = F.when(F.col("responsive"),
                    spend_prev / (spend_prev + RESPONSE_HALF) * RESPONSE_LIFT + 1.0)
    return codegen_split(stage, "am3").select(
        "*",
        n.alias("n"),
        F.coalesce(uplift, F.lit(1.0)).alias("uplift"),
        (F.year(month_c) * 100 + F.month(month_c)).cast("string").alias("yyyymm"),
        F.unix_seconds(month_c.cast("timestamp")).alias("month_s"),
        F.when(F.col("open_date") > month_c, F.dayofmonth("open_date")).otherwise(1)
        .alias("day_lo"),
        F.coalesce(F.col("close_day"), F.dayofmonth(F.last_day(month_c))).alias("day_hi"),
    )


def _line_balance(base_balance: Column, h: Column) -> Column:
    """Average balance of a held line in the current account-month (>= 0, 2 decimals)."""
    noise = F.exp(normal_draw(h, 0, 1, 4) * 0.05)
    return F.round(base_balance * F.col("factor") * F.col("noise") * noise, 2)


# --------------------------------------------------------------------------------------------
# Event and monthly tables
# --------------------------------------------------------------------------------------------


def transactions_table(am: DataFrame, plan: Plan) -> DataFrame:
    """One row per transaction; bad rows are damaged in place, duplicates doubled.

    Hash slices: h_t1 day, second, line, transfer?; h_t2 direction, favourite?, amount normals.
    """
    rng, n_acc = plan.rng, plan.accounts
    kinds = {k: i for i, k in enumerate(TXN_BAD_KINDS)}
    rows = _transaction_slots(am, plan, kinds)
    idc, m = F.col("id"), F.col("m")
    j, h1, h2, kind = F.col("j"), F.col("h_t1"), F.col("h_t2"), F.col("kind")
    seconds = _transaction_seconds(plan, kinds, h1)

    # Salary: the first transaction of the month of an employed account comes from the employer.
    salary = F.col("employer").isNotNull() & (j == 1)
    has_fav = F.col("fav").isNotNull()
    ind = plan.industry
    with_fav, without_fav = ind.transfer_share
    transfer = ~salary & (uniform(h1, 3, 4) < F.when(has_fav, F.lit(with_fav))
                          .otherwise(F.lit(without_fav)))
    other = F.pmod(idc + 1 + F.floor(uniform(rng.hash("txn.3", idc, m, j)) * (n_acc - 1))
                   .cast("long"), F.lit(n_acc))
    counterparty = (F.when(salary, F.col("employer"))
                    .when(transfer & has_fav & (uniform(h2, 1, 4) < 0.7), F.col("fav"))
                    .when(transfer, other))
    # Bank: 45 % of the other transactions are credits. Telecom: the employer's payments and
    # the balance transfers are the credits, every recharge or bill payment a debit.
    is_credit = (salary | (uniform(h2, 0, 4) < ind.credit_share) if ind.credit_share is not None
                 else salary | transfer)
    direction = F.when(is_credit, F.lit(plan.credit_label)).otherwise(F.lit(plan.debit_label))
    ticket = F.col("ticket") * F.sqrt(F.col("factor")) * F.exp(normal_draw(h2, 2, 3, 4) * 0.9)
    pay = F.col("salary") * F.exp(normal_draw(h2, 2, 3, 4, sine=True) * 0.03)
    amount = F.greatest(F.round(F.when(salary, pay).otherwise(ticket), 2), F.lit(0.01))
    pick = F.floor(uniform(h1, 2, 4) * F.col("n_held")).cast("int")
    line = F.col("line_at0")
    for k in range(1, plan.max_held):
        line = F.when(pick == k, F.col(f"line_at{k}")).otherwise(line)
    line = F.when(salary, F.col("line_at0")).otherwise(line)
    bad_amount = (F.when(kind == kinds["zero_amount"], F.lit(0.0))
                  .when(kind == kinds["negative_amount"], -amount)
                  .when(kind == kinds["nan_amount"], F.lit(float("nan")))
                  .when(kind == kinds["inf_amount"], F.lit(float("inf"))))
    cols = {
        "account_id": bad_key(plan, kinds, F.col("account_id")),
        "txn_id": F.concat(F.lit("T"), F.col("digits"), F.lit("-"), F.col("yyyymm"), F.lit("-"),
                           F.lpad(j.cast("string"), 3, "0")),
        "txn_ts": F.timestamp_seconds(seconds),
        "amount": F.coalesce(bad_amount, amount),
        "product_line": F.when(kind == kinds["unknown_product_line"],
                               F.concat(F.lit(plan.unknown_line_prefix), line)).otherwise(line),
        "direction": F.when(kind == kinds["unknown_direction"],
                            F.lit(plan.unknown_direction)).otherwise(direction),
        "counterparty_id": plan.good_id(counterparty),
    }
    return conform(rows, "transactions", cols)




def _transaction_slots(am: DataFrame, plan: Plan, kinds: dict[str, int]) -> DataFrame:
    """One row per transaction slot of each account-month (``j``), its hashes and its
    bad-row ``kind``; a duplicated account-month repeats its last slot."""
    rng, last = plan.rng, plan.last
    idc, m = F.col("id"), F.col("m")
    dup_kind = kinds["duplicate"]
    # A duplicated account-month emits its last transaction twice (slot n + 1 copies slot n).
    if plan.share > 0:
        dup = ((uniform(F.col("h_am2"), 1, 4) < F.col("n") * plan.share)
               | ((idc == dup_kind) & (m == last))).cast("int")
    else:
        dup = F.lit(0)
    slots = F.explode(F.sequence(F.lit(1), F.col("n") + dup)).alias("slot")
    rows = am.where(F.col("n") > 0).select("*", dup.alias("dup"), slots)
    j = F.least(F.col("slot"), F.col("n"))
    rows = rows.select(
        "*", j.alias("j"),
        rng.hash("txn.1", idc, m, j).alias("h_t1"),
        rng.hash("txn.2", idc, m, j).alias("h_t2"),
        *plan.kind_hash("bad.txn", idc, m, j),
    )
    j = F.col("j")
    is_dup = (F.col("dup") == 1) & (j == F.col("n"))
    kind = F.when(is_dup, F.lit(dup_kind)).otherwise(
        plan.row_kind(len(TXN_BAD_KINDS) - 1, (m == last) & (j == 1)))
    return codegen_split(rows.select("*", kind.alias("kind")), "txn")



def _transaction_seconds(plan: Plan, kinds: dict[str, int], h1: Column) -> Column:
    """The transaction's time in epoch seconds: 06:00..21:59 on a day between the open and
    the close date of the month; after the snapshot or before the data start for those bad
    kinds."""
    kind = F.col("kind")
    second = F.floor(uniform(h1, 1, 4) * 57_600).cast("long") + 21_600
    day = int_between(uniform(h1, 0, 4), F.col("day_lo"), F.col("day_hi"))
    good_s = F.col("month_s") + (day - 1).cast("long") * 86_400 + second
    after_s = (F.unix_seconds(F.lit(add_months(plan.snapshot, 1)).cast("timestamp"))
               + F.floor(uniform(h1, 0, 4) * 28).cast("long") * 86_400 + second)
    before_day = F.date_sub(F.lit(plan.data_start), int_between(uniform(h1, 0, 4), 1, 365))
    before_s = F.unix_seconds(before_day.cast("timestamp")) + second
    return (F.when(kind == kinds["after_snapshot"], after_s)
            .when(kind == kinds["before_start"], before_s).otherwise(good_s))



def monthly_product_table(am: DataFrame, plan: Plan) -> DataFrame:
    """One row per account x month x held product line; bad rows replace good ones in place."""
    rng, last = plan.rng, plan.last
    idc, m = F.col("id"), F.col("m")
    kinds = {k: i for i, k in enumerate(MONTHLY_BAD_KINDS)}
    balances = F.array(*[F.col(f"bal{i}") for i in range(len(plan.lines))])
    rows = (am.select("*", F.posexplode(balances).alias("i", "base_bal"))
            .where(F.col("base_bal").isNotNull()))
    i = F.col("i")
    rows = rows.select("*", rng.hash("mp", idc, m, i).alias("h_mp"),
                       *plan.kind_hash("bad.monthly", idc, m, i))
    kind = plan.row_kind(len(MONTHLY_BAD_KINDS), (m == last) & (i == F.col("first_line")))
    balance = _line_balance(F.col("base_bal"), F.col("h_mp"))
    rows = codegen_split(rows.select("*", kind.alias("kind"), balance.alias("balance")), "monthly")
    kind, balance = F.col("kind"), F.col("balance")
    income_rate = lookup_at([p.income_rate / 12 for p in plan.profiles], i)
    cost_rate = lookup_at([p.cost_rate / 12 for p in plan.profiles], i)
    fixed = lookup_at([p.fixed_cost for p in plan.profiles], i)
    noise = F.exp(normal_draw(F.col("h_mp"), 0, 1, 4, sine=True) * 0.1)
    income = F.round(balance * income_rate * F.col("uplift") * noise, 2)
    name = lookup_at(plan.lines, i)
    month = F.col("month")
    cols = {
        "account_id": bad_key(plan, kinds, F.col("account_id")),
        "month": F.when(kind == kinds["month_not_start"], F.date_add(month, 14))
        .when(kind == kinds["after_snapshot"], F.lit(add_months(plan.snapshot, 1)))
        .otherwise(month),
        "product_line": F.when(kind == kinds["unknown_product_line"],
                               F.concat(F.lit(plan.unknown_line_prefix), name)).otherwise(name),
        "avg_balance": F.when(kind == kinds["negative_balance"], -balance - 1.0)
        .otherwise(balance),
        "income": F.when(kind == kinds["inf_income"], F.lit(float("inf"))).otherwise(income),
        "cost": F.round(balance * cost_rate + fixed, 2),
    }
    return conform(rows, "monthly_product", cols)


def marketing_table(am: DataFrame, plan: Plan) -> DataFrame:
    """One row per marketed account-month; bad rows replace good ones in place."""
    idc, m = F.col("id"), F.col("m")
    kinds = {k: i for i, k in enumerate(MARKETING_BAD_KINDS)}
    rows = am.where(F.col("spend") > 0).select("*", *plan.kind_hash("bad.marketing", idc, m))
    rows = rows.select("*", plan.row_kind(len(MARKETING_BAD_KINDS), m == plan.last)
                       .alias("kind"))
    kind, month, spend = F.col("kind"), F.col("month"), F.col("spend")
    months_back = int_between(uniform(F.col("h_mkt"), 1, 4), 1, 12)
    cols = {
        "account_id": bad_key(plan, kinds, F.col("account_id")),
        "month": F.when(kind == kinds["month_not_start"], F.date_add(month, 14))
        .when(kind == kinds["before_start"],
              F.add_months(F.lit(plan.data_start.replace(day=1)), -months_back))
        .otherwise(month),
        "spend": F.when(kind == kinds["negative_spend"], -spend)
        .when(kind == kinds["nan_spend"], F.lit(float("nan"))).otherwise(spend),
        "contacts": F.when(kind == kinds["negative_contacts"], -F.col("contacts"))
        .otherwise(F.col("contacts")),
    }
    return conform(rows, "marketing", cols)


def credit_table(am: DataFrame, plan: Plan) -> DataFrame:
    """One row per account-month holding a credit line (bank: loan/card; telecom: voice or
    device_instalment, postpaid subscribers only); bad rows in place."""
    kinds = {k: i for i, k in enumerate(CREDIT_BAD_KINDS)}
    tariffs = plan.industry.tariffs is not None
    if not plan.credit_indexes:
        names = schemas.CREDIT.columns if tariffs else schemas.CREDIT.required
        return conform(am.where(F.lit(False)), "credit", {n: F.lit(None) for n in names})
    rows = _credit_rows(am, plan, kinds)
    dpd, kind, used = F.col("dpd"), F.col("kind"), F.col("used")
    overdue = F.when(dpd > 0, F.round(used * F.least(dpd / 200.0 + 0.03, F.lit(1.0)), 2))
    overdue = overdue.otherwise(F.lit(0.0))
    month = F.col("month")
    negative_dpd = kind == kinds["negative_days_past_due"]
    cols = {
        "account_id": bad_key(plan, kinds, F.col("account_id")),
        "month": F.when(kind == kinds["month_not_start"], F.date_add(month, 14))
        .when(kind == kinds["after_snapshot"], F.lit(add_months(plan.snapshot, 1)))
        .otherwise(month),
        "days_past_due": F.when(negative_dpd, -dpd - 1).otherwise(dpd),
        "overdue_amount": F.when(kind == kinds["negative_overdue"], -overdue - 1.0)
        .otherwise(overdue),
        "credit_limit": F.col("limit"),
        "utilisation": F.when(kind == kinds["inf_utilisation"], F.lit(float("inf")))
        .otherwise(F.col("utilisation")),
        **(credit_columns(plan, dpd, negative_dpd) if tariffs else {}),
    }
    return conform(rows, "credit", cols)


def _credit_rows(am: DataFrame, plan: Plan, kinds: dict[str, int]) -> DataFrame:
    """The account-months with a credit row: credit balance ``used``, ``limit``,
    ``utilisation``, days past due ``dpd`` and the bad-row ``kind``.

    Hash slices of h_cr: stress, late?, bucket, days within the bucket.
    """
    rng, last, ind = plan.rng, plan.last, plan.industry
    idc, m = F.col("id"), F.col("m")
    credit = plan.credit_indexes
    # The same balances as the credit lines' rows of monthly_product (same hash keys).
    used = sum((F.coalesce(_line_balance(F.col(f"bal{i}"), rng.hash("mp", idc, m, F.lit(i))),
                           F.lit(0.0)) for i in credit), F.lit(0.0))
    limit = sum((F.coalesce(F.col(f"bal{i}") * plan.profiles[i].limit_multiple, F.lit(0.0))
                 for i in credit), F.lit(0.0))
    holds = F.lit(False)
    for i in credit:
        holds = holds | F.col(f"bal{i}").isNotNull()
    rows = am.where(holds)
    if ind.tariffs:
        rows = rows.where(billed_on_credit())
    rows = codegen_split(rows, "credit1").select(
        "*", used.alias("used"),
        F.greatest(F.round(limit, ind.limit_digits), F.lit(ind.min_limit)).alias("limit"),
        rng.hash("credit", idc, m).alias("h_cr"), *plan.kind_hash("bad.credit", idc, m))
    used, limit, h = F.col("used"), F.col("limit"), F.col("h_cr")
    risky = F.col("risky")
    # Delinquency-prone accounts run higher utilisation and miss payments more often, the more
    # so towards the snapshot when their income declines.
    stress = F.when(risky, uniform(h, 0, 4) * 0.3 + 1.25).otherwise(1.0)
    utilisation = F.least(F.greatest(F.round(used / limit * stress, 4), F.lit(0.0)),
                          F.lit(1.5))
    p_late = F.when(risky & (F.col("pattern") == "declining"), m / max(last, 1) * 0.4 + 0.2)
    p_late = p_late.when(risky, F.lit(0.3)).otherwise(F.lit(0.015))
    bucket, within = uniform(h, 2, 4), uniform(h, 3, 4)
    dpd = (F.when(~risky, int_between(within, 1, 14))
           .when(bucket < 0.4, int_between(within, 1, 29))
           .when(bucket < 0.7, int_between(within, 30, 59))
           .when(bucket < 0.85, int_between(within, 60, 89))
           .otherwise(int_between(within, 90, 179)))
    dpd = F.when(uniform(h, 1, 4) < p_late, dpd).otherwise(F.lit(0))
    kind = plan.row_kind(len(CREDIT_BAD_KINDS), m == last)
    return codegen_split(rows.select("*", dpd.alias("dpd"), utilisation.alias("utilisation"),
                                     kind.alias("kind")), "credit2")

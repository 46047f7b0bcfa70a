"""Accounts: one row per account with every hidden parameter the other tables derive from,
the ``accounts`` table and the ``relations`` table.
"""

from __future__ import annotations

import datetime
import logging

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_generate.draws import (
    int_between,
    normal_draw,
    per_key,
    pick_by_share,
    uniform,
    uniform_open,
)
from cvm_generate.plan import Plan, bad_key, codegen_split, conform
from cvm_generate.profile import (
    ACCOUNT_BAD_KINDS,
    ANCHORS,
    ENTERPRISE_AT,
    ENTERPRISE_EVERY,
    GROUPS,
    PATTERN_RISK,
    PATTERN_SHARES,
    PATTERNS,
    PLANTED_GROUP,
    PLANTED_PATTERN,
    REGION_SHARES,
    REGIONS,
    RELATION_BAD_KINDS,
    RESPONSIVE_SHARE,
)
from cvm_generate.telecom import account_columns, with_tariff
from cvm_spark.common.months import add_months

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Accounts (hidden per-account parameters)
# --------------------------------------------------------------------------------------------


def account_base(spark: SparkSession, plan: Plan) -> DataFrame:
    """One row per account with every hidden parameter the other tables derive from.

    Hash slices (4 x 16 bits unless noted): h_a group, pattern, region, channel; h_b
    responsive, risky, rate, line count; h_c level/frequency normals, employer?, favourite?;
    h_d ticket/salary normals, dormant_for, closed_ago; h_e open offset, new-account offset,
    open day, close day; h_f acquisition-cost normal, cost known?, age; h_which (2 x 32 bits)
    employer, favourite; h_pair family pair; h_line<i> (3 x 21 bits) draw key, balance normal.
    The telecom profile adds the tariff columns (:func:`cvm_generate.telecom.with_tariff`).
    """
    stage1 = _base_identity(spark, plan)
    stage2 = _base_behaviour(codegen_split(stage1, "base2"), plan)
    stage3 = _base_dates_and_lines(codegen_split(stage2, "base3"), plan)
    base = _base_balances(codegen_split(stage3, "base4"), plan)
    return with_tariff(base, plan) if plan.industry.tariffs else base


def _h(name: str) -> Column:
    """The hash column ``h_<name>`` of the account (see :func:`account_base`)."""
    return F.col(f"h_{name}")


def _base_identity(spark: SparkSession, plan: Plan) -> DataFrame:
    """The account ids, hashes, customer type, group, pattern, region, channel, family,
    employer, frequent counterparty and responsiveness."""
    rng, n, ind = plan.rng, plan.accounts, plan.industry
    n_lines = len(plan.lines)
    idc = F.col("id")
    partner = F.pmod(F.lit(plan.family_sum) - idc, F.lit(n))
    hashed = spark.range(0, n, 1, plan.partitions).select(
        idc,
        partner.alias("partner"),
        *[rng.hash(f"acct.{x}", idc).alias(f"h_{x}") for x in "abcdef"],
        rng.hash("acct.which", idc).alias("h_which"),
        rng.hash("acct.pair", F.least(idc, partner)).alias("h_pair"),
        *[rng.hash(f"acct.line.{i}", idc).alias(f"h_line{i}") for i in range(n_lines)],
    )

    is_ent = idc % ENTERPRISE_EVERY == ENTERPRISE_AT
    partner_c = F.col("partner")
    partner_individual = partner_c % ENTERPRISE_EVERY != ENTERPRISE_AT
    is_family = ((partner_c != idc) & ~is_ent & partner_individual
                 & (uniform(_h("pair"), 0, 4) < 0.3))
    if plan.enterprises:
        employer = (F.floor(uniform(_h("which"), 0, 2) * plan.enterprises) * ENTERPRISE_EVERY
                    + ENTERPRISE_AT).cast("long")
        employer = F.when(~is_ent & (uniform(_h("c"), 2, 4) < 0.3), employer)
    else:
        employer = F.lit(None).cast("long")
    # Any account but this one: id + 1 + r (mod n) with r in [0, n - 2].
    favourite = F.pmod(idc + 1 + F.floor(uniform(_h("which"), 1, 2) * (n - 1)).cast("long"),
                       F.lit(n))
    ind_shares = [ind.groups[g].share_individual for g in GROUPS]
    ent_shares = [ind.groups[g].share_enterprise for g in GROUPS]
    pattern = F.when(idc < ANCHORS, F.lit("stable")).otherwise(
        pick_by_share(uniform(_h("a"), 1, 4), PATTERNS, [PATTERN_SHARES[p] for p in PATTERNS]))
    return hashed.select(
        "*",
        plan.good_id(idc).alias("account_id"),
        F.lpad((idc + 1).cast("string"), plan.id_width, "0").alias("digits"),
        F.when(is_ent, F.lit(ind.customer_types[1])).otherwise(F.lit(ind.customer_types[0]))
        .alias("customer_type"),
        F.when(is_ent, pick_by_share(uniform(_h("a"), 0, 4), GROUPS, ent_shares))
        .otherwise(pick_by_share(uniform(_h("a"), 0, 4), GROUPS, ind_shares)).alias("group"),
        pattern.alias("pattern"),
        pick_by_share(uniform(_h("a"), 2, 4), REGIONS, REGION_SHARES).alias("region"),
        pick_by_share(uniform(_h("a"), 3, 4), ind.channels, ind.channel_shares)
        .alias("channel"),
        F.when(is_family, partner_c).alias("family"),
        employer.alias("employer"),
        # Frequent counterparty: the family partner, else a favourite account for 15%.
        F.when(is_family, partner_c).when(uniform(_h("c"), 3, 4) < 0.15, favourite).alias("fav"),
        (uniform(_h("b"), 0, 4) < RESPONSIVE_SHARE).alias("responsive"),
    )


def _base_behaviour(stage1: DataFrame, plan: Plan) -> DataFrame:
    """Open offset, dormancy and closure, balance level, frequency, ticket, salary, risk,
    growth rate, the number of product lines held and each line's sampling key."""
    idc, last, n_lines = F.col("id"), plan.last, len(plan.lines)
    group, pat = F.col("group"), F.col("pattern")
    groups = plan.industry.groups

    def per_group(field: str) -> Column:
        return per_key(group, {g: getattr(p, field) for g, p in groups.items()})

    # Months before the snapshot month: dormant accounts stop transacting `dormant_for`
    # months before the end, closed ones close `closed_ago` months before it.
    dormant_for = int_between(uniform(_h("d"), 2, 4), 6, 14)
    closed_ago = int_between(uniform(_h("d"), 3, 4), 1, max(1, min(15, last)))
    min_offset = (F.when(idc < ANCHORS, F.lit(plan.months))
                  .when(pat == "dormant", dormant_for + 6)
                  .when(pat == "closed", closed_ago + 3)
                  .otherwise(F.lit(6)))
    exp_months = F.floor(F.log(uniform_open(_h("e"), 0, 4)) * -66.0).cast("int")
    offset_old = F.least(F.lit(plan.max_open_offset), min_offset + exp_months)
    offset_new = int_between(uniform(_h("e"), 1, 4), 0, min(5, plan.max_open_offset))
    risk = per_group("risk") + per_key(pat, PATTERN_RISK)
    line_keys = []
    credit = plan.credit_indexes
    for i, prof in enumerate(plan.profiles):
        key = F.log(uniform_open(_h(f"line{i}"), 0, 3)) * (-1.0 / prof.weight)
        if credit and i == credit[0]:
            key = F.when(idc < ANCHORS, F.lit(-1.0)).otherwise(key)  # anchors hold credit
        line_keys.append(key.alias(f"key{i}"))
    fewest = per_key(group, {g: p.lines[0] for g, p in groups.items()})
    most = per_key(group, {g: p.lines[1] for g, p in groups.items()})
    count = F.least(int_between(uniform(_h("b"), 3, 4), fewest, most), F.lit(n_lines))
    return stage1.select(
        "*",
        F.when(pat == "new", offset_new).otherwise(offset_old).alias("open_offset"),
        F.when(pat == "closed", closed_ago).alias("closed_ago"),
        F.when(pat == "dormant", F.lit(plan.months) - dormant_for).alias("dormant_from"),
        (F.exp(normal_draw(_h("c"), 0, 1, 4) * 0.15) * per_group("balance")).alias("level"),
        (F.exp(normal_draw(_h("c"), 0, 1, 4, sine=True) * 0.12) * per_group("frequency"))
        .alias("freq"),
        (F.exp(normal_draw(_h("d"), 0, 1, 4) * 0.3) * per_group("ticket")).alias("ticket"),
        (F.exp(normal_draw(_h("d"), 0, 1, 4, sine=True) * 0.25) * per_group("salary"))
        .alias("salary"),
        per_group("marketed").alias("marketed"),
        (uniform(_h("b"), 1, 4) < risk).alias("risky"),
        # Growth (growing) or decline (declining) rate per year.
        (uniform(_h("b"), 2, 4) * 0.6 + 0.4).alias("rate"),
        count.alias("n_held"),
        *line_keys,
    )


def _base_dates_and_lines(stage2: DataFrame, plan: Plan) -> DataFrame:
    """Open and close dates, the first and last month index, and which lines are held."""
    last, n_lines = plan.last, len(plan.lines)
    # Weighted sampling without replacement: the n_held smallest keys are held.
    keys = [F.col(f"key{i}") for i in range(n_lines)]
    held = []
    for i in range(n_lines):
        rank = sum((((keys[j] < keys[i]) | ((keys[j] == keys[i]) & F.lit(j < i))).cast("int")
                    for j in range(n_lines) if j != i), F.lit(0))
        held.append((rank < F.col("n_held")).alias(f"held{i}"))
    open_month = F.add_months(F.lit(plan.snapshot), -F.col("open_offset"))
    close_month = F.add_months(F.lit(plan.snapshot), -F.col("closed_ago"))
    return stage2.select(
        "*",
        F.date_add(open_month, int_between(uniform(_h("e"), 2, 4), 0,
                                        F.dayofmonth(F.last_day(open_month)) - 1))
        .alias("open_date"),
        F.date_add(close_month, int_between(uniform(_h("e"), 3, 4), 0,
                                         F.dayofmonth(F.last_day(close_month)) - 1))
        .alias("close_date"),  # null unless closed
        F.greatest(F.lit(0), F.lit(last) - F.col("open_offset")).alias("first_idx"),
        F.coalesce(F.lit(last) - F.col("closed_ago"), F.lit(last)).alias("last_idx"),
        *held,
    )


def _base_balances(stage3: DataFrame, plan: Plan) -> DataFrame:
    """Each held line's balance, the held lines in config order and the first held line."""
    n_lines = len(plan.lines)
    held_c = [F.col(f"held{i}") for i in range(n_lines)]
    balances = [F.when(held_c[i], F.col("level") * prof.share
                       * F.exp(normal_draw(_h(f"line{i}"), 1, 2, 3) * 0.1)).alias(f"bal{i}")
                for i, prof in enumerate(plan.profiles)]
    # line_at<k>: the k-th held line in config order (transactions pick among them).
    line_at = []
    for k in range(plan.max_held):
        out = None
        for i, name in enumerate(plan.lines):
            # lines held before line i; none before the first (a literal 0 == k would be a
            # trivially true predicate, which Spark warns about)
            before = sum((held_c[j].cast("int") for j in range(1, i)), held_c[0].cast("int"))
            cond = held_c[i] & ((before == k) if i else F.lit(k == 0))
            out = F.when(cond, F.lit(name)) if out is None else out.when(cond, F.lit(name))
        line_at.append(out.alias(f"line_at{k}"))
    first_line = None
    for i in range(n_lines):
        first_line = (F.when(held_c[i], F.lit(i)) if first_line is None
                      else first_line.when(held_c[i], F.lit(i)))
    return stage3.select("*", *balances, *line_at, first_line.alias("first_line"))




def accounts_table(base: DataFrame, plan: Plan) -> DataFrame:
    """accounts + planted_group/planted_pattern; bad rows are appended copies."""
    idc = F.col("id")
    kinds = {k: i for i, k in enumerate(ACCOUNT_BAD_KINDS)}
    picks = [F.when(cond, F.lit(k)) for k, cond in
             enumerate(plan.appended("bad.accounts", len(ACCOUNT_BAD_KINDS), 1.0))]
    rows = (base.select("*", F.explode(F.array(F.lit(-1), *picks)).alias("kind"),
                        *plan.kind_hash("bad.accounts.blank", idc))
            .where(F.col("kind").isNotNull()))
    kind = F.col("kind")
    h_f = F.col("h_f")
    ind = plan.industry
    is_ent = F.col("customer_type") == ind.customer_types[1]
    cac_median = per_key(F.col("channel"), dict(zip(ind.channels, ind.channel_cac, strict=True)))
    cac = F.round(F.exp(normal_draw(h_f, 0, 1, 4) * 0.4) * cac_median, 2)
    # Old records and ~15% of the rest have no acquisition cost on file.
    cac_known = ((F.col("open_date") >= F.lit(datetime.date(2012, 1, 1)))
                 & (uniform(h_f, 2, 4) >= 0.15))
    fresh = kind.isin(kinds["open_before_start"], kinds["open_after_snapshot"])
    days_back = int_between(uniform(F.col("h_e"), 1, 4), 1, 3650)
    days_after = int_between(uniform(F.col("h_e"), 1, 4), 0, 27)
    open_date = (
        F.when(kind == kinds["open_before_start"], F.date_sub(F.lit(plan.data_start), days_back))
        .when(kind == kinds["open_after_snapshot"],
              F.date_add(F.lit(add_months(plan.snapshot, 1)), days_after))
        .otherwise(F.col("open_date")))
    cols = {
        "account_id": bad_key(plan, kinds, F.when(fresh, plan.fresh_id(idc))
                           .otherwise(F.col("account_id"))),
        "open_date": open_date,
        "close_date": F.when(~fresh, F.col("close_date")),
        "customer_type": F.col("customer_type"),
        "region": F.col("region"),
        "birth_year": F.when(~is_ent, F.lit(plan.snapshot.year)
                             - int_between(uniform(h_f, 3, 4), 18, 85)),
        "acquisition_channel": F.col("channel"),
        "acquisition_cost": F.when(cac_known, cac),
        **(account_columns() if ind.tariffs else {}),
    }
    return conform(rows, "accounts", cols,
                    F.col("group").alias(PLANTED_GROUP), F.col("pattern").alias(PLANTED_PATTERN))


def relations_table(base: DataFrame, plan: Plan) -> DataFrame:
    """Family pairs (once per pair) and employee -> employer links; bad rows appended."""
    n = plan.accounts
    idc, family = F.col("id"), F.col("family")
    kinds = {k: i for i, k in enumerate(RELATION_BAD_KINDS)}
    flip = uniform(F.col("h_pair"), 1, 4) < 0.5  # store the pair in either order

    def entry(a: Column, b: Column, relation: str, kind: int) -> Column:
        return F.struct(a.cast("long").alias("a"), b.cast("long").alias("b"),
                        F.lit(relation).alias("relation"), F.lit(kind).alias("kind"))

    # A typed null keeps the array's type when no relation type is configured.
    entries = [F.lit(None).cast("struct<a:bigint,b:bigint,relation:string,kind:int>")]
    if plan.family_label:
        pair = entry(F.when(flip, family).otherwise(idc), F.when(flip, idc).otherwise(family),
                     plan.family_label, -1)
        entries.append(F.when(family.isNotNull() & (idc < family), pair))
    if plan.employer_label:
        entries.append(F.when(F.col("employer").isNotNull(),
                              entry(idc, F.col("employer"), plan.employer_label, -1)))
    # Bad rows point at the next account; every kind changes the key, so none collides with
    # a good row. rate = relation rows per account, so each kind is ~share of the table.
    bad = plan.appended("bad.relations", len(RELATION_BAD_KINDS), 0.45)
    entries += [F.when(cond, entry(idc, F.pmod(idc + 1, F.lit(n)), plan.template_label, k))
                for k, cond in enumerate(bad)]
    rows = (base.select("*", F.explode(F.array(*entries)).alias("r"),
                        *plan.kind_hash("bad.relations.blank", idc))
            .where(F.col("r").isNotNull()))
    rows = rows.select("*", F.col("r.kind").alias("kind"))
    a, b, kind = F.col("r.a"), F.col("r.b"), F.col("kind")
    cols = {
        "account_id": bad_key(plan, kinds, plan.good_id(a)),
        "related_account_id": F.when(kind == kinds["self_relation"], plan.good_id(a))
        .when(kind == kinds["orphan_related"], plan.orphan_id(idc))
        .otherwise(plan.good_id(b)),
        "relation": F.when(kind == kinds["unknown_relation"], F.lit(plan.unknown_relation))
        .otherwise(F.col("r.relation")),
    }
    return conform(rows, "relations", cols)

"""Seeded synthetic bank data: the six input tables of the data contract, built on Spark.

Every value is a pure function of ``(generator.seed, ids, a per-use salt)``: uniforms come from
bit slices of ``xxhash64`` and are shaped by inverse-CDF transforms (exponential, lognormal by
Box-Muller, counts by rounding a sum of uniforms). Nothing depends on partitioning, the clock or
Python's ``random``, so the same config and snapshot give the same rows on any cluster. The
plan starts from ``spark.range(accounts)`` and fans out with ``sequence`` + ``explode``
(months, product lines, transactions): no shuffle, nothing collected to the driver, no Python
UDFs and no higher-order functions (they are interpreted, not compiled).

What is planted (value groups, lifecycle patterns, marketing response, delinquency, relations,
frequent counterparties) and every bad-row kind with the reason code it should get are
described in ``docs/generator.md``.
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from cvm_spark.common.months import add_months, months_between
from cvm_spark.config import CvmConfig, GeneratorConfig, ValidationConfig
from cvm_spark.schemas import inputs as schemas

log = logging.getLogger(__name__)

# Ground-truth columns carried by the accounts table (extra columns are allowed by the contract).
PLANTED_GROUP = "planted_group"
PLANTED_PATTERN = "planted_pattern"

GROUPS = ("high", "medium", "low")
PATTERNS = ("new", "growing", "stable", "volatile", "declining", "dormant", "closed")
CUSTOMER_TYPES = ("individual", "enterprise")
REGIONS = ("north", "south", "east", "west", "central")
CHANNELS = ("branch", "online", "partner", "campaign")

_TAU = 2.0 * math.pi

# Accounts 0.._ANCHORS-1 are forced to be stable, open before the window, holding a credit
# line, marketed and transacting in the snapshot month, so that account k can carry bad-row
# kind k of every table (at least one row of each kind whenever bad_row_share > 0).
_ANCHORS = 12
# Every 40th account (ids 20, 60, 100, ...) is an enterprise: employers are found by
# arithmetic instead of a join.
_ENTERPRISE_EVERY = 40
_ENTERPRISE_AT = 20
_MAX_TXN_PER_MONTH = 999


@dataclass(frozen=True)
class _Group:
    """Parameters of one planted value/behaviour group."""

    share_individual: float  # share of individual accounts in the group
    share_enterprise: float  # share of enterprise accounts in the group
    balance: float  # median of the account balance level
    frequency: float  # multiple of txn_per_month
    ticket: float  # median transaction amount
    salary: float  # median monthly salary for employed accounts
    lines: tuple[int, int]  # product lines held (inclusive range)
    risk: float  # probability of being a delinquency-prone account
    marketed: float  # probability of marketing activity in a month


_GROUP_PARAMS: dict[str, _Group] = {
    "high": _Group(0.05, 0.40, 300_000.0, 3.6, 400.0, 12_000.0, (3, 4), 0.02, 0.25),
    "medium": _Group(0.25, 0.40, 30_000.0, 1.9, 120.0, 4_500.0, (2, 3), 0.05, 0.15),
    "low": _Group(0.70, 0.20, 3_000.0, 0.5, 40.0, 1_800.0, (1, 2), 0.18, 0.08),
}

_PATTERN_SHARES = {"new": 0.08, "growing": 0.12, "stable": 0.38, "volatile": 0.12,
                   "declining": 0.12, "dormant": 0.09, "closed": 0.09}
# Added to the group's delinquency probability.
_PATTERN_RISK = {"new": 0.03, "growing": 0.0, "stable": 0.0, "volatile": 0.08,
                 "declining": 0.20, "dormant": 0.05, "closed": 0.10}
_REGION_SHARES = (0.22, 0.22, 0.20, 0.16, 0.20)
_CHANNEL_SHARES = (0.35, 0.30, 0.15, 0.20)
_CHANNEL_CAC = (120.0, 35.0, 80.0, 150.0)  # median acquisition cost per channel


@dataclass(frozen=True)
class _Line:
    """Economics of one product line (monthly_product and credit rows)."""

    weight: float  # how likely the line is to be held (weighted sampling without replacement)
    share: float  # balance of the line as a share of the account's balance level
    income_rate: float  # yearly income / balance
    cost_rate: float  # yearly variable cost / balance
    fixed_cost: float  # monthly servicing cost
    limit_multiple: float | None  # credit limit / base balance; None = no credit facility


_LINE_PROFILES: dict[str, _Line] = {
    "demand_deposit": _Line(20.0, 0.35, 0.020, 0.004, 1.0, None),
    "time_deposit": _Line(3.0, 0.40, 0.015, 0.002, 0.5, None),
    "loan": _Line(2.5, 0.50, 0.035, 0.010, 2.0, 1.3),
    "wealth": _Line(2.0, 0.50, 0.015, 0.002, 0.5, None),
    "card": _Line(3.0, 0.06, 0.150, 0.030, 1.5, 3.0),
    "fee_other": _Line(2.0, 0.02, 0.300, 0.050, 0.3, None),
}
_DEFAULT_LINE = _Line(2.0, 0.10, 0.020, 0.005, 0.5, None)

# Marketing: spend raises next month's income of responsive accounts by
# RESPONSE_LIFT * spend / (spend + RESPONSE_HALF).
_RESPONSIVE_SHARE = 0.35
_RESPONSE_LIFT = 0.6
_RESPONSE_HALF = 30.0

# Bad-row kinds per table, in order; kind k of a table is also planted on anchor account k.
# Mapping to reason codes is documented in docs/generator.md (and BAD_ROW_REASONS below).
ACCOUNT_BAD_KINDS = ("null_key", "blank_key", "open_before_start", "open_after_snapshot")
TXN_BAD_KINDS = ("null_key", "blank_key", "zero_amount", "negative_amount", "nan_amount",
                 "inf_amount", "after_snapshot", "before_start", "unknown_product_line",
                 "unknown_direction", "orphan_account", "duplicate")
MONTHLY_BAD_KINDS = ("null_key", "blank_key", "unknown_product_line", "orphan_account",
                     "month_not_start", "after_snapshot", "negative_balance", "inf_income")
MARKETING_BAD_KINDS = ("null_key", "blank_key", "orphan_account", "month_not_start",
                       "before_start", "negative_spend", "negative_contacts", "nan_spend")
CREDIT_BAD_KINDS = ("null_key", "blank_key", "orphan_account", "month_not_start",
                    "after_snapshot", "negative_days_past_due", "negative_overdue",
                    "inf_utilisation")
RELATION_BAD_KINDS = ("null_key", "blank_key", "self_relation", "orphan_related",
                      "orphan_account", "unknown_relation")

BAD_KINDS: dict[str, tuple[str, ...]] = {
    "accounts": ACCOUNT_BAD_KINDS,
    "transactions": TXN_BAD_KINDS,
    "monthly_product": MONTHLY_BAD_KINDS,
    "marketing": MARKETING_BAD_KINDS,
    "credit": CREDIT_BAD_KINDS,
    "relations": RELATION_BAD_KINDS,
}

# The quarantine reason (schemas.REASONS) each bad-row kind should receive.
BAD_ROW_REASONS: dict[str, str] = {
    "null_key": "null_key",
    "blank_key": "null_key",
    "open_before_start": "date_out_of_window",
    "open_after_snapshot": "date_out_of_window",
    "zero_amount": "non_positive_amount",
    "negative_amount": "non_positive_amount",
    "nan_amount": "non_finite_value",
    "inf_amount": "non_finite_value",
    "after_snapshot": "date_out_of_window",
    "before_start": "date_out_of_window",
    "unknown_product_line": "unknown_product_line",
    "unknown_direction": "unknown_category",
    "unknown_relation": "unknown_category",
    "orphan_account": "orphan_account",
    "orphan_related": "orphan_account",
    "duplicate": "duplicate_event",
    "month_not_start": "month_not_month_start",
    "negative_balance": "negative_value",
    "negative_spend": "negative_value",
    "negative_contacts": "negative_value",
    "negative_days_past_due": "negative_value",
    "negative_overdue": "negative_value",
    "inf_income": "non_finite_value",
    "nan_spend": "non_finite_value",
    "inf_utilisation": "non_finite_value",
    "self_relation": "self_relation",
}


# --------------------------------------------------------------------------------------------
# Random numbers from hashes
# --------------------------------------------------------------------------------------------
# One xxhash64 gives 64 bits; a hash column is computed once per row in its own select and then
# sliced into up to four independent uniforms. Fewer hash calls keep the generated code small
# enough for the JIT, which is most of the generator's speed.


@dataclass(frozen=True)
class _Rng:
    """Counter-based random numbers: every draw is a hash of (seed, salt, key columns)."""

    seed: int

    def hash(self, salt: str, *keys: Column) -> Column:
        """64 random bits per row; slice them with :func:`_u`, :func:`_normal`."""
        return F.xxhash64(F.lit(self.seed), F.lit(salt), *keys)


def _u(h: Column, part: int = 0, parts: int = 1) -> Column:
    """Uniform on [0, 1) from slice ``part`` of ``parts`` equal bit slices of the hash ``h``."""
    width = 64 // parts
    bits = min(47, width)
    shifted = F.shiftright(h, part * width) if part else h
    return shifted.bitwiseAND(F.lit((1 << bits) - 1)) / float(1 << bits)


def _u_open(h: Column, part: int = 0, parts: int = 1) -> Column:
    """Uniform on (0, 1), safe for ``log``."""
    return _u(h, part, parts) + 0.5 / float(1 << min(47, 64 // parts))


def _normal(h: Column, part_r: int, part_a: int, parts: int, sine: bool = False) -> Column:
    """Standard normal by Box-Muller; the cosine and sine variants are independent draws."""
    radius = F.sqrt(F.log(_u_open(h, part_r, parts)) * -2.0)
    angle = _u(h, part_a, parts) * _TAU
    return radius * (F.sin(angle) if sine else F.cos(angle))


def _between(u: Column, low: Column | int, high: Column | int) -> Column:
    """Uniform integer in ``[low, high]`` from a uniform ``u``."""
    return (F.floor(u * (high - low + 1)) + low).cast("int")


def _pick(u: Column, values: Sequence[str], shares: Sequence[float]) -> Column:
    """Categorical draw: the value whose cumulative share first exceeds ``u``."""
    total = float(sum(shares))
    out, acc = None, 0.0
    for value, share in zip(values[:-1], shares[:-1], strict=True):
        acc += share / total
        out = (F.when(u < acc, F.lit(value)) if out is None
               else out.when(u < acc, F.lit(value)))
    last = F.lit(values[-1])
    return last if out is None else out.otherwise(last)


def _by(key: Column, mapping: dict[str, float | int]) -> Column:
    """Look a per-category constant up (CASE over the category column)."""
    out = None
    for name, value in mapping.items():
        out = (F.when(key == name, F.lit(value)) if out is None
               else out.when(key == name, F.lit(value)))
    assert out is not None
    return out


def _lookup(values: Sequence[float | str], index: Column) -> Column:
    """Constant array lookup by a 0-based index column (product-line constants)."""
    return F.element_at(F.array(*[F.lit(v) for v in values]), index + 1)


def _not_in(candidate: str, taken: Sequence[str]) -> str:
    """``candidate``, suffixed with ``_x`` until it is not one of ``taken``."""
    while candidate in taken:
        candidate += "_x"
    return candidate


def _unknown_prefix(lines: Sequence[str]) -> str:
    """A prefix that turns every configured product line into an unknown one."""
    prefix = "retired_"
    while any(prefix + line in lines for line in lines):
        prefix = "x" + prefix
    return prefix


# --------------------------------------------------------------------------------------------
# Parameters derived once from the config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Everything the column builders need, computed on the driver from the config."""

    rng: _Rng
    accounts: int
    months: int  # generated months ending at the snapshot month
    partitions: int
    snapshot: datetime.date  # first day of the snapshot month
    data_start: datetime.date
    max_open_offset: int  # months between the first full month >= data_start and snapshot
    share: float
    txn_per_month: float
    id_width: int
    lines: tuple[str, ...]
    profiles: tuple[_Line, ...]
    credit_label: str
    debit_label: str
    family_label: str | None  # None: the relation type is not configured, no such rows
    employer_label: str | None
    template_label: str  # a valid relation type for the bad-row templates
    unknown_line_prefix: str
    unknown_direction: str
    unknown_relation: str
    enterprises: int
    family_sum: int  # account i's family candidate is (family_sum - i) mod accounts

    @classmethod
    def build(cls, gen: GeneratorConfig, snapshot: datetime.date,
              validation: ValidationConfig) -> _Plan:
        snap = snapshot.replace(day=1)
        start = validation.data_start_date
        first_full = start if start.day == 1 else add_months(start, 1)
        max_offset = months_between(snap, first_full)
        if max_offset < 0:
            raise ValueError(f"snapshot {snap} is before validation.data_start {start}")
        months = min(gen.months, max_offset + 1)
        if months < gen.months:
            log.warning("generator.months=%d reaches before validation.data_start %s; "
                        "generating %d months", gen.months, start, months)
        lines = tuple(validation.product_lines)
        directions, relations = validation.directions, validation.relations
        n = gen.accounts
        return cls(
            rng=_Rng(gen.seed),
            accounts=n,
            months=months,
            partitions=gen.partitions or max(2, n // 50_000),
            snapshot=snap,
            data_start=start,
            max_open_offset=max_offset,
            share=gen.bad_row_share,
            txn_per_month=gen.txn_per_month,
            id_width=max(7, len(str(3 * n + 1))),
            lines=lines,
            profiles=tuple(_LINE_PROFILES.get(name, _DEFAULT_LINE) for name in lines),
            credit_label="credit" if "credit" in directions else directions[0],
            debit_label="debit" if "debit" in directions else directions[-1],
            family_label="family" if "family" in relations else None,
            employer_label="employer" if "employer" in relations else None,
            template_label=relations[0],
            unknown_line_prefix=_unknown_prefix(lines),
            unknown_direction=_not_in("reversal", directions),
            unknown_relation=_not_in("colleague", relations),
            enterprises=(n - _ENTERPRISE_AT - 1) // _ENTERPRISE_EVERY + 1
            if n > _ENTERPRISE_AT else 0,
            family_sum=(gen.seed * 7919 + 104_729) % n,
        )

    @property
    def last(self) -> int:
        """Index of the snapshot month (months are indexed 0..last)."""
        return self.months - 1

    @property
    def credit_indexes(self) -> list[int]:
        """Product lines with a credit facility (they get credit rows)."""
        return [i for i, p in enumerate(self.profiles) if p.limit_multiple is not None]

    @property
    def max_held(self) -> int:
        return min(len(self.lines), max(g.lines[1] for g in _GROUP_PARAMS.values()))

    def account_id(self, number: Column) -> Column:
        """``A`` + zero-padded account number (good accounts are numbered 1..accounts)."""
        return F.concat(F.lit("A"), F.lpad(number.cast("string"), self.id_width, "0"))

    def good_id(self, idc: Column) -> Column:
        return self.account_id(idc + 1)

    def fresh_id(self, idc: Column) -> Column:
        """An id no good row uses (appended bad account rows with a new key)."""
        return self.account_id(idc + self.accounts + 1)

    def orphan_id(self, idc: Column) -> Column:
        """A well-formed id that is in no accounts row at all."""
        return self.account_id(idc + 2 * self.accounts + 1)

    def kind_hash(self, salt: str, *keys: Column) -> list[Column]:
        """The hash column deciding bad rows (none when bad rows are off)."""
        return [self.rng.hash(salt, *keys).alias("h_bad")] if self.share > 0 else []

    def row_kind(self, n_kinds: int, anchor_row: Column) -> Column:
        """Bad-row kind of an existing row (-1 = good) from ``h_bad`` or the anchor account.

        Each kind hits a share ``bad_row_share`` of the rows; row ``anchor_row`` of account
        ``k`` always gets kind ``k``.
        """
        if self.share <= 0:
            return F.lit(-1)
        share = min(self.share, 1.0 / n_kinds)  # the kinds together cannot exceed all rows
        u, idc = _u(F.col("h_bad")), F.col("id")
        hashed = F.when(u < n_kinds * share,
                        F.least(F.floor(u / share).cast("int"), F.lit(n_kinds - 1)))
        anchored = F.when(anchor_row & (idc < n_kinds), idc.cast("int"))
        return F.coalesce(anchored, hashed, F.lit(-1))

    def blank(self) -> Column:
        """A blank key, whitespace only (one or three spaces; survives a CSV round trip)."""
        bit = F.shiftright(F.col("h_bad"), 52).bitwiseAND(F.lit(1))
        return F.when(bit == 0, F.lit(" ")).otherwise(F.lit("   "))

    def appended(self, salt: str, n_kinds: int, rate: float) -> list[Column]:
        """Per kind: does this account get an appended bad row of that kind (anchor or hash)."""
        if self.share <= 0:
            return []
        p = min(1.0, rate * self.share)
        idc = F.col("id")
        return [(_u(self.rng.hash(f"{salt}.{k}", idc)) < p) | (idc == k) for k in range(n_kinds)]


def _key(plan: _Plan, kinds: dict[str, int], good: Column) -> Column:
    """account_id with the null / blank / orphan bad kinds applied."""
    if plan.share <= 0:
        return good
    kind = F.col("kind")
    out = F.when(kind == kinds["null_key"], F.lit(None).cast("string"))
    out = out.when(kind == kinds["blank_key"], plan.blank())
    if "orphan_account" in kinds:
        out = out.when(kind == kinds["orphan_account"], plan.orphan_id(F.col("id")))
    return out.otherwise(good)


def _split(df: DataFrame, name: str) -> DataFrame:
    """A one-row explode that starts a new generated function.

    Whole-stage codegen puts everything between two generators into one Java method; the JVM
    does not JIT-compile methods over 8000 bytes of bytecode, and an interpreted method is
    10-50x slower. Cutting the long chains of projections keeps every method small. The
    ``_split_*`` column is dropped by the final contract select.
    """
    return df.select("*", F.explode(F.array(F.lit(0))).alias(f"_split_{name}"))


# --------------------------------------------------------------------------------------------
# Accounts (hidden per-account parameters)
# --------------------------------------------------------------------------------------------


def _account_base(spark: SparkSession, plan: _Plan) -> DataFrame:
    """One row per account with every hidden parameter the other tables derive from.

    Hash slices (4 x 16 bits unless noted): h_a group, pattern, region, channel; h_b
    responsive, risky, rate, line count; h_c level/frequency normals, employer?, favourite?;
    h_d ticket/salary normals, dormant_for, closed_ago; h_e open offset, new-account offset,
    open day, close day; h_f acquisition-cost normal, cost known?, age; h_which (2 x 32 bits)
    employer, favourite; h_pair family pair; h_line<i> (3 x 21 bits) draw key, balance normal.
    """
    rng, n, last = plan.rng, plan.accounts, plan.last
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

    def h(name: str) -> Column:
        return F.col(f"h_{name}")

    is_ent = idc % _ENTERPRISE_EVERY == _ENTERPRISE_AT
    partner_c = F.col("partner")
    partner_individual = partner_c % _ENTERPRISE_EVERY != _ENTERPRISE_AT
    is_family = ((partner_c != idc) & ~is_ent & partner_individual
                 & (_u(h("pair"), 0, 4) < 0.3))
    if plan.enterprises:
        employer = (F.floor(_u(h("which"), 0, 2) * plan.enterprises) * _ENTERPRISE_EVERY
                    + _ENTERPRISE_AT).cast("long")
        employer = F.when(~is_ent & (_u(h("c"), 2, 4) < 0.3), employer)
    else:
        employer = F.lit(None).cast("long")
    # Any account but this one: id + 1 + r (mod n) with r in [0, n - 2].
    favourite = F.pmod(idc + 1 + F.floor(_u(h("which"), 1, 2) * (n - 1)).cast("long"), F.lit(n))
    ind_shares = [_GROUP_PARAMS[g].share_individual for g in GROUPS]
    ent_shares = [_GROUP_PARAMS[g].share_enterprise for g in GROUPS]
    pattern = F.when(idc < _ANCHORS, F.lit("stable")).otherwise(
        _pick(_u(h("a"), 1, 4), PATTERNS, [_PATTERN_SHARES[p] for p in PATTERNS]))
    stage1 = hashed.select(
        "*",
        plan.good_id(idc).alias("account_id"),
        F.lpad((idc + 1).cast("string"), plan.id_width, "0").alias("digits"),
        F.when(is_ent, F.lit(CUSTOMER_TYPES[1])).otherwise(F.lit(CUSTOMER_TYPES[0]))
        .alias("customer_type"),
        F.when(is_ent, _pick(_u(h("a"), 0, 4), GROUPS, ent_shares))
        .otherwise(_pick(_u(h("a"), 0, 4), GROUPS, ind_shares)).alias("group"),
        pattern.alias("pattern"),
        _pick(_u(h("a"), 2, 4), REGIONS, _REGION_SHARES).alias("region"),
        _pick(_u(h("a"), 3, 4), CHANNELS, _CHANNEL_SHARES).alias("channel"),
        F.when(is_family, partner_c).alias("family"),
        employer.alias("employer"),
        # Frequent counterparty: the family partner, else a favourite account for 15%.
        F.when(is_family, partner_c).when(_u(h("c"), 3, 4) < 0.15, favourite).alias("fav"),
        (_u(h("b"), 0, 4) < _RESPONSIVE_SHARE).alias("responsive"),
    )
    group, pat = F.col("group"), F.col("pattern")

    def per_group(field: str) -> Column:
        return _by(group, {g: getattr(p, field) for g, p in _GROUP_PARAMS.items()})

    # Months before the snapshot month: dormant accounts stop transacting `dormant_for`
    # months before the end, closed ones close `closed_ago` months before it.
    dormant_for = _between(_u(h("d"), 2, 4), 6, 14)
    closed_ago = _between(_u(h("d"), 3, 4), 1, max(1, min(15, last)))
    min_offset = (F.when(idc < _ANCHORS, F.lit(plan.months))
                  .when(pat == "dormant", dormant_for + 6)
                  .when(pat == "closed", closed_ago + 3)
                  .otherwise(F.lit(6)))
    exp_months = F.floor(F.log(_u_open(h("e"), 0, 4)) * -66.0).cast("int")
    offset_old = F.least(F.lit(plan.max_open_offset), min_offset + exp_months)
    offset_new = _between(_u(h("e"), 1, 4), 0, min(5, plan.max_open_offset))
    risk = per_group("risk") + _by(pat, _PATTERN_RISK)
    line_keys = []
    credit = plan.credit_indexes
    for i, prof in enumerate(plan.profiles):
        key = F.log(_u_open(h(f"line{i}"), 0, 3)) * (-1.0 / prof.weight)
        if credit and i == credit[0]:
            key = F.when(idc < _ANCHORS, F.lit(-1.0)).otherwise(key)  # anchors hold credit
        line_keys.append(key.alias(f"key{i}"))
    fewest = _by(group, {g: p.lines[0] for g, p in _GROUP_PARAMS.items()})
    most = _by(group, {g: p.lines[1] for g, p in _GROUP_PARAMS.items()})
    count = F.least(_between(_u(h("b"), 3, 4), fewest, most), F.lit(n_lines))
    stage2 = _split(stage1, "base2").select(
        "*",
        F.when(pat == "new", offset_new).otherwise(offset_old).alias("open_offset"),
        F.when(pat == "closed", closed_ago).alias("closed_ago"),
        F.when(pat == "dormant", F.lit(plan.months) - dormant_for).alias("dormant_from"),
        (F.exp(_normal(h("c"), 0, 1, 4) * 0.15) * per_group("balance")).alias("level"),
        (F.exp(_normal(h("c"), 0, 1, 4, sine=True) * 0.12) * per_group("frequency"))
        .alias("freq"),
        (F.exp(_normal(h("d"), 0, 1, 4) * 0.3) * per_group("ticket")).alias("ticket"),
        (F.exp(_normal(h("d"), 0, 1, 4, sine=True) * 0.25) * per_group("salary"))
        .alias("salary"),
        per_group("marketed").alias("marketed"),
        (_u(h("b"), 1, 4) < risk).alias("risky"),
        # Growth (growing) or decline (declining) rate per year.
        (_u(h("b"), 2, 4) * 0.6 + 0.4).alias("rate"),
        count.alias("n_held"),
        *line_keys,
    )
    # Weighted sampling without replacement: the n_held smallest keys are held.
    keys = [F.col(f"key{i}") for i in range(n_lines)]
    held = []
    for i in range(n_lines):
        rank = sum((((keys[j] < keys[i]) | ((keys[j] == keys[i]) & F.lit(j < i))).cast("int")
                    for j in range(n_lines) if j != i), F.lit(0))
        held.append((rank < F.col("n_held")).alias(f"held{i}"))
    open_month = F.add_months(F.lit(plan.snapshot), -F.col("open_offset"))
    close_month = F.add_months(F.lit(plan.snapshot), -F.col("closed_ago"))
    stage3 = _split(stage2, "base3").select(
        "*",
        F.date_add(open_month, _between(_u(h("e"), 2, 4), 0,
                                        F.dayofmonth(F.last_day(open_month)) - 1))
        .alias("open_date"),
        F.date_add(close_month, _between(_u(h("e"), 3, 4), 0,
                                         F.dayofmonth(F.last_day(close_month)) - 1))
        .alias("close_date"),  # null unless closed
        F.greatest(F.lit(0), F.lit(last) - F.col("open_offset")).alias("first_idx"),
        F.coalesce(F.lit(last) - F.col("closed_ago"), F.lit(last)).alias("last_idx"),
        *held,
    )
    held_c = [F.col(f"held{i}") for i in range(n_lines)]
    balances = [F.when(held_c[i], F.col("level") * prof.share
                       * F.exp(_normal(h(f"line{i}"), 1, 2, 3) * 0.1)).alias(f"bal{i}")
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
    return _split(stage3, "base4").select("*", *balances, *line_at, first_line.alias("first_line"))


def _accounts_table(base: DataFrame, plan: _Plan) -> DataFrame:
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
    is_ent = F.col("customer_type") == CUSTOMER_TYPES[1]
    cac_median = _by(F.col("channel"), dict(zip(CHANNELS, _CHANNEL_CAC, strict=True)))
    cac = F.round(F.exp(_normal(h_f, 0, 1, 4) * 0.4) * cac_median, 2)
    # Old records and ~15% of the rest have no acquisition cost on file.
    cac_known = ((F.col("open_date") >= F.lit(datetime.date(2012, 1, 1)))
                 & (_u(h_f, 2, 4) >= 0.15))
    fresh = kind.isin(kinds["open_before_start"], kinds["open_after_snapshot"])
    days_back = _between(_u(F.col("h_e"), 1, 4), 1, 3650)
    days_after = _between(_u(F.col("h_e"), 1, 4), 0, 27)
    open_date = (
        F.when(kind == kinds["open_before_start"], F.date_sub(F.lit(plan.data_start), days_back))
        .when(kind == kinds["open_after_snapshot"],
              F.date_add(F.lit(add_months(plan.snapshot, 1)), days_after))
        .otherwise(F.col("open_date")))
    cols = {
        "account_id": _key(plan, kinds, F.when(fresh, plan.fresh_id(idc))
                           .otherwise(F.col("account_id"))),
        "open_date": open_date,
        "close_date": F.when(~fresh, F.col("close_date")),
        "customer_type": F.col("customer_type"),
        "region": F.col("region"),
        "birth_year": F.when(~is_ent, F.lit(plan.snapshot.year) - _between(_u(h_f, 3, 4), 18, 85)),
        "acquisition_channel": F.col("channel"),
        "acquisition_cost": F.when(cac_known, cac),
    }
    return _conform(rows, "accounts", cols,
                    F.col("group").alias(PLANTED_GROUP), F.col("pattern").alias(PLANTED_PATTERN))


# --------------------------------------------------------------------------------------------
# Account-months
# --------------------------------------------------------------------------------------------


def _spend(plan: _Plan, h: Column, m: Column) -> tuple[Column, Column]:
    """(spend, contacts) of an account-month from its marketing hash; spend 0 = not marketed."""
    marketed = (_u(h, 0, 4) < F.col("marketed")) | ((F.col("id") < _ANCHORS) & (m == plan.last))
    contacts = _between(_u(h, 1, 4), 1, 4)
    spend = F.round(F.exp(_normal(h, 2, 3, 4) * 0.4) * 8.0 * contacts, 2)
    return F.when(marketed, spend).otherwise(F.lit(0.0)), contacts


def _account_months(base: DataFrame, plan: _Plan) -> DataFrame:
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
        .when(pat == "volatile", F.exp(_normal(h1, 0, 1, 4, sine=True) * 0.6 - 0.18))
        .when(pat == "new", F.lit(1.0) - F.exp((m - first + 1) / -1.5))
        .when((pat == "dormant") & (m >= F.col("dormant_from")), F.lit(0.25))
        .when((pat == "closed") & (m >= last_open - 1), F.lit(0.6))
        .otherwise(F.lit(1.0)))
    transacting = ~((pat == "dormant") & (m >= F.col("dormant_from")))
    spend, contacts = _spend(plan, F.col("h_mkt"), m)
    month = F.add_months(F.lit(plan.snapshot), m - last)
    close_day = F.when(m == last_open, F.dayofmonth("close_date"))
    stage = _split(hashed, "am2").select(
        "*",
        month.alias("month"),
        factor.alias("factor"),
        F.exp(_normal(h1, 0, 1, 4) * 0.08).alias("noise"),
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
    n = F.floor(lam * (_u(h1, 2, 4) + _u(h1, 3, 4)) + _u(h2, 0, 4)).cast("int")
    n = F.when((idc < _ANCHORS) & (m == last), F.greatest(n, F.lit(1))).otherwise(n)
    n = F.least(n, F.lit(_MAX_TXN_PER_MONTH))
    uplift = F.when(F.col("responsive"),
                    spend_prev / (spend_prev + _RESPONSE_HALF) * _RESPONSE_LIFT + 1.0)
    return _split(stage, "am3").select(
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
    noise = F.exp(_normal(h, 0, 1, 4) * 0.05)
    return F.round(base_balance * F.col("factor") * F.col("noise") * noise, 2)


# --------------------------------------------------------------------------------------------
# Event and monthly tables
# --------------------------------------------------------------------------------------------


def _transactions_table(am: DataFrame, plan: _Plan) -> DataFrame:
    """One row per transaction; bad rows are damaged in place, duplicates doubled.

    Hash slices: h_t1 day, second, line, transfer?; h_t2 direction, favourite?, amount normals.
    """
    rng, n_acc, last = plan.rng, plan.accounts, plan.last
    idc, m = F.col("id"), F.col("m")
    kinds = {k: i for i, k in enumerate(TXN_BAD_KINDS)}
    dup_kind = kinds["duplicate"]
    # A duplicated account-month emits its last transaction twice (slot n + 1 copies slot n).
    if plan.share > 0:
        dup = ((_u(F.col("h_am2"), 1, 4) < F.col("n") * plan.share)
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
    j, h1, h2 = F.col("j"), F.col("h_t1"), F.col("h_t2")
    is_dup = (F.col("dup") == 1) & (j == F.col("n"))
    kind = F.when(is_dup, F.lit(dup_kind)).otherwise(
        plan.row_kind(len(TXN_BAD_KINDS) - 1, (m == last) & (j == 1)))
    rows = _split(rows.select("*", kind.alias("kind")), "txn")
    kind = F.col("kind")

    # Time: 06:00..21:59 on a day between the open date and the close date of the month.
    second = F.floor(_u(h1, 1, 4) * 57_600).cast("long") + 21_600
    day = _between(_u(h1, 0, 4), F.col("day_lo"), F.col("day_hi"))
    good_s = F.col("month_s") + (day - 1).cast("long") * 86_400 + second
    after_s = (F.unix_seconds(F.lit(add_months(plan.snapshot, 1)).cast("timestamp"))
               + F.floor(_u(h1, 0, 4) * 28).cast("long") * 86_400 + second)
    before_day = F.date_sub(F.lit(plan.data_start), _between(_u(h1, 0, 4), 1, 365))
    before_s = F.unix_seconds(before_day.cast("timestamp")) + second
    seconds = (F.when(kind == kinds["after_snapshot"], after_s)
               .when(kind == kinds["before_start"], before_s).otherwise(good_s))

    # Salary: the first transaction of the month of an employed account comes from the employer.
    salary = F.col("employer").isNotNull() & (j == 1)
    has_fav = F.col("fav").isNotNull()
    transfer = ~salary & (_u(h1, 3, 4) < F.when(has_fav, F.lit(0.35)).otherwise(F.lit(0.15)))
    other = F.pmod(idc + 1 + F.floor(_u(rng.hash("txn.3", idc, m, j)) * (n_acc - 1))
                   .cast("long"), F.lit(n_acc))
    counterparty = (F.when(salary, F.col("employer"))
                    .when(transfer & has_fav & (_u(h2, 1, 4) < 0.7), F.col("fav"))
                    .when(transfer, other))
    direction = (F.when(salary | (_u(h2, 0, 4) < 0.45), F.lit(plan.credit_label))
                 .otherwise(F.lit(plan.debit_label)))
    ticket = F.col("ticket") * F.sqrt(F.col("factor")) * F.exp(_normal(h2, 2, 3, 4) * 0.9)
    pay = F.col("salary") * F.exp(_normal(h2, 2, 3, 4, sine=True) * 0.03)
    amount = F.greatest(F.round(F.when(salary, pay).otherwise(ticket), 2), F.lit(0.01))
    pick = F.floor(_u(h1, 2, 4) * F.col("n_held")).cast("int")
    line = F.col("line_at0")
    for k in range(1, plan.max_held):
        line = F.when(pick == k, F.col(f"line_at{k}")).otherwise(line)
    line = F.when(salary, F.col("line_at0")).otherwise(line)
    bad_amount = (F.when(kind == kinds["zero_amount"], F.lit(0.0))
                  .when(kind == kinds["negative_amount"], -amount)
                  .when(kind == kinds["nan_amount"], F.lit(float("nan")))
                  .when(kind == kinds["inf_amount"], F.lit(float("inf"))))
    cols = {
        "account_id": _key(plan, kinds, F.col("account_id")),
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
    return _conform(rows, "transactions", cols)


def _monthly_product_table(am: DataFrame, plan: _Plan) -> DataFrame:
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
    rows = _split(rows.select("*", kind.alias("kind"), balance.alias("balance")), "monthly")
    kind, balance = F.col("kind"), F.col("balance")
    income_rate = _lookup([p.income_rate / 12 for p in plan.profiles], i)
    cost_rate = _lookup([p.cost_rate / 12 for p in plan.profiles], i)
    fixed = _lookup([p.fixed_cost for p in plan.profiles], i)
    noise = F.exp(_normal(F.col("h_mp"), 0, 1, 4, sine=True) * 0.1)
    income = F.round(balance * income_rate * F.col("uplift") * noise, 2)
    name = _lookup(plan.lines, i)
    month = F.col("month")
    cols = {
        "account_id": _key(plan, kinds, F.col("account_id")),
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
    return _conform(rows, "monthly_product", cols)


def _marketing_table(am: DataFrame, plan: _Plan) -> DataFrame:
    """One row per marketed account-month; bad rows replace good ones in place."""
    idc, m = F.col("id"), F.col("m")
    kinds = {k: i for i, k in enumerate(MARKETING_BAD_KINDS)}
    rows = am.where(F.col("spend") > 0).select("*", *plan.kind_hash("bad.marketing", idc, m))
    rows = rows.select("*", plan.row_kind(len(MARKETING_BAD_KINDS), m == plan.last)
                       .alias("kind"))
    kind, month, spend = F.col("kind"), F.col("month"), F.col("spend")
    months_back = _between(_u(F.col("h_mkt"), 1, 4), 1, 12)
    cols = {
        "account_id": _key(plan, kinds, F.col("account_id")),
        "month": F.when(kind == kinds["month_not_start"], F.date_add(month, 14))
        .when(kind == kinds["before_start"],
              F.add_months(F.lit(plan.data_start.replace(day=1)), -months_back))
        .otherwise(month),
        "spend": F.when(kind == kinds["negative_spend"], -spend)
        .when(kind == kinds["nan_spend"], F.lit(float("nan"))).otherwise(spend),
        "contacts": F.when(kind == kinds["negative_contacts"], -F.col("contacts"))
        .otherwise(F.col("contacts")),
    }
    return _conform(rows, "marketing", cols)


def _credit_table(am: DataFrame, plan: _Plan) -> DataFrame:
    """One row per account-month holding a credit line (loan/card); bad rows in place.

    Hash slices of h_cr: stress, late?, bucket, days within the bucket.
    """
    rng, last = plan.rng, plan.last
    idc, m = F.col("id"), F.col("m")
    kinds = {k: i for i, k in enumerate(CREDIT_BAD_KINDS)}
    credit = plan.credit_indexes
    if not credit:
        return _conform(am.where(F.lit(False)), "credit",
                        {name: F.lit(None) for name in schemas.CREDIT.columns})
    # The same balances as the loan/card rows of monthly_product (same hash keys).
    used = sum((F.coalesce(_line_balance(F.col(f"bal{i}"), rng.hash("mp", idc, m, F.lit(i))),
                           F.lit(0.0)) for i in credit), F.lit(0.0))
    limit = sum((F.coalesce(F.col(f"bal{i}") * plan.profiles[i].limit_multiple, F.lit(0.0))
                 for i in credit), F.lit(0.0))
    holds = F.lit(False)
    for i in credit:
        holds = holds | F.col(f"bal{i}").isNotNull()
    rows = _split(am.where(holds), "credit1").select(
        "*", used.alias("used"), F.greatest(F.round(limit, -2), F.lit(100.0)).alias("limit"),
        rng.hash("credit", idc, m).alias("h_cr"), *plan.kind_hash("bad.credit", idc, m))
    used, limit, h = F.col("used"), F.col("limit"), F.col("h_cr")
    risky = F.col("risky")
    # Delinquency-prone accounts run higher utilisation and miss payments more often, the more
    # so towards the snapshot when their income declines.
    stress = F.when(risky, _u(h, 0, 4) * 0.3 + 1.25).otherwise(1.0)
    utilisation = F.least(F.greatest(F.round(used / limit * stress, 4), F.lit(0.0)),
                          F.lit(1.5))
    p_late = F.when(risky & (F.col("pattern") == "declining"), m / max(last, 1) * 0.4 + 0.2)
    p_late = p_late.when(risky, F.lit(0.3)).otherwise(F.lit(0.015))
    bucket, within = _u(h, 2, 4), _u(h, 3, 4)
    dpd = (F.when(~risky, _between(within, 1, 14))
           .when(bucket < 0.4, _between(within, 1, 29))
           .when(bucket < 0.7, _between(within, 30, 59))
           .when(bucket < 0.85, _between(within, 60, 89))
           .otherwise(_between(within, 90, 179)))
    dpd = F.when(_u(h, 1, 4) < p_late, dpd).otherwise(F.lit(0))
    kind = plan.row_kind(len(CREDIT_BAD_KINDS), m == last)
    rows = _split(rows.select("*", dpd.alias("dpd"), utilisation.alias("utilisation"),
                              kind.alias("kind")), "credit2")
    dpd, kind = F.col("dpd"), F.col("kind")
    overdue = F.when(dpd > 0, F.round(used * F.least(dpd / 200.0 + 0.03, F.lit(1.0)), 2))
    overdue = overdue.otherwise(F.lit(0.0))
    month = F.col("month")
    cols = {
        "account_id": _key(plan, kinds, F.col("account_id")),
        "month": F.when(kind == kinds["month_not_start"], F.date_add(month, 14))
        .when(kind == kinds["after_snapshot"], F.lit(add_months(plan.snapshot, 1)))
        .otherwise(month),
        "days_past_due": F.when(kind == kinds["negative_days_past_due"], -dpd - 1)
        .otherwise(dpd),
        "overdue_amount": F.when(kind == kinds["negative_overdue"], -overdue - 1.0)
        .otherwise(overdue),
        "credit_limit": limit,
        "utilisation": F.when(kind == kinds["inf_utilisation"], F.lit(float("inf")))
        .otherwise(F.col("utilisation")),
    }
    return _conform(rows, "credit", cols)


def _relations_table(base: DataFrame, plan: _Plan) -> DataFrame:
    """Family pairs (once per pair) and employee -> employer links; bad rows appended."""
    n = plan.accounts
    idc, family = F.col("id"), F.col("family")
    kinds = {k: i for i, k in enumerate(RELATION_BAD_KINDS)}
    flip = _u(F.col("h_pair"), 1, 4) < 0.5  # store the pair in either order

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
        "account_id": _key(plan, kinds, plan.good_id(a)),
        "related_account_id": F.when(kind == kinds["self_relation"], plan.good_id(a))
        .when(kind == kinds["orphan_related"], plan.orphan_id(idc))
        .otherwise(plan.good_id(b)),
        "relation": F.when(kind == kinds["unknown_relation"], F.lit(plan.unknown_relation))
        .otherwise(F.col("r.relation")),
    }
    return _conform(rows, "relations", cols)


def _conform(df: DataFrame, table: str, cols: dict[str, Column], *extras: Column) -> DataFrame:
    """Select the contract columns of ``table`` in order, cast to the contract types."""
    fields = schemas.INPUT_TABLES[table].schema.fields
    return df.select(*[cols[f.name].cast(f.dataType).alias(f.name) for f in fields], *extras)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_tables(spark: SparkSession, gen: GeneratorConfig, snapshot: datetime.date,
                    validation: ValidationConfig) -> dict[str, DataFrame]:
    """All six input tables (keys = names in schemas.INPUT_TABLES) for gen.accounts accounts over
    gen.months months ending at `snapshot` (first day of the snapshot month).

    Args:
        spark: the active session.
        gen: size, seed, bad-row share, transaction rate and partition count.
        snapshot: any day of the snapshot month (the month is what counts).
        validation: product lines, directions, relation types and ``data_start`` the good rows
            respect (and the bad rows break).

    Returns:
        ``{table name: DataFrame}``; each has exactly the contract columns and types of
        ``schemas.INPUT_TABLES[name]`` in order, and ``accounts`` additionally carries
        ``planted_group`` and ``planted_pattern``. The frames are lazy: nothing runs until
        they are written or counted.

    Raises:
        ValueError: the snapshot month is before ``validation.data_start``.
    """
    plan = _Plan.build(gen, snapshot, validation)
    log.info("generating %d accounts x %d months to %s (seed %d, bad share %g, %d partitions)",
             plan.accounts, plan.months, plan.snapshot, gen.seed, plan.share, plan.partitions)
    base = _account_base(spark, plan)
    am = _account_months(base, plan)
    return {
        "accounts": _accounts_table(base, plan),
        "transactions": _transactions_table(am, plan),
        "monthly_product": _monthly_product_table(am, plan),
        "marketing": _marketing_table(am, plan),
        "credit": _credit_table(am, plan),
        "relations": _relations_table(base, plan),
    }


def write_tables(tables: dict[str, DataFrame], root: str, fmt: str = "parquet") -> dict[str, str]:
    """Write each table to <root>/<name> (overwrite) in parquet | csv (header, ISO dates) | delta;
    returns name -> path.

    Args:
        tables: ``{name: DataFrame}`` as returned by :func:`generate_tables`.
        root: a directory or URI; each table goes to ``<root>/<name>``.
        fmt: ``parquet``, ``csv`` (header row, ``yyyy-MM-dd`` dates, ISO-8601 timestamps,
            whitespace kept) or ``delta``.

    Returns:
        ``{name: path}`` of what was written.

    Raises:
        ValueError: ``fmt`` is not one of the three formats.
    """
    if fmt not in ("parquet", "csv", "delta"):
        raise ValueError(f"fmt must be parquet, csv or delta, got {fmt!r}")
    paths = {}
    for name, df in tables.items():
        path = f"{root.rstrip('/')}/{name}"
        writer = df.write.mode("overwrite").format(fmt)
        if fmt == "csv":
            writer = (writer.option("header", "true")
                      .option("dateFormat", "yyyy-MM-dd")
                      .option("timestampFormat", "yyyy-MM-dd'T'HH:mm:ss")
                      .option("ignoreLeadingWhiteSpace", "false")
                      .option("ignoreTrailingWhiteSpace", "false"))
        elif fmt == "delta":
            writer = writer.option("overwriteSchema", "true")
        writer.save(path)
        log.info("wrote %s (%s) to %s", name, fmt, path)
        paths[name] = path
    return paths


def write_sample(spark: SparkSession, cfg: CvmConfig) -> dict[str, str]:
    """Generate the sample of ``cfg.generator`` for ``cfg.snapshot`` and write it where the job
    reads its inputs (``cfg.inputs.root`` in ``cfg.inputs.format``): what ``cvm generate``
    and ``cvm run --generate`` do.

    Returns:
        ``{name: path}`` of what was written.
    """
    tables = generate_tables(spark, cfg.generator, cfg.snapshot, cfg.validation)
    return write_tables(tables, cfg.inputs.root, cfg.inputs.format)

"""The generation plan: every parameter derived once from the config and the snapshot (the
industry profile, sizes, month indexes, product lines, bad-row counts, id formats), and the
helpers that plant bad keys and cut long generated methods.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvm_generate.draws import Rng, not_in, uniform, unknown_prefix
from cvm_generate.profile import ENTERPRISE_AT, ENTERPRISE_EVERY, INDUSTRIES, Industry, Line
from cvm_spark.common.months import add_months, months_between
from cvm_spark.config import GeneratorConfig, ValidationConfig
from cvm_spark.schemas import inputs as schemas

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Parameters derived once from the config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Everything the column builders need, computed on the driver from the config."""

    rng: Rng
    industry: Industry  # generator.profile: the bank's or the telecom operator's constants
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
    profiles: tuple[Line, ...]
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
              validation: ValidationConfig) -> Plan:
        snap = snapshot.replace(day=1)
        # data_start unset (derived from the data): the generated months are the window
        start = validation.data_start_date or add_months(snap, 1 - gen.months)
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
        industry = INDUSTRIES[gen.profile]
        missing = [name for name in lines if name not in industry.lines]
        if missing:
            log.warning("the %s profile has no economics for product line(s) %s of "
                        "validation.product_lines; they use its default line (known: %s)",
                        industry.name, missing, sorted(industry.lines))
        n = gen.accounts
        return cls(
            rng=Rng(gen.seed),
            industry=industry,
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
            profiles=tuple(industry.line(name) for name in lines),
            credit_label="credit" if "credit" in directions else directions[0],
            debit_label="debit" if "debit" in directions else directions[-1],
            family_label="family" if "family" in relations else None,
            employer_label="employer" if "employer" in relations else None,
            template_label=relations[0],
            unknown_line_prefix=unknown_prefix(lines),
            unknown_direction=not_in("reversal", directions),
            unknown_relation=not_in("colleague", relations),
            enterprises=(n - ENTERPRISE_AT - 1) // ENTERPRISE_EVERY + 1
            if n > ENTERPRISE_AT else 0,
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
        return min(len(self.lines), max(g.lines[1] for g in self.industry.groups.values()))

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
        u, idc = uniform(F.col("h_bad")), F.col("id")
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
        return [(uniform(self.rng.hash(f"{salt}.{k}", idc)) < p) | (idc == k)
                for k in range(n_kinds)]


def bad_key(plan: Plan, kinds: dict[str, int], good: Column) -> Column:
    """account_id with the null / blank / orphan bad kinds applied."""
    if plan.share <= 0:
        return good
    kind = F.col("kind")
    out = F.when(kind == kinds["null_key"], F.lit(None).cast("string"))
    out = out.when(kind == kinds["blank_key"], plan.blank())
    if "orphan_account" in kinds:
        out = out.when(kind == kinds["orphan_account"], plan.orphan_id(F.col("id")))
    return out.otherwise(good)


def codegen_split(df: DataFrame, name: str) -> DataFrame:
    """A one-row explode that starts a new generated function.

    Whole-stage codegen puts everything between two generators into one Java method; the JVM
    does not JIT-compile methods over 8000 bytes of bytecode, and an interpreted method is
    10-50x slower. Cutting the long chains of projections keeps every method small. The
    ``_split_*`` column is dropped by the final contract select.
    """
    return df.select("*", F.explode(F.array(F.lit(0))).alias(f"_split_{name}"))


def conform(df: DataFrame, table: str, cols: dict[str, Column], *extras: Column) -> DataFrame:
    """Select the contract columns of ``table`` in order, cast to the contract types; an
    optional contract column is written only when ``cols`` gives it (the telecom profile)."""
    spec = schemas.INPUT_TABLES[table]
    fields = [f for f in spec.schema.fields if f.name not in spec.optional or f.name in cols]
    return df.select(*[cols[f.name].cast(f.dataType).alias(f.name) for f in fields], *extras)

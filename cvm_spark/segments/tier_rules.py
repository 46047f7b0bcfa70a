"""Tier rules (``tiers.tiers``): the conditions of a rule, the dormancy guard and the reason an
account is given for its tier (docs/model.md, "Value tier").

Each condition a rule sets is a (column test, text) pair: the tier is the first rule whose
tests all hold, and ``tier_reason`` lists the texts of the tests the tier above failed.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from cvm_spark.config import TierRule, TiersConfig

DAYS_PER_MONTH = 30


def guard_inactive(cfg: TiersConfig, income_col: str) -> Column:
    """The dormancy guard's test: closed, or neither a transaction nor positive income in
    the last ``tiers.dormancy_months`` months (``recency_days`` null or above ``30 * N``, and
    ``income_col`` = ``income_<N>m`` not above 0)."""
    recency = F.col("recency_days")
    no_txn = recency.isNull() | (recency > cfg.dormancy_months * DAYS_PER_MONTH)
    return (F.coalesce(F.col("is_closed"), F.lit(False))
            | (no_txn & ~F.coalesce(F.col(income_col) > 0, F.lit(False))))


def _rule_checks(rule: TierRule, cfg: TiersConfig) -> list[tuple[Column, str]]:
    """(condition, what a failing account is told) of each condition ``rule`` sets."""
    def listed(col: str, values: list[str], what: str) -> list[tuple[Column, str]]:
        return [(F.col(col).isin(values), f"{what} not in {'|'.join(values)}")] if values \
            else []

    checks = [] if rule.min_value_pct is None else [
        (F.col("contribution_value_pct") >= rule.min_value_pct,
         f"value below p{rule.min_value_pct:g}")]
    checks += [*listed("value_level", rule.value_levels, "value"),
               *listed("loyalty_band", rule.loyalty_bands, "loyalty"),
               *listed("credit_grade_used", rule.credit_grades, "credit")]
    if rule.require_active:
        checks.append((~F.col("_inactive"),
                       f"no activity for {cfg.dormancy_months}+ months or closed"))
    return checks


def rule_match(rule: TierRule, cfg: TiersConfig) -> Column:
    """True when the account meets every condition of ``rule`` (null counts as not met)."""
    match = F.lit(True)
    for cond, _ in _rule_checks(rule, cfg):
        match = match & F.coalesce(cond, F.lit(False))
    return match


def _why_not(rule: TierRule, cfg: TiersConfig) -> Column:
    """The conditions of ``rule`` the account fails, joined by ', '."""
    return F.concat_ws(", ", *[F.when(~F.coalesce(cond, F.lit(False)), F.lit(text))
                               for cond, text in _rule_checks(rule, cfg)])


def tier_reason(cfg: TiersConfig) -> Column:
    """The account's value level, loyalty and credit, and which conditions of the tier just
    above its own it failed."""
    rules = cfg.tiers
    facts = F.format_string("value %s (p%.1f), loyalty %s, credit %s", F.col("value_level"),
                            F.col("contribution_value_pct"),
                            F.coalesce(F.col("loyalty_band"), F.lit("n/a")),
                            F.col("credit_grade_used"))
    below = F.coalesce(*[F.when(F.col("tier") == rules[i].name,
                                F.concat(F.lit(f"; not {rules[i - 1].name}: "),
                                         _why_not(rules[i - 1], cfg)))
                         for i in range(1, len(rules))], F.lit(""))
    return F.concat(facts, below)

"""What the synthetic customers look like: the industry profiles (``BANK``, ``TELECOM``: value
groups, product lines, channels, transfers, tariffs), and what every profile shares: lifecycle
patterns, regions, marketing response, surveys, and every bad-row kind with the quarantine
reason it should get (docs/generator.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

log = logging.getLogger(__name__)


# Ground-truth columns carried by the accounts table (extra columns are allowed by the contract).
PLANTED_GROUP = "planted_group"
PLANTED_PATTERN = "planted_pattern"

GROUPS = ("high", "medium", "low")
PATTERNS = ("new", "growing", "stable", "volatile", "declining", "dormant", "closed")
REGIONS = ("north", "south", "east", "west", "central")

TAU = 2.0 * math.pi

# Accounts 0.._ANCHORS-1 are forced to be stable, open before the window, holding a credit
# line, marketed and transacting in the snapshot month, so that account k can carry bad-row
# kind k of every table (at least one row of each kind whenever bad_row_share > 0).
ANCHORS = 12
# Every 40th account (ids 20, 60, 100, ...) is an enterprise: employers are found by
# arithmetic instead of a join.
ENTERPRISE_EVERY = 40
ENTERPRISE_AT = 20
MAX_TXN_PER_MONTH = 999


PATTERN_SHARES = {"new": 0.08, "growing": 0.12, "stable": 0.38, "volatile": 0.12,
                   "declining": 0.12, "dormant": 0.09, "closed": 0.09}
# Added to the group's delinquency probability.
PATTERN_RISK = {"new": 0.03, "growing": 0.0, "stable": 0.0, "volatile": 0.08,
                 "declining": 0.20, "dormant": 0.05, "closed": 0.10}
REGION_SHARES = (0.22, 0.22, 0.20, 0.16, 0.20)

# Marketing: spend raises next month's income of responsive accounts by
# RESPONSE_LIFT * spend / (spend + RESPONSE_HALF).
RESPONSIVE_SHARE = 0.35
RESPONSE_LIFT = 0.6
RESPONSE_HALF = 30.0

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
SURVEY_BAD_KINDS = ("null_key", "blank_key", "orphan_account", "after_snapshot",
                    "csat_out_of_range", "recommend_out_of_range", "no_answer")

BAD_KINDS: dict[str, tuple[str, ...]] = {
    "accounts": ACCOUNT_BAD_KINDS,
    "transactions": TXN_BAD_KINDS,
    "monthly_product": MONTHLY_BAD_KINDS,
    "marketing": MARKETING_BAD_KINDS,
    "credit": CREDIT_BAD_KINDS,
    "relations": RELATION_BAD_KINDS,
    "surveys": SURVEY_BAD_KINDS,
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
    "csat_out_of_range": "value_out_of_range",
    "recommend_out_of_range": "value_out_of_range",
    "no_answer": "missing_value",
}

# Surveys: the share of open account-months with a response (anchor accounts always answer
# in the snapshot month) and the mean satisfaction (CSAT 1..5) of each pattern (the survey
# channels are the industry's).
SURVEY_RATE = 0.04
SURVEY_CSAT = {"new": 4.0, "growing": 4.3, "stable": 4.0, "volatile": 3.2, "declining": 2.6,
               "dormant": 2.8, "closed": 2.2}


# --------------------------------------------------------------------------------------------
# Industry profiles: what differs between a bank and a telecom operator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Parameters of one planted value/behaviour group."""

    share_individual: float  # share of individual accounts in the group
    share_enterprise: float  # share of enterprise accounts in the group
    balance: float  # median balance level (telecom: the monthly plan base of all lines)
    frequency: float  # multiple of txn_per_month
    ticket: float  # median transaction amount (telecom: a recharge or bill payment)
    salary: float  # median monthly pay from the employer (telecom: the corporate payment)
    lines: tuple[int, int]  # product lines held (inclusive range)
    risk: float  # probability of being a delinquency-prone account
    marketed: float  # probability of marketing activity in a month


@dataclass(frozen=True)
class Line:
    """Economics of one product line (monthly_product and credit rows): a month's income is
    ``balance * income_rate / 12``, its cost ``balance * cost_rate / 12 + fixed_cost``."""

    weight: float  # how likely the line is to be held (weighted sampling without replacement)
    share: float  # balance of the line as a share of the account's balance level
    income_rate: float  # yearly income / balance
    cost_rate: float  # yearly variable cost / balance
    fixed_cost: float  # monthly servicing cost
    limit_multiple: float | None  # credit limit / base balance; None = no credit facility


@dataclass(frozen=True)
class Tariffs:
    """Telecom only: tariff plans (``accounts.plan_type``, ``payment_type``) and how bills are
    paid (``credit.payment_method``, ``bad_debt``); only postpaid subscribers get credit rows.
    """

    plans: dict[str, str]  # plan type -> payment type (prepaid | postpaid)
    # Shares of the first four plans (prepaid_basic .. postpaid_unlimited) per value group,
    # for subscribers on neither a family nor a corporate plan.
    by_group: dict[str, tuple[float, float, float, float]]
    family_plan: str  # the plan of both subscribers of a family pair, for a share of the pairs
    family_share: float
    corporate_plan: str  # every enterprise's plan, and that of a share of their employees
    corporate_share: float
    anchor_plan: str  # a postpaid plan for anchor accounts drawn prepaid (they need credit rows)
    methods: tuple[str, ...]  # payment methods
    method_shares: tuple[float, ...]  # the usual method of most subscribers
    risky_method_shares: tuple[float, ...]  # the usual method of delinquency-prone ones
    usual_method: float  # share of months paid with the subscriber's usual method
    write_off_days: int  # days past due from which a prone subscriber's debt is written off


@dataclass(frozen=True)
class Industry:
    """Everything of a profile that differs between industries (``generator.profile``)."""

    name: str
    groups: dict[str, Group]  # by value group, in GROUPS order
    lines: dict[str, Line]  # the product lines it has economics for
    default_line: Line  # any other configured product line
    customer_types: tuple[str, str]  # (individual, enterprise)
    channels: tuple[str, ...]  # acquisition channels
    channel_shares: tuple[float, ...]
    channel_cac: tuple[float, ...]  # median acquisition cost per channel
    survey_channels: tuple[str, ...]
    survey_channel_shares: tuple[float, ...]
    # Transactions that are not the employer's payment: share of transfers for accounts with
    # / without a frequent counterparty, and share of credits (None: credits are exactly the
    # employer's payments and the transfers, every other transaction is a debit).
    transfer_share: tuple[float, float]
    credit_share: float | None
    limit_digits: int  # credit_limit rounded to 10 ** -limit_digits ...
    min_limit: float  # ... and at least this
    tariffs: Tariffs | None = None  # telecom only

    def line(self, name: str) -> Line:
        """The economics of a configured product line (the default line if it has none)."""
        return self.lines.get(name, self.default_line)


BANK = Industry(
    name="bank",
    groups={
        "high": Group(0.05, 0.40, 300_000.0, 3.6, 400.0, 12_000.0, (3, 4), 0.02, 0.25),
        "medium": Group(0.25, 0.40, 30_000.0, 1.9, 120.0, 4_500.0, (2, 3), 0.05, 0.15),
        "low": Group(0.70, 0.20, 3_000.0, 0.5, 40.0, 1_800.0, (1, 2), 0.18, 0.08),
    },
    lines={
        "demand_deposit": Line(20.0, 0.35, 0.020, 0.004, 1.0, None),
        "time_deposit": Line(3.0, 0.40, 0.015, 0.002, 0.5, None),
        "loan": Line(2.5, 0.50, 0.035, 0.010, 2.0, 1.3),
        "wealth": Line(2.0, 0.50, 0.015, 0.002, 0.5, None),
        "card": Line(3.0, 0.06, 0.150, 0.030, 1.5, 3.0),
        "fee_other": Line(2.0, 0.02, 0.300, 0.050, 0.3, None),
    },
    default_line=Line(2.0, 0.10, 0.020, 0.005, 0.5, None),
    customer_types=("individual", "enterprise"),
    channels=("branch", "online", "partner", "campaign"),
    channel_shares=(0.35, 0.30, 0.15, 0.20),
    channel_cac=(120.0, 35.0, 80.0, 150.0),
    survey_channels=("app", "email", "phone", "branch"),
    survey_channel_shares=(0.4, 0.3, 0.2, 0.1),
    transfer_share=(0.35, 0.15),
    credit_share=0.45,
    limit_digits=-2,
    min_limit=100.0,
)

# A subscriber's balance level is the monthly plan base of all lines; voice and data bill a
# little over their base (usage beyond the plan), device_instalment's balance is the
# outstanding handset debt, repaid over about 24 months (income = the instalment).
TELECOM = Industry(
    name="telecom",
    groups={
        "high": Group(0.10, 0.45, 240.0, 1.3, 90.0, 180.0, (3, 5), 0.02, 0.25),
        "medium": Group(0.30, 0.40, 90.0, 1.0, 40.0, 70.0, (3, 4), 0.05, 0.15),
        "low": Group(0.60, 0.15, 34.0, 0.8, 15.0, 25.0, (2, 3), 0.15, 0.08),
    },
    lines={
        "voice": Line(60.0, 0.40, 12.6, 3.0, 0.8, 3.0),
        "data": Line(60.0, 0.45, 13.2, 3.6, 0.8, None),
        "sms": Line(6.0, 0.06, 12.0, 1.8, 0.1, None),
        "value_added": Line(4.0, 0.10, 12.0, 6.0, 0.2, None),
        "device_instalment": Line(2.5, 4.00, 0.5, 0.45, 0.5, 1.0),
    },
    default_line=Line(2.0, 0.10, 12.0, 4.8, 0.3, None),
    customer_types=("individual", "enterprise"),
    channels=("store", "online", "dealer", "telesales"),
    channel_shares=(0.35, 0.25, 0.25, 0.15),
    channel_cac=(180.0, 40.0, 120.0, 90.0),  # a subsidised handset makes store/dealer dear
    survey_channels=("app", "sms", "call_centre", "store"),
    survey_channel_shares=(0.4, 0.3, 0.2, 0.1),
    transfer_share=(0.20, 0.05),
    credit_share=None,
    limit_digits=-1,
    min_limit=20.0,
    tariffs=Tariffs(
        plans={"prepaid_basic": "prepaid", "prepaid_data": "prepaid",
               "postpaid_standard": "postpaid", "postpaid_unlimited": "postpaid",
               "family_share": "postpaid", "corporate": "postpaid"},
        by_group={"high": (0.02, 0.08, 0.30, 0.60), "medium": (0.15, 0.30, 0.45, 0.10),
                  "low": (0.50, 0.30, 0.18, 0.02)},
        family_plan="family_share",
        family_share=0.85,
        corporate_plan="corporate",
        corporate_share=0.90,
        anchor_plan="postpaid_standard",
        methods=("direct_debit", "card", "cash", "voucher"),
        method_shares=(0.55, 0.30, 0.10, 0.05),
        risky_method_shares=(0.10, 0.15, 0.45, 0.30),
        usual_method=0.85,
        write_off_days=90,
    ),
)

INDUSTRIES: dict[str, Industry] = {"bank": BANK, "telecom": TELECOM}

"""Output tables: names, descriptions and a comment for every column.

The Delta writer refuses to write a column that has no comment here, so BI users always see
what a column means. Columns whose names follow a pattern (``income_3m``,
``avg_balance_loan_12m``) are described by the patterns below.
"""

from __future__ import annotations

import re

# A row of the model_metrics table as the models produce it: (model, scope, metric, value).
MetricRow = tuple[str, str, str, float]

# The lifecycle stages (segments.tiers.lifecycle_stage), in funnel order (the report's).
LIFECYCLE_STAGES = ("potential", "new", "growing", "stable", "fluctuating", "churn_risk",
                    "dormant")
# The seed's names of the stages (seed 001: 潜在, 新, 成长, 稳定, 波动, 流失倾向, 历史/离网).
LIFECYCLE_LABELS_ZH = dict(zip(LIFECYCLE_STAGES, ("潜在", "新", "成长", "稳定", "波动",
                                                  "流失风险", "休眠/离网"), strict=True))

TABLE_DESCRIPTIONS: dict[str, str] = {
    "features": "Per-account window features as of the snapshot month end (spec section 2).",
    "rfm": "Per-account RFM scores, codes and segments, plus buy-till-you-die summary "
           "columns (spec section 3).",
    "quarantine": "Input rows rejected by validation, with the table, the reason code and "
                  "the original row as JSON.",
    "value_scores": "Per-account value components, credit, loyalty, elasticity and lifetime "
                    "value (spec sections 4 to 6).",
    "tiers": "Per-account ABC class, lifecycle stage, value tier with channel and service "
             "level, value x risk and value x growth quadrants (spec section 7).",
    "campaign_targets": "One row per account and campaign whose rule matched, with the reason.",
    "model_metrics": "Fitted parameters, weights and quality metrics of the models of a run "
                     "(long format: model, scope, metric, value).",
    "tier_summary": "Accounts and value per snapshot, tier, RFM segment and ABC class (BI "
                    "aggregate).",
    "kpi_summary": "Company-level KPIs per snapshot (spec section 9): acquisition cost (CAC) "
                   "per channel and acquisition month, CAC, CLV, CLV / CAC and payback "
                   "months per channel, tier and overall; CSAT and NPS per tier, RFM segment, "
                   "lifecycle stage and overall (optional surveys input); one row per group "
                   "and KPI, with the accounts or responses behind each figure.",
    "run_log": "One row per input table, output table and stage of every run of a snapshot: "
               "row counts read / quarantined / written, stage durations, config hash and "
               "code version. Appended (keeps every run), written last.",
}

_FIXED: dict[str, str] = {
    # keys and slicing attributes
    "snapshot_month": "First day of the month the snapshot is taken as of (partition column).",
    "account_id": "Account identifier from the accounts table.",
    "account_key": "Pseudonymous account key: HMAC-SHA256 of account_id under the pseudonym "
                   "key (privacy.pseudonymise), lower-case hex; the same account has the same "
                   "key in every table and snapshot written with that key.",
    "customer_type": "Customer type from the accounts table (e.g. individual, enterprise).",
    "region": "Region from the accounts table.",
    "acquisition_channel": "Acquisition channel from the accounts table.",
    "open_date": "Date the account was opened.",
    "close_date": "Date the account was closed; null while open.",
    "is_closed": "True when the account was closed on or before the snapshot month end.",
    "tenure_months": "Whole months from open_date to the snapshot month end (to close_date "
                     "for closed accounts).",
    # transactions
    "recency_days": "Days from the last transaction to the snapshot month end; null if the "
                    "account never transacted.",
    "last_txn_date": "Date of the last transaction on or before the snapshot month end.",
    "first_txn_date": "Date of the first transaction on or before the snapshot month end.",
    # monthly facts
    "product_count": "Product lines held in the snapshot month (balance or income > 0).",
    # rfm
    "frequency": "Transactions in the RFM window (rfm.window_months).",
    "monetary": "Sum of transaction amounts in the RFM window.",
    "r_score": "Recency score rfm.lowest_score (1) .. + rfm.bins - 1 (higher = more recent); "
               "the lowest when never active.",
    "f_score": "Frequency score (rfm.lowest_score and up); the lowest when no transaction in "
               "the window.",
    "m_score": "Monetary score (rfm.lowest_score and up); the lowest when no transaction in "
               "the window.",
    "rfm_code": "R, F and M scores as one string, e.g. '545' (telecom, scores 0..3: '033').",
    "rfm_score": "r_score + f_score + m_score.",
    "segment": "Named RFM segment from the first matching rule in rfm.segments.",
    "btyd_frequency": "Buy-till-you-die frequency: days with a purchase minus one (repeat "
                      "purchase days), lifetimes convention; null if never active.",
    "btyd_recency": "Days between the first and the last purchase day.",
    "btyd_t": "Days between the first purchase day and the snapshot month end (T).",
    "btyd_monetary": "Mean purchase-day amount over repeat purchase days (first day excluded); "
                     "0 when btyd_frequency is 0.",
    # value scores
    "current_value": "Profit (income - cost) over the last value.current_months months.",
    "historical_value": "Decayed profit from opening to the start of the current window: "
                        "historical_observed + historical_backfill.",
    "historical_observed": "Decayed profit of the months with monthly facts before the current "
                           "window (a month k years before it weighs decay^(k+1)).",
    "historical_backfill": "A0 times the decay weights of the months between opening and the "
                           "first month of data (0 when the data reaches back to opening).",
    "a0_monthly_profit": "A0: mean monthly profit over the earliest value.backfill_months months "
                         "of data; null when no back-fill applies.",
    "backfill_months": "Months between opening and the first month of data, before the window.",
    "influence_enterprise": "Current value of the employer account(s) the account is linked to.",
    "influence_family": "Current value of the accounts linked by family relations.",
    "influence_radiation": "Credit transfers received in the current window from counterparties "
                           "with at least value.radiation_min_transfers transfers.",
    "influence_value": "w1 * enterprise + w2 * family + w3 * radiation (value.influence_weights).",
    "future_value": "Predicted income over the next future_value.horizon_months months.",
    "fv_cluster": "Future-value cluster, named from its centroid (high_value, ...).",
    "contribution_value": "Weighted sum of the 0..100 percentiles of historical, current, "
                          "influence and future value (value.contribution_weights).",
    "contribution_money": "The contribution weights applied to historical, current, influence "
                          "and future value in currency (nulls as 0): what ABC classes are "
                          "cut on by default (tiers.abc.measure).",
    # credit, loyalty, elasticity (docs/quality.md)
    "credit_score": "Scorecard credit score of the snapshot month (credit.scorecard); null "
                    "without a credit row that month.",
    "credit_grade": "Credit grade A..E of the snapshot month (credit.grades).",
    "overdue_amount": "Arrears of the snapshot month (credit.overdue_amount); null without a "
                      "credit row that month.",
    "payment_method": "How the account paid in its latest credit month that names one (the "
                      "optional credit.payment_method; null when the source has none).",
    "bad_debt": "A credit month written off as bad debt within credit.delinquency_months "
                "(the optional credit.bad_debt; null when the source has none).",
    "loyalty_score": "Composite loyalty score (0..100): entropy-weighted dimension scores.",
    "loyalty_band": "Loyalty band by rank: high (top 10%), fairly_high, average, low.",
    "income_prev": "Income in the previous elasticity period.",
    "income_cur": "Income in the current elasticity period.",
    "spend_prev": "Marketing spend in the previous elasticity period.",
    "spend_cur": "Marketing spend in the current elasticity period.",
    "elasticity": "Value elasticity E = (dQ/Q) / (dP/P) (income vs marketing spend).",
    "elasticity_class": "elastic (|E| > 1), unit, inelastic or undefined (spend unchanged or "
                        "no base).",
    "return_on_spend": "Income / marketing spend over the current period.",
    # lifetime value (docs/clv.md)
    "clv_simple": "Simple CLV = (mean spend per purchase / mean days between purchases) * "
                  "clv.lifetime_days.",
    "expected_purchases": "BG/NBD expected purchase days over the clv horizon.",
    "prob_alive": "BG/NBD probability that the account is still active.",
    "expected_avg_value": "Gamma-Gamma expected mean purchase-day amount.",
    "clv_discounted": "Discounted CLV over the clv horizon (BG/NBD x Gamma-Gamma).",
    # tiers
    "abc_class": "Pareto class on tiers.abc.measure (contribution_money by default): A = the "
                 "accounts carrying the top tiers.abc.a_share of the total, B = up to "
                 "b_share, C = the rest.",
    "value_level": "high / medium / low from contribution_value_pct and tiers.*_value_pct.",
    "lifecycle_stage": f"{', '.join(LIFECYCLE_STAGES[:-1])} or {LIFECYCLE_STAGES[-1]} "
                       "(rules in tiers.lifecycle).",
    "tier": "Value tier from the first matching rule of tiers.tiers.",
    "tier_label_en": "Display label of the tier (English).",
    "tier_label_zh": "Display label of the tier (Chinese).",
    "contact_channel": "How the bank contacts accounts of this tier.",
    "service_level": "Service level of the tier.",
    "tier_reason": "Why the account got its tier: its value level, loyalty and credit, and "
                   "which condition of the tier above failed.",
    "value_risk_quadrant": "<high|low>_value_<high|low>_risk (high risk = a risky credit "
                           "grade or a risk reason).",
    "arpu_class": "ARPU contribution class (tiers.arpu_classes on arpu_<tiers."
                  "arpu_class_months>m); null without classes or without ARPU.",
    "risk_reasons": "The risk reasons that hold (tiers.risk_customers.reasons, '; '-joined in "
                    "config order); null when none does.",
    "risk_customer": "A risk customer: value level in tiers.risk_customers.value_levels and "
                     "at least one risk reason.",
    "value_risk_label": "Label of the value x risk quadrant.",
    "value_risk_strategy": "Strategy of the value x risk quadrant.",
    "value_growth_quadrant": "<high|low>_value_<high|low>_growth (BCG style).",
    "value_growth_label": "star, cash_cow, question_mark or dog.",
    "value_growth_strategy": "Strategy of the value x growth quadrant.",
    # campaigns
    "campaign": "Campaign name (tiers.campaigns[].name).",
    # model metrics
    "model": "Model or method (future_value, bgnbd, gamma_gamma, loyalty, ...).",
    "scope": "What the metric is about: overall, a cluster, a dimension.",
    "metric": "Metric or parameter name.",
    "value": "Numeric value of the metric.",
    # tier summary
    "accounts": "Number of accounts.",
    "total_contribution_value": "Sum of contribution_value.",
    "mean_contribution_value": "Mean contribution_value.",
    "total_contribution_money": "Sum of contribution_money (currency).",
    "mean_contribution_money": "Mean contribution_money (currency per account).",
    "share_of_accounts": "The row's accounts / all accounts of the snapshot (a tier's share "
                         "of accounts is the sum over its rows).",
    "share_of_contribution_money": "The row's total_contribution_money / the snapshot's "
                                   "(a tier's share of the money is the sum over its rows); "
                                   "null when the snapshot's total is 0.",
    "total_current_value": "Sum of current_value.",
    "mean_current_value": "Mean current_value.",
    "total_future_value": "Sum of future_value.",
    # kpi summary
    "dimension": "What the rows are grouped by: acquisition_channel_month, "
                 "acquisition_channel, tier, segment, lifecycle_stage or all.",
    "group_name": "The group: a channel ((unknown) when the account has none), a tier, an RFM "
                  "segment, a lifecycle stage, or all.",
    "period_month": "First day of the acquisition month (acquisition_channel_month rows), "
                    "else null.",
    "kpi": "new_accounts, accounts, cac (mean acquisition cost), clv (mean lifetime value), "
           "clv_cac_ratio, payback_months (cac / mean monthly contribution; null when that is "
           "not positive); responses, csat (mean 1..5), nps (% 9-10 minus % 0-6).",
    "base": "Accounts behind the figure (for cost-based KPIs: accounts with a known "
            "acquisition cost; for csat and nps: the responses that answer the question).",
    "small_group": "True when base < kpi.min_group_size: the figure rests on few accounts.",
    # quarantine
    "source_table": "Input table the row was read from.",
    "reason": "Quarantine: reason code (docs/data-contract.md). Campaign targets: why the "
              "account was targeted, with the values of the rule's columns.",
    "row_json": "The original row as read, as JSON (values after reading, before casting); "
                "for a CSV line that did not parse, also its text under _malformed_line. "
                "With privacy.pseudonymise: contract columns only, account identifiers "
                "replaced by their account_key, personal attributes left out (so no "
                "_malformed_line).",
    "run_id": "Identifier of the run that wrote the row.",
    # run log
    "run_seq": "Run number within the snapshot: 1 for the first run logged for the month, "
               "then 1 + the highest logged before (re-runs keep their history).",
    "run_started_at": "When the run started (UTC), as passed in by the caller (cvm run); "
                      "metadata only, null when not given.",
    "config_fingerprint": "Hash of the effective configuration (CvmConfig.fingerprint()).",
    "code_version": "Version of the cvm_spark package that ran.",
    "git_commit": "Git commit of the code that ran ('-dirty' when it had local changes); "
                  "null when not known (no git, installed from a zip or wheel).",
    "item_kind": "What the row is about: input (an input table), output (an output table) "
                 "or stage (a pipeline stage).",
    "item_name": "Name of the input table, output table or stage.",
    "stage": "Pipeline stage: the stage itself on a stage row, the stage that read (input) "
             "or wrote (output) the table on a table row.",
    "rows_in": "Input rows read (input rows); null otherwise.",
    "rows_quarantined": "Input rows rejected by validation and written to quarantine (input "
                        "rows); null otherwise.",
    "rows_out": "Input rows accepted (input rows) or rows written (output rows); null on "
                "stage rows.",
    "stage_seconds": "Wall-clock seconds the stage took (stage rows); null otherwise.",
}

_PATTERNS: list[tuple[str, str]] = [
    (r"credit_grade_(\d+)m", "Credit grade rolled up over the last {0} monthly grades "
                             "(credit.rollup_rule)."),
    (r"max_dpd_(\d+)m", "Maximum days past due over the last {0} months."),
    (r"delinquent_months_(\d+)m", "Months with days past due > 0 in the last {0} months."),
    (r"loyalty_(\w+)", "Loyalty dimension score {0} (0..100): PCA-weighted standardised "
                       "indicators, min-max scaled."),
    (r"(\w+)_pct", "{0} as an approximate percentile rank on 0..100 (ties share the mid-rank)."),
    (r"current_value_(\w+)", "Current value of product-line group {0} (value.product_groups)."),
    (r"future_value_(\w+)", "Future value of product-line group {0}: future_value split by the "
                            "group's share of the account's income over the last "
                            "future_value.horizon_months months; null without income then."),
    (r"elasticity_class_(\w+)", "Elasticity class of product-line group {0} (as "
                                "elasticity_class)."),
    (r"elasticity_(\w+)", "Income elasticity of product-line group {0} to the account's "
                          "marketing spend: (dQ_g/Q_g) / (dP/P); null when undefined."),
    (r"active_months_(\d+)m", "Months of the last {0} with at least one transaction."),
    (r"income_trend_(\d+)m", "OLS slope of monthly income (currency per month) over the months "
                             "the account was open in the last {0}; null with fewer than 2."),
    (r"income_volatility_(\d+)m", "Coefficient of variation (population std / mean) of monthly "
                                  "income over the months open in the last {0}; null when the "
                                  "mean is not positive or fewer than 2 months."),
    (r"frequency_(\d+)m", "Number of transactions in the last {0} month(s) up to the snapshot "
                          "month end."),
    (r"monetary_(\d+)m", "Sum of transaction amounts in the last {0} month(s)."),
    (r"avg_ticket_(\d+)m", "monetary_{0}m / frequency_{0}m; null without transactions."),
    (r"income_(\d+)m", "Income (all product lines) in the last {0} month(s)."),
    (r"cost_(\d+)m", "Cost (all product lines) in the last {0} month(s)."),
    (r"profit_(\d+)m", "income_{0}m - cost_{0}m."),
    (r"arpu_(\d+)m", "income_{0}m divided by the months the account was open in the window "
                     "(not by {0} when the account is younger); null when open 0 months."),
    (r"months_open_(\d+)m", "Months of the last {0} during which the account was open."),
    (r"avg_balance_(\w+?)_(\d+)m", "Average monthly balance of product line {0} over the months "
                                   "open in the last {1} month(s) (a month without a row counts "
                                   "as 0)."),
]


def column_comment(column: str) -> str | None:
    """The comment for an output column, or None when it is not documented."""
    if column in _FIXED:
        return _FIXED[column]
    for pattern, text in _PATTERNS:
        match = re.fullmatch(pattern, column)
        if match:
            return text.format(*match.groups())
    return None

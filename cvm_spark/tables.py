"""Output tables: names, descriptions and a comment for every column.

The Delta writer refuses to write a column that has no comment here, so BI users always see
what a column means. Columns whose names follow a pattern (``income_3m``,
``avg_balance_loan_12m``) are described by the patterns below.
"""

from __future__ import annotations

import re

TABLE_DESCRIPTIONS: dict[str, str] = {
    "features": "Per-account window features as of the snapshot month end (spec section 2).",
    "rfm": "Per-account RFM scores, codes and segments, plus buy-till-you-die summary "
           "columns (spec section 3).",
    "quarantine": "Input rows rejected by validation, with the table, the reason code and "
                  "the original row as JSON.",
}

_FIXED: dict[str, str] = {
    # keys and slicing attributes
    "snapshot_month": "First day of the month the snapshot is taken as of (partition column).",
    "account_id": "Account identifier from the accounts table.",
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
    "r_score": "Recency score 1..rfm.bins (higher = more recent); 1 when never active.",
    "f_score": "Frequency score 1..rfm.bins; 1 when no transaction in the window.",
    "m_score": "Monetary score 1..rfm.bins; 1 when no transaction in the window.",
    "rfm_code": "R, F and M scores as one string, e.g. '545'.",
    "rfm_score": "r_score + f_score + m_score.",
    "segment": "Named RFM segment from the first matching rule in rfm.segments.",
    "btyd_frequency": "Buy-till-you-die frequency: days with a purchase minus one (repeat "
                      "purchase days), lifetimes convention; null if never active.",
    "btyd_recency": "Days between the first and the last purchase day.",
    "btyd_t": "Days between the first purchase day and the snapshot month end (T).",
    "btyd_monetary": "Mean purchase-day amount over repeat purchase days (first day excluded); "
                     "0 when btyd_frequency is 0.",
    # quarantine
    "source_table": "Input table the row was read from.",
    "reason": "Reason code (see docs/data-contract.md).",
    "row_json": "The original row as read, as JSON (values after reading, before casting).",
    "run_id": "Identifier of the run that wrote the row.",
}

_PATTERNS: list[tuple[str, str]] = [
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

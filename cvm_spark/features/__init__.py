"""Per-account features of a snapshot: the window features over the monthly facts and
the transactions (``windows``), RFM scores and the BTYD summary (``rfm``).

May import: ``common``, ``schemas``, ``config``.
"""

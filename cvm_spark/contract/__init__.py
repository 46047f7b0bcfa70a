"""The input contract: reading the inputs, checking their schemas and classifying every
row as accepted or quarantined with a reason (docs/data-contract.md).

May import: ``common``, ``schemas``, ``config``.
"""

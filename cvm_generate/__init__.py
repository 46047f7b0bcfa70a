"""cvm_generate: seeded synthetic data for cvm_spark, of a bank or a telecom operator
(``generator.profile``): the seven input tables of the data contract, with planted ground
truth and every kind of bad row (docs/generator.md); or a purchase log
(``generator.profile: purchases``, :mod:`cvm_generate.purchases`).

It sits beside ``cvm_spark`` in the same distribution but outside the job's ``--py-files``
zip: the scoring job never needs it. ``cvm generate`` and ``cvm run --generate`` reach it
through ``cvm_spark.cli`` (the only module of ``cvm_spark`` that imports it), and
``cvm submit`` ships it as a zip of its own for those two commands only. It imports from
``cvm_spark`` only the config and the input schemas.
"""

from cvm_generate.bank import generate_tables, write_sample, write_tables
from cvm_generate.profile import (
    BAD_KINDS,
    BAD_ROW_REASONS,
    GROUPS,
    INDUSTRIES,
    PATTERNS,
    PLANTED_GROUP,
    PLANTED_PATTERN,
)
from cvm_generate.purchases import generate_purchase_log, write_purchase_log

__all__ = ["BAD_KINDS", "BAD_ROW_REASONS", "GROUPS", "INDUSTRIES", "PATTERNS", "PLANTED_GROUP",
           "PLANTED_PATTERN", "generate_purchase_log", "generate_tables", "write_purchase_log",
           "write_sample", "write_tables"]

"""The value models of the spec, each fit -> fitted parameters -> score: value components
(``value``), future value (``future_value``), lifetime value (``clv``), credit grades
(``credit``), loyalty (``loyalty``) and elasticity (``elasticity``).

May import: ``common``, ``schemas``, ``config``, ``features``.
"""

"""Segments of the scored accounts: ABC classes, lifecycle stages, value tiers, the
value x risk and value x growth quadrants and campaign targets (``tiers``).

May import: ``common``, ``schemas``, ``config``.
"""

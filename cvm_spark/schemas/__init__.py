"""What the data looks like: the input tables' schemas (``inputs``) and the output tables'
names, descriptions and column comments (``outputs``).

May import: ``common``.
"""

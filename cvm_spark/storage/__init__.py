"""The warehouse: the one Delta writer and reader (``delta``), the warehouse layout and
its locks (``locking``), the run's work area (``workarea``) and pseudonymisation
(``privacy``).

May import: ``common``, ``schemas``, ``config``.
"""

"""One snapshot run: the shared pass over the inputs (``facts``), the model stage
(``scoring``), the runner that orders, times and writes the stages (``runner``), the run
log (``run_log``) and event-log profiling (``profiling``).

May import every package above it: ``common``, ``schemas``, ``config``, ``contract``,
``features``, ``models``, ``segments``, ``storage``.
"""

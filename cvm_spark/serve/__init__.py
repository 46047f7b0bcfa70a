"""What reads the written tables or ships the job: the HTML run report (``report``), the
Thrift JDBC server (``thrift``) and packaging for spark-submit (``submit``).

May import: ``common``, ``schemas``, ``config``, ``storage``, ``pipeline``.
"""

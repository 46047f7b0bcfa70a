"""Building blocks with no knowledge of the model: month arithmetic, population cut
points (approximate quantiles), stage timing and the Spark session.

Imports nothing else of ``cvm_spark``.
"""

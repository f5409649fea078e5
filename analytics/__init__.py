"""Analytics (issue 13): the engine that counts every event once, the Parquet archive, reports.

docs/analytics.md describes the events, the aggregates, the archive layout and how to query it.
"""

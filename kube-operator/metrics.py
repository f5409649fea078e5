"""Prometheus metrics of the operator (scraped from ``--metrics-port``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("parley_operator_reconciles_total", "Reconciles run", ["kind"])
ERRORS = Counter("parley_operator_reconcile_errors_total", "Reconciles that failed", ["kind"])
LATENCY = Histogram("parley_operator_reconcile_seconds", "Reconcile duration", ["kind"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
MANAGED = Gauge("parley_operator_managed", "Resources the operator manages", ["kind"])
POOL_REPLICAS = Gauge("parley_operator_pool_replicas", "Call-server pool size",
                      ["namespace", "region", "state"])
POOL_RESERVED = Gauge("parley_operator_pool_reserved_participants",
                      "Participants reserved in a call-server pool", ["namespace", "region"])
EDGE_REPLICAS = Gauge("parley_operator_edge_replicas", "Edge-relay replicas asked for",
                      ["namespace", "broadcast", "region"])
FILE_CREATOR_JOBS = Counter("parley_operator_file_creator_jobs_total",
                            "File-creator Jobs created (one per stopped recording)")
RECORDINGS_PENDING = Gauge("parley_operator_recordings_pending",
                           "Stopped recordings whose files are not ready or failed yet")
LEADER = Gauge("parley_operator_leader", "1 while this replica holds the leader lease")


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    """Count and time one reconcile; count it as an error if it raises."""
    start = time.perf_counter()
    RECONCILES.labels(kind).inc()
    try:
        yield
    except Exception:
        ERRORS.labels(kind).inc()
        raise
    finally:
        LATENCY.labels(kind).observe(time.perf_counter() - start)


def serve(port: int) -> None:
    if port > 0:
        start_http_server(port)

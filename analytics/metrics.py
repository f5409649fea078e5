"""Prometheus view of the aggregates, read from the shared state at scrape time.

Every instance exports the same figures (they come from the one state store), so dashboards use
``max by (...)`` over instances, never ``sum``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from parley.analytics.series import ENDED, totals
from parley.analytics.state import State

log = logging.getLogger("parley.analytics.metrics")


class AggregateCollector:
    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        try:
            figures = totals(self.state)
        except Exception as exc:  # a scrape never fails because the state is unreachable
            log.warning("analytics state unreadable: %s", exc)
            return
        events = CounterMetricFamily("parley_analytics_events",
                                     "Events counted, by type, region and device class",
                                     labels=["type", "region", "device"])
        metric = CounterMetricFamily("parley_analytics_aggregate",
                                     "All-time aggregate counters (joined, dropped, "
                                     "calls_started, outcome.*, media_ms_*, ...)",
                                     labels=["metric", "region", "device"])
        present = GaugeMetricFamily("parley_analytics_participants",
                                    "Participants present now (joined minus left or dropped)",
                                    labels=["region", "device"])
        now: dict[tuple[str, str], int] = {}
        for (name, region, device), v in sorted(figures.items()):
            if name.startswith("events."):
                events.add_metric([name.removeprefix("events."), region, device], v)
            else:
                metric.add_metric([name, region, device], v)
            if name == "joined" or name in ENDED:
                now[region, device] = now.get((region, device), 0) + (
                    v if name == "joined" else -v)
        for (region, device), v in sorted(now.items()):
            present.add_metric([region, device], max(v, 0))
        yield events
        yield metric
        yield present

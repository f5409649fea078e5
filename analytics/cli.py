"""The `parley analytics` subcommand's arguments (no heavy imports: `parley --help` stays fast)."""

from __future__ import annotations

import os
from typing import Any


def add_parser(sub: Any) -> None:
    """The `parley analytics` subcommand (called from parley/cli.py)."""
    from parley.cli import _lazy

    p = sub.add_parser("analytics", help="run the analytics engine, or query its archive")
    p.add_argument("query", nargs="?", choices=["query"], help="query the Parquet archive")
    p.add_argument("sql", nargs="?", help="SQL over the view `events` (with `query`)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--kafka", default=None, help="bootstrap servers ($PARLEY_KAFKA_BOOTSTRAP)")
    p.add_argument("--topic", default=None, help="($PARLEY_KAFKA_TOPIC)")
    p.add_argument("--group", default="parley-analytics", help="Kafka consumer group")
    p.add_argument("--jsonl", default=None, help="tail this JSONL event file instead of Kafka")
    p.add_argument("--state", default=None, help="redis://... or sqlite:///path")
    p.add_argument("--prefix", default=os.environ.get("PARLEY_ANALYTICS_PREFIX", "analytics:"),
                   help="key prefix in Redis ($PARLEY_ANALYTICS_PREFIX)")
    p.add_argument("--archive", default=None, help="store URL: file:///dir or s3://bucket/prefix")
    p.add_argument("--retention-days", type=int,
                   default=int(os.environ.get("PARLEY_ANALYTICS_RETENTION_DAYS") or 90))
    p.add_argument("--flush-seconds", type=float, default=10.0,
                   help="how often queued events are written to Parquet")
    p.add_argument("--metrics-port", type=int, default=None)
    p.add_argument("--once", action="store_true", help="stop when nothing is left to read")
    p.set_defaults(func=_lazy("parley.analytics.engine"))

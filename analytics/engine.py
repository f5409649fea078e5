"""`parley analytics`: read every event once, count it, archive it.

Two sources, one loop (``Engine.step``): a Kafka consumer group on the events topic (several
instances share its partitions; offsets are committed only after the batch's counters are
stored), or the JSONL file `parley up` writes (the byte offset is stored in the same
transaction as the counters). Either way a replayed event is recognised by its id and not
counted again, so a crash at any point leaves every aggregate exact.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from prometheus_client import Counter

from parley.analytics.archive import Archive
from parley.analytics.model import Event, Malformed, parse
from parley.analytics.state import State, open_state
from parley.recorder.store import open_store

log = logging.getLogger("parley.analytics")

CONSUMED = Counter("parley_analytics_consumed_total", "Events read by this engine instance")
COUNTED = Counter("parley_analytics_counted_total", "Events counted for the first time")
DUPLICATES = Counter("parley_analytics_duplicates_total",
                     "Events skipped because their id was already counted")
MALFORMED = Counter("parley_analytics_malformed_total", "Messages that are not events",
                    ["reason"])
ARCHIVED = Counter("parley_analytics_archived_total", "Events written to the Parquet archive")
BATCH = 2000


class Source(Protocol):
    def read(self) -> list[bytes]: ...
    def done(self) -> tuple[str, str] | None: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


class KafkaSource:
    """A member of consumer group ``group``; no auto-commit: ``commit`` after the state."""

    def __init__(self, bootstrap: str, topic: str, group: str,
                 session_timeout_ms: int = 6000) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms, "heartbeat.interval.ms": 1000,
            "partition.assignment.strategy": "cooperative-sticky",
            "log_level": 3,
        })
        self.consumer.subscribe([topic])
        self._pending = False

    def read(self) -> list[bytes]:
        out = []
        for msg in self.consumer.consume(num_messages=BATCH, timeout=0.5):
            if msg.error():
                log.warning("kafka: %s", msg.error())
                continue
            out.append(msg.value() or b"")
        self._pending = self._pending or bool(out)
        return out

    def done(self) -> tuple[str, str] | None:
        return None  # the position lives in Kafka

    def commit(self) -> None:
        from confluent_kafka import KafkaException

        if not self._pending:
            return
        try:
            self.consumer.commit(asynchronous=False)
            self._pending = False
        except KafkaException as exc:  # e.g. the partitions moved: the new owner replays
            log.info("commit skipped: %s", exc)

    def close(self) -> None:
        self.consumer.close()


class JsonlSource:
    """Tails a JSONL file from the offset stored with the counters; reads whole lines only."""

    def __init__(self, path: Path, state: State) -> None:
        self.path, self.name = path, f"jsonl:{path.resolve()}"
        self.offset = int(state.cursor(self.name) or 0)
        self._next = self.offset

    def read(self) -> list[bytes]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # truncated or replaced: start again (ids prevent recounting)
            self.offset = self._next = 0
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(4 << 20)
        end = chunk.rfind(b"\n") + 1
        lines = chunk[:end].splitlines()
        self._next = self.offset + end
        return [line for line in lines if line.strip()]

    def done(self) -> tuple[str, str] | None:
        return self.name, str(self._next)

    def commit(self) -> None:
        self.offset = self._next  # already stored with the counters

    def close(self) -> None:
        pass


class Engine:
    def __init__(self, source: Source, state: State, archive: Archive | None,
                 flush_every_s: float = 10.0, crash_after: int = 0) -> None:
        self.source, self.state, self.archive = source, state, archive
        self.flush_every_s = flush_every_s
        self.crash_after = crash_after  # fault injection for tests: SIGKILL after N batches
        self.batches = 0
        self._last_flush = time.monotonic()
        self._last_expire = 0.0
        self.stop = threading.Event()

    def step(self) -> int:
        """Read, count and store one batch; returns how many messages were read."""
        raw = self.source.read()
        events: list[Event] = []
        for payload in raw:
            try:
                events.append(parse(payload))
            except Malformed as exc:
                MALFORMED.labels(str(exc).split(":")[0][:20]).inc()
        CONSUMED.inc(len(raw))
        cursor = self.source.done()
        if events or (cursor is not None and raw):
            new, dup = self.state.apply(events, cursor)
            COUNTED.inc(new)
            DUPLICATES.inc(dup)
            self.batches += 1
            if self.crash_after and self.batches >= self.crash_after:
                os.kill(os.getpid(), signal.SIGKILL)  # stored, not yet committed
        self.source.commit()
        self.housekeeping()
        return len(raw)

    def housekeeping(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.archive is not None and (force or now - self._last_flush >= self.flush_every_s):
            self._last_flush = now
            try:
                ARCHIVED.inc(self.archive.flush())
            except Exception:
                log.exception("archive flush failed (retried at the next one)")
        if now - self._last_expire >= 3600:
            self._last_expire = now
            try:
                self.state.expire()
                if self.archive is not None:
                    self.archive.enforce_retention()
            except Exception:
                log.exception("retention pass failed")

    def run(self, until_idle: bool = False, idle_sleep: float = 0.3) -> None:
        while not self.stop.is_set():
            if self.step() == 0:
                if until_idle:
                    break
                self.stop.wait(idle_sleep)
        self.housekeeping(force=True)


def default_state_url(data_dir: Path, redis_url: str | None, kafka: bool) -> str:
    """``PARLEY_ANALYTICS_STATE``, else Redis when the engine reads Kafka (shared by the
    instances), else ``<data_dir>/analytics.sqlite``."""
    if url := os.environ.get("PARLEY_ANALYTICS_STATE"):
        return url
    if kafka and redis_url:
        return redis_url
    return f"sqlite:///{(data_dir / 'analytics.sqlite').resolve()}"


def default_archive_url(data_dir: Path) -> str:
    return os.environ.get("PARLEY_ANALYTICS_ARCHIVE") or (data_dir / "archive").resolve().as_uri()


def embedded(data_dir: Path) -> Engine:
    """The engine of `parley up`: its JSONL file, SQLite state, a local archive."""
    state = open_state(default_state_url(data_dir, None, kafka=False))
    archive = Archive(open_store(default_archive_url(data_dir)), state,
                      int(os.environ.get("PARLEY_ANALYTICS_RETENTION_DAYS") or 90))
    return Engine(JsonlSource(data_dir / "events.jsonl", state), state, archive,
                  flush_every_s=float(os.environ.get("PARLEY_ANALYTICS_FLUSH_S") or 60))


def start_embedded(data_dir: Path) -> threading.Thread:
    """Run ``embedded`` on a daemon thread; analytics never holds up `parley up`."""
    def loop() -> None:
        try:
            embedded(data_dir).run()
        except Exception:
            log.exception("embedded analytics engine stopped")

    thread = threading.Thread(target=loop, name="analytics", daemon=True)
    thread.start()
    return thread


def run(args: argparse.Namespace) -> int:
    """`parley analytics` (engine) and `parley analytics query "SQL"`."""
    from parley.config import Settings

    settings = Settings.from_env(**({"data_dir": args.data_dir} if args.data_dir else {}))
    if getattr(args, "sql", None):
        from parley.analytics.archive import query

        try:
            print(query(args.archive or default_archive_url(settings.data_dir), args.sql))
        except Exception as exc:  # a bad query is the user's error: say it, exit 1
            print(f"parley analytics query: {exc}", file=sys.stderr)
            return 1
        return 0
    bootstrap = None if args.jsonl else (args.kafka or settings.kafka_bootstrap)
    state = open_state(args.state or default_state_url(
        settings.data_dir, settings.redis_url, kafka=bool(bootstrap)), args.prefix)
    archive = Archive(open_store(args.archive or default_archive_url(settings.data_dir)),
                      state, args.retention_days)
    source: Source
    if bootstrap:
        source = KafkaSource(bootstrap, args.topic or settings.kafka_topic, args.group)
    else:
        source = JsonlSource(Path(args.jsonl or settings.data_dir / "events.jsonl"), state)
    engine = Engine(source, state, archive, args.flush_seconds,
                    int(os.environ.get("PARLEY_ANALYTICS_CRASH_AFTER_BATCHES") or 0))
    if args.metrics_port:
        from prometheus_client import REGISTRY, start_http_server

        from parley.analytics.metrics import AggregateCollector

        REGISTRY.register(AggregateCollector(state))
        start_http_server(args.metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: engine.stop.set())
    print(f"parley analytics: {'kafka ' + bootstrap if bootstrap else 'jsonl'} -> "
          f"{state.url}, archive {archive.store.url}", flush=True)
    try:
        engine.run(until_idle=args.once)
    finally:
        source.close()
    return 0

"""Call and meeting events (schema ``parley/schemas/events.v1.json``) and where they go.

Events are analytics, never a dependency of a call: a sink must not block or raise into the
caller. The Kafka sink hands events to confluent-kafka's bounded in-memory queue and counts what
it has to drop (queue full, delivery failed) in ``parley_events_dropped_total``; the JSONL sink is
the embedded default.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import uuid
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter

SCHEMA_VERSION = 1
EVENT_TYPES = ("call.invited", "call.started", "call.ended", "participant.joined",
               "participant.left", "config.changed",
               # issue 13 (docs/analytics.md): lifecycle and client telemetry
               "participant.dropped", "call.failed", "topology.switched", "quality.sample",
               "client.info",
               # issue 14: chat metadata (never the text)
               "chat.message",
               # issue 12: the call server's layer choices for subscribers
               "layer.changed",
               # issue 13: recordings (signaling) and live broadcasts (the ingest)
               "recording.started", "recording.stopped", "recording.ready", "recording.failed",
               "broadcast.started", "broadcast.ended", "broadcast.source.connected",
               "broadcast.source.disconnected")
log = logging.getLogger("parley.events")

EVENTS_EMITTED = Counter("parley_events_emitted_total", "Events handed to a sink", ["type"])
EVENTS_DROPPED = Counter("parley_events_dropped_total",
                         "Events lost because the sink was full or unreachable",
                         ["sink", "reason"])


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("parley").joinpath(
        f"schemas/events.v{SCHEMA_VERSION}.json").read_text())


def validate(event: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``event`` does not match the schema."""
    import jsonschema

    jsonschema.validate(event, schema())


def make_event(etype: str, *, instance: str, data: dict[str, Any], room: str | None = None,
               call_id: str | None = None, region: str | None = None,
               event_id: str | None = None) -> dict[str, Any]:
    """The envelope; ``region`` (default ``$PARLEY_REGION``) lets analytics split by region.
    ``event_id``: a stable id for an event that a retry may emit again (a recording's
    ``recording.ready`` after a replica died), so analytics counts it once."""
    if etype not in EVENT_TYPES:
        raise ValueError(f"unknown event type {etype}")
    return {
        "version": SCHEMA_VERSION, "id": event_id or uuid.uuid4().hex, "type": etype,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"),
        "instance": instance, "region": region or os.environ.get("PARLEY_REGION") or "local",
        "room": room, "callId": call_id, "data": data,
    }


class EventSink(Protocol):
    def emit(self, event: dict[str, Any]) -> None: ...
    def poll(self) -> None: ...
    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per line; the embedded default (``<data_dir>/events.jsonl``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._fh = path.open("a", encoding="utf-8")

    def emit(self, event: dict[str, Any]) -> None:
        EVENTS_EMITTED.labels(event["type"]).inc()
        try:
            with self._lock:
                self._fh.write(json.dumps(event, separators=(",", ":")) + "\n")
                self._fh.flush()
        except OSError:
            EVENTS_DROPPED.labels("jsonl", "write_failed").inc()
            log.exception("cannot write event")

    def poll(self) -> None:
        pass

    def close(self) -> None:
        self._fh.close()


class KafkaSink:
    """confluent-kafka producer with a bounded queue; keyed by call id (or room) so one call's
    events stay in order on one partition."""

    def __init__(self, bootstrap: str, topic: str, max_buffered: int = 10000,
                 delivery_timeout_ms: int = 30000) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "queue.buffering.max.messages": max_buffered,
            "message.timeout.ms": delivery_timeout_ms,
            "linger.ms": 10,
            "enable.idempotence": True,  # retries never reorder or duplicate a call's events
            "socket.connection.setup.timeout.ms": 5000,
            "log_level": 3,
        })

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            EVENTS_DROPPED.labels("kafka", "delivery_failed").inc()
            log.warning("event not delivered: %s", err)

    def emit(self, event: dict[str, Any]) -> None:
        EVENTS_EMITTED.labels(event["type"]).inc()
        key = event.get("callId") or event.get("room") or ""
        try:
            self._producer.produce(self.topic, json.dumps(event, separators=(",", ":")).encode(),
                                   key.encode(),
                                   on_delivery=self._delivered)
        except BufferError:
            EVENTS_DROPPED.labels("kafka", "buffer_full").inc()
        except Exception:
            EVENTS_DROPPED.labels("kafka", "produce_failed").inc()
            log.exception("cannot produce event")
        self._producer.poll(0)

    def poll(self) -> None:
        self._producer.poll(0)

    def close(self, timeout_s: float = 3.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            EVENTS_DROPPED.labels("kafka", "shutdown").inc(remaining)


class Emitter:
    """Events from a component that has no signaling hub (a broadcast ingest): the sink is made
    from the environment on first use (Kafka with ``PARLEY_KAFKA_BOOTSTRAP``, else the JSONL
    file of ``PARLEY_DATA_DIR``) unless one is given; ``emit`` never raises."""

    def __init__(self, instance: str, sink: EventSink | None = None) -> None:
        self.instance, self.sink = instance, sink

    def emit(self, etype: str, *, data: dict[str, Any], room: str | None = None,
             event_id: str | None = None) -> None:
        try:
            if self.sink is None:
                from parley.config import Settings

                settings = Settings.from_env()
                self.sink = sink_for(settings.kafka_bootstrap, settings.kafka_topic,
                                     settings.data_dir)
            self.sink.emit(make_event(etype, instance=self.instance, data=data, room=room,
                                      event_id=event_id))
        except Exception:
            log.exception("event %s dropped", etype)


def sink_for(kafka_bootstrap: str | None, topic: str, data_dir: Path) -> EventSink:
    """Kafka when configured (``PARLEY_EVENTS_BUFFER`` bounds the queue,
    ``PARLEY_KAFKA_DELIVERY_TIMEOUT_MS`` how long an event may wait), else the JSONL file."""
    if kafka_bootstrap:
        return KafkaSink(kafka_bootstrap, topic,
                         max_buffered=int(os.environ.get("PARLEY_EVENTS_BUFFER") or 10000),
                         delivery_timeout_ms=int(
                             os.environ.get("PARLEY_KAFKA_DELIVERY_TIMEOUT_MS") or 30000))
    return JsonlSink(data_dir / "events.jsonl")

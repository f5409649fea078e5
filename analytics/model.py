"""What one event contributes to the aggregates: pure functions, no I/O.

Every contribution is a counter increment (``metric|region|device`` -> n) in the event's minute,
hour and all-time buckets. Counters commute, so the aggregates do not depend on the order in
which events arrive or on which engine instance counts them; concurrency is derived at read time
from the joined / ended counters (``series.py``), which keeps that exact too.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

HD_HEIGHT = 720  # a video sample at >= 720 lines counts as HD media time


class Malformed(ValueError):
    """An event the engine cannot count: it is skipped and counted in a metric."""


@dataclass(frozen=True)
class Event:
    """The envelope fields the engine needs plus the raw line (archived as-is)."""

    id: str
    type: str
    time: dt.datetime
    raw: dict[str, Any]
    line: str  # the event as received: archived without re-encoding

    @property
    def minute(self) -> str:
        t = self.time  # f-string: 10x faster than strftime, which showed in the profile
        return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}"

    @property
    def hour(self) -> str:
        t = self.time
        return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}"


def parse(payload: bytes | str | dict[str, Any]) -> Event:
    """The event in ``payload``; raise ``Malformed`` for anything not an event envelope."""
    try:
        if isinstance(payload, dict):
            raw, line = payload, json.dumps(payload, separators=(",", ":"))
        else:
            line = payload.decode() if isinstance(payload, bytes) else payload
            raw = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise Malformed("not an object")
    eid, etype, when = raw.get("id"), raw.get("type"), raw.get("time")
    if not (isinstance(eid, str) and 0 < len(eid) <= 128):
        raise Malformed("id: 1-128 characters")
    if not (isinstance(etype, str) and 0 < len(etype) <= 64):
        raise Malformed("type: 1-64 characters")
    if not isinstance(raw.get("data", {}), dict):
        raise Malformed("data: not an object")
    try:
        time = dt.datetime.fromisoformat(str(when))
    except ValueError:
        raise Malformed(f"time: not RFC 3339: {when!r}") from None
    time = time.replace(tzinfo=dt.UTC) if time.tzinfo is None else time.astimezone(dt.UTC)
    return Event(eid, etype, time, raw, line.strip())


def _label(value: Any) -> str:
    return value[:32].replace("|", "_") if isinstance(value, str) and value else "unknown"


def labels(event: Event) -> tuple[str, str]:
    """(region, device class) of an event: the envelope's region, the data's device."""
    data = event.raw.get("data") or {}
    return _label(event.raw.get("region") or data.get("region")), _label(data.get("device"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def counts(event: Event) -> dict[str, int]:
    """The metric increments of one event (before labels)."""
    data = event.raw.get("data") or {}
    out: dict[str, int] = {f"events.{_label(event.type)}": 1}

    def add(metric: str, n: int = 1) -> None:
        out[metric] = out.get(metric, 0) + n

    t = event.type
    if t == "participant.joined":
        add("joined")
        if not event.raw.get("callId") and data.get("participants") == 1:
            add("meetings_started")  # the first one into a meeting room (not a 1:1 call)
        if (ms := _int(data.get("joinMs"))) is not None:
            add("join_ms_sum", ms)
            add("join_ms_count")
    elif t == "participant.left":
        add("left")
    elif t == "participant.dropped":
        add("dropped")
    elif t == "call.started":
        add("calls_started")
    elif t == "call.ended":
        add(f"outcome.{_label(data.get('reason'))}")
    elif t == "call.failed":
        add("outcome.failed")
    elif t == "config.changed":
        add("config_changes")
    elif t == "topology.switched":
        add("topology_switches")
    elif t == "quality.sample":
        add("quality_samples")
        ms = min(_int(data.get("intervalMs")) or 0, 600_000)
        height = _int(data.get("height"))
        if data.get("transcoded") is True:
            add("media_ms_transcoded", ms)
        elif height is not None:
            add("media_ms_hd" if height >= HD_HEIGHT else "media_ms_sd", ms)
        add("freezes", min(_int(data.get("freezes")) or 0, 10_000))
    return out


def fields(event: Event) -> dict[str, int]:
    """``metric|region|device`` -> increment: what the state store adds for ``event``."""
    region, device = labels(event)
    return {f"{m}|{region}|{device}": n for m, n in counts(event).items()}


def split(field: str) -> tuple[str, str, str]:
    metric, region, device = field.split("|", 2)
    return metric, region, device

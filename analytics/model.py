"""What one event contributes to the aggregates: pure functions, no I/O.

Every contribution is a counter increment (``metric|region|device`` -> n) in the event's minute,
hour and all-time buckets. Counters commute, so the aggregates do not depend on the order in
which events arrive or on which engine instance counts them; concurrency is derived at read time
from the joined / ended counters (``series.py``), which keeps that exact too.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec

HD_HEIGHT = 720  # a video sample at >= 720 lines counts as HD media time


class Malformed(ValueError):
    """An event the engine cannot count: it is skipped and counted in a metric."""


class Event:
    """The envelope fields the engine needs plus the raw line (archived as-is). A plain class
    with slots, buckets computed once: this is made per event, at 20,000 a second."""

    __slots__ = ("hour", "id", "line", "minute", "raw", "type")

    def __init__(self, eid: str, etype: str, raw: dict[str, Any], line: str, minute: str,
                 hour: str) -> None:
        self.id, self.type, self.raw, self.line = eid, etype, raw, line
        self.minute, self.hour = minute, hour  # YYYYMMDDHHMM, YYYYMMDDHH (UTC)


_decode = msgspec.json.Decoder().decode
_MINUTES: dict[str, str] = {}  # "YYYY-MM-DDTHH:MM" -> "YYYYMMDDHHMM" (few distinct per run)


def _minute(when: Any) -> str:
    """The event's UTC minute ``YYYYMMDDHHMM``. Fast path for what Parley emits
    (``YYYY-MM-DDTHH:MM:SS.mmmZ``: validated by ``fromisoformat``, then sliced); any other
    RFC 3339 form (offsets, no fraction) goes through a datetime."""
    if (type(when) is str and len(when) == 24 and when[23] == "Z" and when[4] == "-"
            and when[7] == "-" and when[10] == "T" and when[13] == ":"):
        try:
            dt.datetime.fromisoformat(when)
        except ValueError:
            raise Malformed(f"time: not RFC 3339: {when!r}") from None
        key = when[:16]
        minute = _MINUTES.get(key)
        if minute is None:
            if len(_MINUTES) > 100_000:
                _MINUTES.clear()
            minute = _MINUTES[key] = key[0:4] + key[5:7] + key[8:10] + key[11:13] + key[14:16]
        return minute
    try:
        t = dt.datetime.fromisoformat(str(when))
    except ValueError:
        raise Malformed(f"time: not RFC 3339: {when!r}") from None
    t = t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}"


def parse(payload: bytes | str | dict[str, Any]) -> Event:
    """The event in ``payload``; raise ``Malformed`` for anything not an event envelope."""
    if isinstance(payload, dict):
        raw, line = payload, json.dumps(payload, separators=(",", ":"))
    else:
        try:  # msgspec: 4x faster than json.loads, the largest cost per event
            raw = _decode(payload)
            line = payload.decode() if isinstance(payload, bytes) else payload
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise Malformed(f"not JSON: {exc}") from None
    if type(raw) is not dict:
        raise Malformed("not an object")
    eid, etype = raw.get("id"), raw.get("type")
    if not (type(eid) is str and 0 < len(eid) <= 128):
        raise Malformed("id: 1-128 characters")
    if not (type(etype) is str and 0 < len(etype) <= 64):
        raise Malformed("type: 1-64 characters")
    if type(raw.get("data", {})) is not dict:
        raise Malformed("data: not an object")
    minute = _minute(raw.get("time"))
    line = line.strip()
    if "\n" in line:  # only whitespace in JSON; the archive queue joins lines with newlines
        line = line.replace("\n", " ")
    return Event(eid, etype, raw, line, minute, minute[:10])


def _label(value: Any) -> str:
    return value[:32].replace("|", "_") if isinstance(value, str) and value else "unknown"


def labels(event: Event) -> tuple[str, str]:
    """(region, device class) of an event: the envelope's region, the data's device."""
    data = event.raw.get("data") or {}
    return _label(event.raw.get("region") or data.get("region")), _label(data.get("device"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


_LIFECYCLE = {"recording.started": "recordings_started", "recording.stopped":
              "recordings_stopped", "recording.ready": "recordings_ready", "recording.failed":
              "recordings_failed", "broadcast.started": "broadcasts_started",
              "broadcast.ended": "broadcasts_ended",
              "broadcast.source.connected": "broadcast_sources"}
_DURATION = {"recording.stopped": "recording_ms", "broadcast.ended": "broadcast_ms"}


def counts(event: Event) -> dict[str, int]:
    """The metric increments of one event (before labels). Each metric is set at most once
    per event, so plain assignments (no accumulating helper: this runs per event)."""
    data = event.raw.get("data") or {}
    t = event.type
    out: dict[str, int] = {"events." + _label(t): 1}
    if t == "participant.joined":
        out["joined"] = 1
        if not event.raw.get("callId") and data.get("participants") == 1:
            out["meetings_started"] = 1  # the first one into a meeting room (not a 1:1 call)
        if (ms := _int(data.get("joinMs"))) is not None:
            out["join_ms_sum"] = ms
            out["join_ms_count"] = 1
    elif t == "participant.left":
        out["left"] = 1
    elif t == "participant.dropped":
        out["dropped"] = 1
    elif t == "quality.sample":
        out["quality_samples"] = 1
        ms = min(_int(data.get("intervalMs")) or 0, 600_000)
        height = _int(data.get("height"))
        if data.get("transcoded") is True:
            out["media_ms_transcoded"] = ms
        elif height is not None:
            out["media_ms_hd" if height >= HD_HEIGHT else "media_ms_sd"] = ms
        out["freezes"] = min(_int(data.get("freezes")) or 0, 10_000)
    elif t == "call.started":
        out["calls_started"] = 1
    elif t == "call.ended":
        out["outcome." + _label(data.get("reason"))] = 1
    elif t == "call.failed":
        out["outcome.failed"] = 1
    elif t == "config.changed":
        out["config_changes"] = 1
    elif t == "topology.switched":
        out["topology_switches"] = 1
    elif t in _LIFECYCLE or t in _DURATION:  # recordings and broadcasts: how many, how long
        if metric := _LIFECYCLE.get(t):
            out[metric] = 1
        if (metric := _DURATION.get(t)) and (ms := _int(data.get("durationMs"))) is not None:
            out[metric] = min(ms, 31 * 86_400_000)
    return out


def fields(event: Event) -> dict[str, int]:
    """``metric|region|device`` -> increment: what the state store adds for ``event``."""
    region, device = labels(event)
    suffix = f"|{region}|{device}"
    return {m + suffix: n for m, n in counts(event).items()}


def split(field: str) -> tuple[str, str, str]:
    metric, region, device = field.split("|", 2)
    return metric, region, device

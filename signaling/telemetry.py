"""Client telemetry: ``client.info`` once per connection, ``quality.sample`` every
``telemetryIntervalMs`` while in a room (docs/signaling.md, "Telemetry"; docs/analytics.md).

Samples feed analytics only, so they are checked strictly (a malformed one is refused with
``bad_telemetry`` and the session goes on), budgeted per connection (a token bucket sized from
the interval, so a flooding client costs a few cheap refusals, never an event each) and turned
into ``quality.sample`` / ``client.info`` events. Nothing that identifies a person goes into an
event beyond the pseudonymous identity: browser family and major version, a device class, no
user agent string, no address.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from parley.signaling import protocol as p
from parley.signaling.limits import TokenBucket
from parley.signaling.rooms import call_of

if TYPE_CHECKING:
    from parley.signaling.session import Session

DEVICES = ("desktop", "mobile", "tablet", "unknown")
PATHS = ("p2p", "turn", "sfu")
KINDS = ("audio", "video")
DIRECTIONS = ("in", "out")
SOURCES = ("camera", "screen", "microphone")
MAX_TRACKS = 32
SAMPLES_PER_INTERVAL = 3  # the budget refills at this many samples per interval


class BadTelemetry(ValueError):
    """A field of a sample or info is missing, of the wrong type or out of range."""


def _number(obj: dict[str, Any], name: str, lo: float, hi: float,
            integer: bool = False) -> float | int | None:
    value = obj.get(name)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value)) or not lo <= value <= hi
            or (integer and not isinstance(value, int))):
        kind = "an integer" if integer else "a number"
        raise BadTelemetry(f"{name} must be {kind} in [{lo:g}, {hi:g}]")
    return value


def _choice(obj: dict[str, Any], name: str, choices: tuple[str, ...],
            required: bool = False) -> str | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if value not in choices:
        raise BadTelemetry(f"{name} must be one of {', '.join(choices)}")
    return value


def _word(obj: dict[str, Any], name: str, limit: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable():
        raise BadTelemetry(f"{name} must be a string of 1-{limit} printable characters")
    return value


def _only(obj: Any, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BadTelemetry(f"{what} must be an object")
    extra = set(obj) - allowed
    if extra:
        raise BadTelemetry(f"{what} has unknown fields: {', '.join(sorted(extra))[:80]}")
    return obj


TRACK_FIELDS = {"kind", "direction", "source", "width", "height", "fps", "bitrateKbps",
                "freezes", "freezeMs", "transcoded"}
SAMPLE_FIELDS = {"intervalMs", "path", "rttMs", "loss", "region", "tracks"}
INFO_FIELDS = {"browser", "browserVersion", "os", "device"}


def track(raw: Any) -> dict[str, Any]:
    t = _only(raw, TRACK_FIELDS, "a track")
    out: dict[str, Any] = {"kind": _choice(t, "kind", KINDS, required=True),
                           "direction": _choice(t, "direction", DIRECTIONS, required=True)}
    checks: dict[str, Any] = {
        "source": _choice(t, "source", SOURCES), "width": _number(t, "width", 0, 16384, True),
        "height": _number(t, "height", 0, 16384, True), "fps": _number(t, "fps", 0, 240),
        "bitrateKbps": _number(t, "bitrateKbps", 0, 1_000_000),
        "freezes": _number(t, "freezes", 0, 10_000, True),
        "freezeMs": _number(t, "freezeMs", 0, 600_000, True)}
    if t.get("transcoded") is not None:
        if not isinstance(t["transcoded"], bool):
            raise BadTelemetry("transcoded must be true or false")
        checks["transcoded"] = t["transcoded"]
    out.update({k: v for k, v in checks.items() if v is not None})
    return out


def sample(raw: Any) -> dict[str, Any]:
    """The checked sample: per-track figures plus the summary analytics counts (docs/analytics.md:
    ``height``/``fps`` of the best received video, else the best sent; ``freezes`` received)."""
    s = _only(raw, SAMPLE_FIELDS, "sample")
    interval = _number(s, "intervalMs", 0, 600_000, True)
    if interval is None:
        raise BadTelemetry("intervalMs is required")
    tracks = s.get("tracks", [])
    if not isinstance(tracks, list) or len(tracks) > MAX_TRACKS:
        raise BadTelemetry(f"tracks must be a list of at most {MAX_TRACKS}")
    checked = [track(t) for t in tracks]
    out: dict[str, Any] = {"intervalMs": interval,
                           "path": _choice(s, "path", PATHS, required=True), "tracks": checked}
    for name, lo, hi in (("rttMs", 0, 60_000), ("loss", 0, 1)):
        value = _number(s, name, lo, hi)
        if value is not None:
            out[name] = value
    if (region := _word(s, "region", 64)) is not None:
        out["region"] = region
    videos = [t for t in checked if t["kind"] == "video" and t.get("height")]
    best = (max((t for t in videos if t["direction"] == "in"), key=lambda t: t["height"],
                default=None)
            or max(videos, key=lambda t: t["height"], default=None))
    if best is not None:
        out.update(height=best["height"], width=best.get("width", 0), fps=best.get("fps", 0))
    out["freezes"] = sum(t.get("freezes", 0) for t in checked if t["direction"] == "in")
    out["transcoded"] = any(t.get("transcoded") for t in checked if t["direction"] == "in")
    return out


def info(raw: Any) -> dict[str, Any]:
    """Browser family and major version, OS family, device class; never a user agent string."""
    i = _only(raw, INFO_FIELDS, "info")
    out = {"device": _choice(i, "device", DEVICES) or "unknown"}
    for name, limit in (("browser", 32), ("browserVersion", 16), ("os", 32)):
        if (value := _word(i, name, limit)) is not None:
            out[name] = value
    return out


class Telemetry:
    """One connection's telemetry: its budget, its client info (device class for every event of
    this participant) and the events it emits."""

    def __init__(self, interval_ms: int, burst: float) -> None:
        self.interval_ms = interval_ms
        self.bucket = TokenBucket(SAMPLES_PER_INTERVAL * 1000.0 / max(1, interval_ms), burst)
        self.client: dict[str, Any] = {"device": "unknown"}

    @property
    def device(self) -> str:
        return self.client["device"]

    def _take(self, msg: p.Message) -> None:
        wait = self.bucket.take()
        if wait:
            raise p.ProtocolError("rate_limited", f"too many {msg.type} messages; one every "
                                  f"{self.interval_ms} ms", msg.id,
                                  retryAfterMs=int(wait * 1000) + 1)

    def handle(self, s: Session, msg: p.Message) -> None:
        """``quality.sample`` / ``client.info``: budget, check, emit; refusals raise."""
        self._take(msg)
        try:
            if msg.type == "client.info":
                self.client = info(msg["info"])
                s.hub.emit("client.info", room=s.room, call_id=call_of(s.room or ""),
                           data={"identity": s.identity, **self.client})
                return
            if s.room is None:
                raise p.ProtocolError("not_joined", "quality.sample needs a joined room", msg.id)
            data = sample(msg["sample"])
        except BadTelemetry as exc:
            raise p.ProtocolError("bad_telemetry", f"{msg.type}: {exc}", msg.id) from None
        s.hub.emit("quality.sample", room=s.room, call_id=call_of(s.room), data={
            "identity": s.identity, "device": self.device,
            **{k: v for k, v in self.client.items() if k in ("browser", "browserVersion")},
            **data})

"""A known mix of events (duplicates, out-of-order timestamps) and the figures it must give,
computed here independently of the engine: from the generated sessions, not from the events."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from parley.events import EVENT_TYPES, SCHEMA_VERSION

REGIONS = ("eu-west", "us-east")
DEVICES = ("desktop", "mobile")
REASONS = ("hangup", "rejected", "no_answer", "disconnected")


def stamp(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Mix:
    events: list[dict[str, Any]] = field(default_factory=list)  # as produced, duplicates too
    unique: int = 0
    totals: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    joined_per_minute: Counter[tuple[str, str]] = field(default_factory=Counter)  # minute, region
    sessions: list[tuple[dt.datetime, dt.datetime | None]] = field(default_factory=list)
    start: dt.datetime = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # set by build()

    def present(self, minute: dt.datetime) -> int:
        """Participants whose session overlaps ``minute`` (brute force)."""
        end = minute + dt.timedelta(minutes=1)
        return sum(1 for a, b in self.sessions if a < end and (b is None or b >= minute))


def build(rooms: int, seed: int = 13, duplicate_share: float = 0.1,
          span_minutes: int = 90) -> Mix:
    """``rooms`` meetings and 1:1 calls over the last ``span_minutes``, shuffled; a share of
    the events sent twice (same id)."""
    rnd = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    mix = Mix(start=now - dt.timedelta(minutes=span_minutes))
    out: list[dict[str, Any]] = []

    def emit(etype: str, when: dt.datetime, region: str, data: dict[str, Any],
             room: str, call_id: str | None = None) -> None:
        assert etype in EVENT_TYPES
        # make_event's envelope, with a seeded id and the chosen time (make_event's uuid4 and
        # clock made building 100,000 events take seconds)
        out.append({"version": SCHEMA_VERSION, "id": f"{rnd.getrandbits(128):032x}",
                    "type": etype, "time": stamp(when), "instance": "test", "region": region,
                    "room": room, "callId": call_id, "data": data})

    for r in range(rooms):
        region = rnd.choice(REGIONS)
        room = f"room-{r}"
        call_id = f"call-{r}" if r % 3 == 0 else None
        t0 = mix.start + dt.timedelta(seconds=rnd.randrange(span_minutes * 60 - 600))
        if call_id:
            emit("call.started", t0, region, {"caller": "a", "callee": "b"}, room, call_id)
            mix.totals["calls_started", region, "unknown"] += 1
        for p in range(rnd.randint(1, 6)):
            device = rnd.choice(DEVICES)
            joined = t0 + dt.timedelta(seconds=rnd.randrange(300))
            ms = rnd.randrange(200, 3000)
            emit("participant.joined", joined, region,
                 {"identity": f"u{r}-{p}", "participants": p + 1, "device": device,
                  "joinMs": ms}, room, call_id)
            mix.totals["joined", region, device] += 1
            mix.totals["join_ms_sum", region, device] += ms
            mix.totals["join_ms_count", region, device] += 1
            mix.joined_per_minute[joined.strftime("%Y%m%d%H%M"), region] += 1
            if p == 0 and not call_id:
                mix.totals["meetings_started", region, device] += 1
            ended: dt.datetime | None = None
            fate = rnd.random()
            if fate < 0.8:  # leaves or drops; the rest are still there
                ended = joined + dt.timedelta(seconds=rnd.randrange(1, 3000))
                kind = "dropped" if fate < 0.15 else "left"
                emit(f"participant.{kind}", ended, region,
                     {"identity": f"u{r}-{p}", "participants": 0, "device": device},
                     room, call_id)
                mix.totals[kind, region, device] += 1
            mix.sessions.append((joined, ended))
            for _ in range(rnd.randint(0, 3)):
                height = rnd.choice((360, 720, 1080))
                emit("quality.sample", joined, region,
                     {"identity": f"u{r}-{p}", "intervalMs": 10000, "height": height,
                      "device": device, "freezes": 1}, room, call_id)
                mix.totals["media_ms_hd" if height >= 720 else "media_ms_sd",
                           region, device] += 10000
                mix.totals["quality_samples", region, device] += 1
                mix.totals["freezes", region, device] += 1
        for _ in range(rnd.randint(0, 2)):
            emit("config.changed", t0, region, {"maxHeight": 720, "maxFps": 30,
                                                "bandwidthKbps": 1500, "codecs": ["VP8"]},
                 room, call_id)
            mix.totals["config_changes", region, "unknown"] += 1
        if call_id:
            reason = rnd.choice(REASONS)
            emit("call.ended", t0 + dt.timedelta(minutes=9), region,
                 {"caller": "a", "callee": "b", "reason": reason}, room, call_id)
            mix.totals[f"outcome.{reason}", region, "unknown"] += 1
    mix.unique = len(out)
    for e in out:
        mix.totals[f"events.{e['type']}", e["region"],
                   e["data"].get("device", "unknown")] += 1
    dups = rnd.sample(out, int(len(out) * duplicate_share))
    mix.events = out + [dict(e) for e in dups]
    rnd.shuffle(mix.events)  # out of order in time, duplicates anywhere
    return mix

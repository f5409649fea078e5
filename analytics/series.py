"""Time series read from the state's buckets, with concurrency derived from counters.

A participant is present during a minute when they joined at or before its end and did not leave
(or drop) before its start. So, with J/E the joined/ended counts per bucket and the all-time
totals, present(m) = (J_total - sum J after m) - (E_total - sum E from m on): exact, whatever
order the events came in, as long as no counted event is stamped after the window's end
(``AHEAD`` buckets past now are read for clock skew).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from parley.analytics.model import split
from parley.analytics.state import State

AHEAD = 60  # buckets past "now" read for events stamped in the future (clock skew)
ENDED = ("left", "dropped")


@dataclass
class Series:
    """Per-bucket values of every metric, summed over the labels that match."""

    step: str  # "minute" or "hour"
    starts: list[dt.datetime]
    values: dict[str, list[int]] = field(default_factory=dict)

    def get(self, metric: str) -> list[int]:
        return self.values.get(metric, [0] * len(self.starts))


def _keys(kind: str, start: dt.datetime, n: int) -> tuple[list[dt.datetime], list[str]]:
    step = dt.timedelta(minutes=1) if kind == "m" else dt.timedelta(hours=1)
    fmt = "%Y%m%d%H%M" if kind == "m" else "%Y%m%d%H"
    starts = [start + i * step for i in range(n)]
    return starts, [f"{kind}:{s.strftime(fmt)}" for s in starts]


def _match(f: str, region: str | None, device: str | None) -> tuple[str, bool]:
    metric, r, d = split(f)
    return metric, (region is None or r == region) and (device is None or d == device)


def read(state: State, kind: str, start: dt.datetime, n: int, *, region: str | None = None,
         device: str | None = None) -> Series:
    """``n`` buckets of ``kind`` ("m" minutes, "h" hours) from ``start`` (aligned), plus
    ``participants``: concurrent participants per bucket."""
    starts, keys = _keys(kind, start, n + AHEAD)
    buckets = state.buckets([*keys, "t"])
    total = buckets.get("t", {})
    series = Series("minute" if kind == "m" else "hour", starts[:n])
    values: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        for f, v in buckets.get(key, {}).items():
            metric, ok = _match(f, region, device)
            if ok:
                values.setdefault(metric, [0] * len(keys))[i] += v
    joined_total = ended_total = 0
    for f, v in total.items():
        metric, ok = _match(f, region, device)
        if ok and metric == "joined":
            joined_total += v
        elif ok and metric in ENDED:
            ended_total += v
    joined = values.get("joined", [0] * len(keys))
    ended = [sum(x) for x in zip(*(values.get(m, [0] * len(keys)) for m in ENDED), strict=True)]
    present = [0] * len(keys)
    joined_after = ended_from = 0
    for i in range(len(keys) - 1, -1, -1):
        ended_from += ended[i]
        present[i] = (joined_total - joined_after) - (ended_total - ended_from)
        joined_after += joined[i]
    series.values = {m: v[:n] for m, v in values.items()}
    series.values["participants"] = present[:n]
    return series


def last_24h(state: State, now: dt.datetime | None = None, **labels: str | None) -> Series:
    now = (now or dt.datetime.now(dt.UTC)).replace(second=0, microsecond=0)
    return read(state, "m", now - dt.timedelta(minutes=1439), 1440, **labels)


def last_30d(state: State, now: dt.datetime | None = None, **labels: str | None) -> Series:
    now = (now or dt.datetime.now(dt.UTC)).replace(minute=0, second=0, microsecond=0)
    return read(state, "h", now - dt.timedelta(hours=719), 720, **labels)


def totals(state: State) -> dict[tuple[str, str, str], int]:
    """All-time counters by (metric, region, device)."""
    return {split(f): v for f, v in state.buckets(["t"]).get("t", {}).items()}

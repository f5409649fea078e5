"""Capability negotiation and the topology rule.

Every participant announces what it can take (max height, max frame rate, bandwidth estimate,
codecs). The room's configuration is what *every* participant can take: the minimum in each
dimension and the intersection of codec lists. The same announcements decide how many
participants a peer-to-peer mesh can hold before a call server is needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

DEFAULT_CODECS = ("VP8", "VP9", "H264", "opus")
STREAM_KBPS = 500  # what one mesh upstream (about 480p) needs
MESH_MIN, MESH_MAX = 2, 8
CROSS_REGION_MESH_MAX = 3


@dataclass(frozen=True)
class Caps:
    maxHeight: int = 720
    maxFps: int = 30
    bandwidthKbps: int = 1500
    codecs: tuple[str, ...] = DEFAULT_CODECS
    region: str = ""

    @classmethod
    def from_fields(cls, fields: dict[str, Any], base: Caps | None = None) -> Caps:
        values = asdict(base or cls())
        values.update({k: v for k, v in fields.items() if k in values})
        values["codecs"] = tuple(values["codecs"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["codecs"] = list(self.codecs)
        return out


def negotiate(caps: list[Caps]) -> dict[str, Any]:
    """The configuration every participant can take.

    ``bandwidthKbps`` is the per-stream budget: in a mesh of n a sender uploads n-1 streams, so
    the slowest participant's estimate is divided by n-1. Codecs keep the first participant's
    order; an empty intersection falls back to the mandatory-to-implement VP8/Opus.
    """
    if not caps:
        caps = [Caps()]
    n = len(caps)
    upstreams = max(1, n - 1)
    codecs = [c for c in caps[0].codecs if all(c in other.codecs for other in caps[1:])]
    if not any(c.lower() != "opus" for c in codecs):
        codecs.append("VP8")
    if "opus" not in codecs:
        codecs.append("opus")
    return {
        "maxHeight": min(c.maxHeight for c in caps),
        "maxFps": min(c.maxFps for c in caps),
        "bandwidthKbps": max(50, min(c.bandwidthKbps for c in caps) // upstreams),
        "codecs": codecs,
    }


def mesh_limit(caps: list[Caps]) -> int:
    """How many participants a mesh holds: each uploads n-1 streams of STREAM_KBPS, so
    n = floor(min bandwidth / STREAM_KBPS) + 1, clamped to [2, 8]; a mesh spanning several
    regions is capped at 3 (every stream crosses the long path). 1500 kbps gives 4."""
    if not caps:
        return MESH_MAX
    limit = min(c.bandwidthKbps for c in caps) // STREAM_KBPS + 1
    limit = max(MESH_MIN, min(MESH_MAX, limit))
    if len({c.region for c in caps if c.region}) > 1:
        limit = min(limit, CROSS_REGION_MESH_MAX)
    return limit


@dataclass(frozen=True)
class Placement:
    """Where a meeting's media goes when it is not a mesh (filled in by a call server)."""

    url: str
    node: str
    extra: dict[str, Any] = field(default_factory=dict)


class CallServerDirectory(Protocol):
    """The call-server engineer's hook: place a room on a call server, or None if none can.
    ``exclude``: node ids not to use (a node signaling just lost). A directory may also offer
    ``async alive(node) -> bool`` (a registry heartbeat); signaling then watches its nodes."""

    async def place(self, room: str, participants: int, caps: list[Caps],
                    exclude: tuple[str, ...] = ()) -> Placement | None: ...


class NoCallServers:
    """Until the call server lands: no room can be placed, so over-threshold joins are refused."""

    async def place(self, room: str, participants: int, caps: list[Caps],
                    exclude: tuple[str, ...] = ()) -> Placement | None:
        return None

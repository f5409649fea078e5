"""The shared directory in Redis: its key schema and the Meeting policy record.

Three deployables meet here. Call servers register under ``node_key`` (``parley.media.registry``);
signaling places a meeting by writing ``meeting_key`` -> node id; the operator writes the same key
for the Meetings it placed (so signaling sends their participants to the pod in
``status.callServer``) and a ``MeetingPolicy`` under ``policy_key`` (so signaling enforces the
Meeting's spec: size, topology, mesh threshold, recording). The operator observes a recording
through signaling's ``active_recording_key``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

PREFIX = "parley:media"
NODES = f"{PREFIX}:nodes"
SIGNALING_PREFIX = "parley:signaling:"  # signaling's own store (``parley.signaling.store``)
MEETING_TTL_S = 86400  # a placement outlives any call; every join refreshes it
POLICY_TTL_S = 600  # the operator rewrites policies every pass; a stale one fades away
TOPOLOGIES = ("auto", "p2p", "sfu")


def node_key(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


def meeting_key(meeting: str) -> str:
    return f"{PREFIX}:meeting:{meeting}"


def policy_key(room: str) -> str:
    return f"{PREFIX}:policy:{room}"


def active_recording(room: str) -> str:
    """Signaling's store key (without its prefix) holding the room's recording id."""
    return f"recording:active:{room}"


def active_recording_key(room: str) -> str:
    return SIGNALING_PREFIX + active_recording(room)


@dataclass(frozen=True)
class MeetingPolicy:
    """What a Meeting resource asks of its room, as signaling enforces it."""

    maxParticipants: int | None = None
    topology: str = "auto"
    p2pThreshold: int | None = None
    record: bool = False

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MeetingPolicy:
        return cls(maxParticipants=spec.get("maxParticipants", 100),
                   topology=spec.get("topology", "auto"),
                   p2pThreshold=spec.get("p2pThreshold"),
                   record=bool((spec.get("recording") or {}).get("enabled")))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, raw: str | bytes) -> MeetingPolicy:
        """A stored policy, checked: ValueError on anything else (signaling then ignores it)."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"policy is not an object: {raw!r}")

        def count(name: str) -> int | None:
            v = data.get(name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 2):
                raise ValueError(f"policy {name} must be an integer >= 2, not {v!r}")
            return v

        topology = data.get("topology", "auto")
        if topology not in TOPOLOGIES:
            raise ValueError(f"policy topology must be one of {TOPOLOGIES}, not {topology!r}")
        return cls(maxParticipants=count("maxParticipants"), topology=topology,
                   p2pThreshold=count("p2pThreshold"), record=data.get("record") is True)

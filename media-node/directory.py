"""Signaling's ``CallServerDirectory`` hook (``parley.signaling.negotiation``), two ways:

- ``LocalDirectory``: the call server running in the same process (``parley up``);
- ``RedisDirectory``: nodes registered in Redis, placed by ``registry.place``.

Both answer ``place(room, participants, caps)`` with a ``Placement`` whose ``url`` is the call
server's control API (docs/call-server.md), or None when no node takes the room.
"""

from __future__ import annotations

from typing import Any

from parley.directory import MeetingPolicy, policy_key
from parley.signaling.negotiation import Placement

from .node import CallServer
from .registry import node_key, place


class LocalDirectory:
    """Every room goes to the in-process call server while it is ready."""

    def __init__(self, server: CallServer) -> None:
        self.server = server

    async def place(self, room: str, participants: int, caps: list[Any],
                    exclude: tuple[str, ...] = ()) -> Placement | None:
        s = self.server
        if s.id in exclude or (room not in s.meetings and not s.ready()):
            return None
        return Placement(url=s.url, node=s.id, extra={"region": s.region})

    async def alive(self, node: str) -> bool:
        """The in-process call server lives as long as this process does."""
        return node == self.server.id


class RedisDirectory:
    """Power-of-two-choices placement over the nodes registered in Redis."""

    def __init__(self, redis_url: str, region: str | None = None) -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(redis_url)
        self.region = region

    async def place(self, room: str, participants: int, caps: list[Any],
                    exclude: tuple[str, ...] = ()) -> Placement | None:
        regions = {c.region for c in caps if getattr(c, "region", None)}
        region = next(iter(regions)) if len(regions) == 1 else self.region
        node = await place(self.redis, room, region, exclude=exclude)
        if node is None:
            return None
        return Placement(url=node["url"], node=node["id"], extra={"region": node["region"]})

    async def policy(self, room: str) -> MeetingPolicy | None:
        """The Meeting policy the operator published for ``room`` (ValueError if malformed)."""
        raw = await self.redis.get(policy_key(room))
        return MeetingPolicy.parse(raw) if raw is not None else None

    async def alive(self, node: str) -> bool:
        """False once the node's heartbeat expired (signaling then moves its participants)."""
        return bool(await self.redis.exists(node_key(node)))

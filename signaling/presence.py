"""Presence: which replica holds which user, and delivery of a message to a user wherever they
are connected.

Each replica has an ``instance`` id. ``user:<identity>`` holds ``<instance>|<session>`` with a
TTL refreshed by a heartbeat, so a crashed replica's users vanish after ``ttl_s``. A message for a
user held by another replica is published on that replica's channel ``inst:<instance>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any, Protocol

from parley.signaling.store import Store

log = logging.getLogger("parley.signaling.presence")


class Peer(Protocol):
    identity: str
    session_id: str

    def send(self, msg: dict[str, Any]) -> None: ...

    def replaced_elsewhere(self) -> None: ...


class Presence:
    def __init__(self, store: Store, ttl_s: float = 30.0, heartbeat_s: float = 10.0,
                 instance: str | None = None) -> None:
        self.store = store
        self.instance = instance or uuid.uuid4().hex[:12]
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.local: dict[str, Peer] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.subscribe(f"inst:{self.instance}", self._on_routed)
        self._task = asyncio.create_task(self._heartbeat())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for identity, peer in list(self.local.items()):
            await self.store.delete_if(f"user:{identity}", self._value(peer))

    def _value(self, peer: Peer) -> str:
        return f"{self.instance}|{peer.session_id}"

    async def register(self, peer: Peer) -> Peer | None:
        """Hold ``peer`` here; returns the local session it replaced (same identity), if any."""
        old = self.local.get(peer.identity)
        previous = await self.store.get(f"user:{peer.identity}")
        self.local[peer.identity] = peer
        await self.store.set(f"user:{peer.identity}", self._value(peer), self.ttl_s)
        if previous and old is None:
            instance, session = previous.split("|", 1)
            if instance != self.instance:  # the user's older connection is on another replica
                await self.store.publish(f"inst:{instance}", json.dumps(
                    {"to": peer.identity, "replace": session}))
        return old if old is not peer else None

    async def unregister(self, peer: Peer) -> None:
        if self.local.get(peer.identity) is peer:
            del self.local[peer.identity]
            await self.store.delete_if(f"user:{peer.identity}", self._value(peer))

    async def locate(self, identity: str) -> str | None:
        """The instance holding ``identity`` or None when the user is offline."""
        if identity in self.local:
            return self.instance
        value = await self.store.get(f"user:{identity}")
        return value.split("|", 1)[0] if value else None

    async def online(self, identity: str) -> bool:
        return await self.locate(identity) is not None

    async def deliver(self, identity: str, msg: dict[str, Any]) -> bool:
        """Send ``msg`` to ``identity`` on whichever replica holds it; False if offline."""
        peer = self.local.get(identity)
        if peer is not None:
            peer.send(msg)
            return True
        instance = await self.locate(identity)
        if instance is None:
            return False
        await self.store.publish(f"inst:{instance}", json.dumps({"to": identity, "msg": msg}))
        return True

    async def _on_routed(self, data: str) -> None:
        envelope = json.loads(data)
        peer = self.local.get(envelope["to"])
        if peer is None:
            return
        if "replace" in envelope:
            if peer.session_id == envelope["replace"]:
                del self.local[peer.identity]  # presence already points at the new replica
                peer.replaced_elsewhere()
            return
        peer.send(envelope["msg"])

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            for peer in list(self.local.values()):
                try:
                    await self.store.set(f"user:{peer.identity}", self._value(peer), self.ttl_s)
                except Exception:
                    log.exception("presence heartbeat failed for %s", peer.identity)

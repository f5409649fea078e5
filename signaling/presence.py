"""Presence: which replica holds which user, delivery of a message to a user wherever they
are connected, and online/offline pushed to the people panels that watch a user.

Each replica has an ``instance`` id. ``user:<identity>`` holds ``<instance>|<session>`` with a
TTL refreshed by a heartbeat, so a crashed replica's users vanish after ``ttl_s``. A message for a
user held by another replica is published on that replica's channel ``inst:<instance>``.

Watching (``presence.subscribe``): a user's key appearing or going away is announced on the
channel ``presence`` that every replica reads; the announcement carries only the identity, and
each replica re-reads the key and pushes the state to its watchers when it differs from what
they were last told. Re-reading (rather than trusting the announcement) keeps the last push right
when a close on one replica and a connect on another race. A replacement by a newer connection
(4409) keeps the key, so it is no change; keys that expire with a crashed replica are found by a
re-read of the watched users on every heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from parley.signaling import protocol as p
from parley.signaling.store import Store
from parley.tokens import GUEST_PREFIX

if TYPE_CHECKING:
    from parley.signaling.users import UserDirectory

log = logging.getLogger("parley.signaling.presence")
CHANGES = "presence"  # channel: an identity whose user key appeared or went away


class Peer(Protocol):
    identity: str
    session_id: str
    token: Any

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
        # local people panels: who each watches, with the state it was last told, and back
        self.watching: dict[Peer, dict[str, bool]] = {}
        self.watchers: dict[str, set[Peer]] = {}
        self._told = asyncio.Lock()  # one re-read-and-push at a time: no stale push overtakes

    async def start(self) -> None:
        await self.store.subscribe(f"inst:{self.instance}", self._on_routed)
        await self.store.subscribe(CHANGES, self._on_change)
        self._task = asyncio.create_task(self._heartbeat())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for identity, peer in list(self.local.items()):
            if await self.store.delete_if(f"user:{identity}", self._value(peer)):
                await self._announce(identity)

    def _value(self, peer: Peer) -> str:
        return f"{self.instance}|{peer.session_id}"

    async def register(self, peer: Peer) -> Peer | None:
        """Hold ``peer`` here; returns the local session it replaced (same identity), if any."""
        old = self.local.get(peer.identity)
        previous = await self.store.get(f"user:{peer.identity}")
        self.local[peer.identity] = peer
        await self.store.set(f"user:{peer.identity}", self._value(peer), self.ttl_s)
        if previous is None:
            await self._announce(peer.identity)  # came online
        elif old is None:
            instance, session = previous.split("|", 1)
            if instance != self.instance:  # the user's older connection is on another replica
                await self.store.publish(f"inst:{instance}", json.dumps(
                    {"to": peer.identity, "replace": session}))
        return old if old is not peer else None

    async def unregister(self, peer: Peer) -> None:
        self._unwatch(peer)
        if self.local.get(peer.identity) is peer:
            del self.local[peer.identity]
            if await self.store.delete_if(f"user:{peer.identity}", self._value(peer)):
                await self._announce(peer.identity)  # went offline (not replaced)

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

    async def _visible(self, peer: Peer, msg: p.Message, users: UserDirectory) -> list[str]:
        """Of ``ids``, those a signed-in user may see: whom they may call (the user service's
        policy), never themselves or guests."""
        if peer.token.guest:
            raise p.ProtocolError("presence_not_allowed", "guests see no presence", msg.id)
        visible = []
        for identity in dict.fromkeys(msg["ids"]):
            if identity == peer.identity or identity.startswith(GUEST_PREFIX):
                continue
            allowed, _ = await users.may_call(peer.identity, identity)
            if allowed:
                visible.append(identity)
        return visible

    async def query(self, peer: Peer, msg: p.Message, users: UserDirectory) -> None:
        """``presence {ids}``: which of ``ids`` are online now (once; the others are left out
        of the reply)."""
        visible = await self._visible(peer, msg, users)
        online = {identity: await self.online(identity) for identity in visible}
        peer.send({"type": "presence", "online": online, "ref": msg.id})

    async def subscribe(self, peer: Peer, msg: p.Message, users: UserDirectory) -> None:
        """``presence.subscribe {ids}``: the state now (as ``presence``), then a ``presence``
        push for each change of these users, until the next subscribe replaces the list or the
        session ends. The list is bounded by the protocol (100)."""
        visible = await self._visible(peer, msg, users)
        async with self._told:
            self._unwatch(peer)
            told = {identity: await self.online(identity) for identity in visible}
            self.watching[peer] = told
            for identity in told:
                self.watchers.setdefault(identity, set()).add(peer)
        peer.send({"type": "presence", "online": dict(told), "ref": msg.id})

    def _unwatch(self, peer: Peer) -> None:
        for identity in self.watching.pop(peer, {}):
            watchers = self.watchers.get(identity)
            if watchers is not None:
                watchers.discard(peer)
                if not watchers:
                    del self.watchers[identity]

    async def _announce(self, identity: str) -> None:
        """Tell every replica this user's presence may have changed (guests are never
        watched, so their comings and goings are not announced)."""
        if identity.startswith(GUEST_PREFIX):
            return
        try:
            await self.store.publish(CHANGES, identity)
        except Exception:  # the heartbeat's re-read catches up
            log.exception("presence change of %s not announced", identity)

    async def _on_change(self, identity: str) -> None:
        if identity in self.watchers:
            await self._push([identity])

    async def _push(self, identities: list[str]) -> None:
        """Re-read these users and push to each local watcher whatever differs from what it
        was last told (one user at a time, so a live change waits for one read at most)."""
        for identity in identities:
            async with self._told:
                watchers = self.watchers.get(identity)
                if not watchers:
                    continue
                online = await self.online(identity)
                for peer in list(watchers):
                    told = self.watching.get(peer)
                    if told is not None and told.get(identity) != online:
                        told[identity] = online
                        peer.send({"type": "presence", "online": {identity: online}})

    def _told_online(self) -> list[str]:
        """Watched users some watcher believes online: the only ones a crash can take away
        unannounced (coming online is always announced)."""
        return [identity for identity, watchers in self.watchers.items()
                if any(self.watching.get(peer, {}).get(identity) for peer in watchers)]

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
            try:  # users of a crashed replica: their keys expired, nobody announced it
                await self._push(self._told_online())
            except Exception:
                log.exception("presence re-read failed")

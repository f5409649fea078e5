"""Group meetings by room: join, leave, roster, capability updates and the peer-to-peer relay.

Membership lives in the shared store (hash ``room:<room>``: identity -> member JSON) so replicas
agree on the roster; members whose presence expired (their replica died) are dropped on read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from parley.directory import MeetingPolicy
from parley.signaling import metrics, switching
from parley.signaling.negotiation import Caps, mesh_limit, negotiate
from parley.signaling.protocol import Message, ProtocolError
from parley.tokens import TokenError

if TYPE_CHECKING:
    from parley.signaling.hub import Hub
    from parley.signaling.session import Session

CALL_ROOM_PREFIX = "call-"


def call_of(room: str) -> str | None:
    """The call id of a 1:1 call's room, so its events share the call's Kafka key (order)."""
    return room[len(CALL_ROOM_PREFIX):] if room.startswith(CALL_ROOM_PREFIX) else None


log = logging.getLogger("parley.signaling.rooms")


class Rooms:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._tasks: set[asyncio.Task[None]] = set()

    async def members(self, room: str) -> dict[str, dict[str, Any]]:
        raw = await self.hub.store.hgetall(f"room:{room}")
        out: dict[str, dict[str, Any]] = {}
        for identity, value in raw.items():
            if await self.hub.presence.online(identity):
                out[identity] = json.loads(value)
            else:
                await self.hub.store.hdel(f"room:{room}", identity)
        return out

    async def _authorize(self, s: Session, room: str) -> None:
        if room.startswith(CALL_ROOM_PREFIX):
            call = await self.hub.calls.record(room[len(CALL_ROOM_PREFIX):])
            if call and call.get("state") == "active" and s.identity in (
                    call["caller"], call["callee"]):
                return
            raise ProtocolError("unknown_call", f"{room} is not an active call of yours")
        if s.token.room not in ("*", room):
            raise ProtocolError("token_invalid", f"token is for room '{s.token.room}'")
        try:
            s.token.require("subscribe")
        except TokenError as exc:
            raise ProtocolError("grant_missing", str(exc)) from None

    @contextlib.asynccontextmanager
    async def _locked(self, room: str) -> AsyncIterator[None]:
        """Serialize joins and leaves of one room across replicas, so two simultaneous joiners
        cannot both see an empty room (then neither would offer). Bounded: after 2 s the join
        proceeds anyway rather than hang on a lock left by a crashed replica (TTL 3 s)."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + 2.0
        while not await self.hub.store.set_nx(f"roomlock:{room}", token, 3.0):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        try:
            yield
        finally:
            await self.hub.store.delete_if(f"roomlock:{room}", token)

    async def join(self, s: Session, msg: Message) -> None:
        if s.room is not None:
            raise ProtocolError("already_joined", f"already in room '{s.room}'", msg.id)
        room: str = msg["room"]
        await self._authorize(s, room)
        started = time.monotonic()
        try:
            async with self._locked(room):
                await self._join(s, msg, room, started)
        except ProtocolError as exc:
            if (call_id := call_of(room)) is not None:  # an accepted call its party cannot join
                self.hub.emit("call.failed", room=room, call_id=call_id, data={
                    "reason": exc.code, "identity": s.identity})
            raise

    async def _join(self, s: Session, msg: Message, room: str, started: float) -> None:
        s.caps = Caps.from_fields(msg.fields, s.caps)
        topology = msg.get("topology", "auto")
        members = await self.members(room)
        members.pop(s.identity, None)  # a reconnect of the same user replaces its old entry
        await self.hub.store.hdel(f"standing:{room}", s.identity)  # and its old page's offer
        everyone = [Caps.from_fields(m["caps"]) for m in members.values()] + [s.caps]
        limit = 2 if room.startswith(CALL_ROOM_PREFIX) else mesh_limit(everyone)
        policy = await self.policy(room)
        size = (policy.maxParticipants if policy is not None and policy.maxParticipants
                else self.hub.options.max_room_size)  # a Meeting's spec, else the default cap
        if size and len(everyone) > size:
            metrics.ROOMS_JOINED.labels("room_full").inc()
            raise ProtocolError("room_full", f"cannot join '{room}': the room admits "
                                f"{size} participants", msg.id)
        if policy is not None:  # a Meeting resource's spec (docs/signaling.md, "Meetings")
            if policy.topology != "auto":
                topology = policy.topology
            if policy.p2pThreshold:
                limit = min(limit, policy.p2pThreshold)
            if policy.record:
                task = asyncio.create_task(self._record(room))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        current = await switching.room_topology(self.hub, room)
        sfu = current == switching.SFU or topology == "sfu" or len(everyone) > limit
        standing = {} if sfu else await self._take_standing(room, members)
        if sfu:  # the media goes through a call server (signaling/sfu.py relays the session)
            placement = None
            if topology != "p2p":
                placement = await self.hub.directory.place(room, len(everyone), everyone)
            if placement is None:
                outcome = "room_full_p2p" if topology == "p2p" else "sfu_unavailable"
                metrics.ROOMS_JOINED.labels(outcome).inc()
                why = ("a call server was requested" if topology == "sfu" else
                       "the room is on a call server" if current == switching.SFU else
                       f"{len(everyone)} participants exceed the peer-to-peer limit of {limit}")
                raise ProtocolError(outcome, f"cannot join '{room}': {why} and "
                                    + ("p2p was requested" if topology == "p2p" else
                                       "no call server is available"), msg.id)
        entry = self._entry(s)
        await self.hub.store.hset(f"room:{room}", s.identity, json.dumps(entry))
        s.room = room
        metrics.ROOMS_JOINED.labels("joined").inc()
        participants = [{"identity": m["identity"], "name": m["name"],
                          **m.get("media", {"audio": True, "video": True}),
                          **({"offer": standing[i]} if i in standing else {})}
                         for i, m in members.items()]
        config = negotiate(everyone)
        s.send({"type": "joined", "room": room, "topology": "sfu" if sfu else "p2p",
                 "meshLimit": limit, "participants": participants, "config": config,
                 "ref": msg.id})
        announce = {"type": "participant.joined", "room": room,
                    "participant": {"identity": s.identity, "name": s.name, **s.media}}
        for other in members:  # "standing": the newcomer answers the offer it stood
            await self.hub.presence.deliver(
                other, {**announce, "standing": True} if other in standing else announce)
        self.hub.emit("participant.joined", room=room, call_id=call_of(room), data={
            "identity": s.identity, "name": s.name, "participants": len(members) + 1,
            "device": s.telemetry.device, "joinMs": int((time.monotonic() - started) * 1000)})
        await self._reconfigure(room, {**members, s.identity: entry})
        if sfu:
            await self.hub.store.delete(f"standing:{room}")  # no mesh offers on a call server
        if sfu and current != switching.SFU:  # the mesh grows past its limit: move everyone
            await switching.switch(self.hub, room, list(members),
                                   "requested" if topology == "sfu" else "threshold")

    async def stand(self, s: Session, msg: Message) -> None:
        """A mesh member's standing offer: its connection to whoever joins next, described and
        gathered before they come, so a newcomer's ``joined`` carries it and the newcomer only
        answers (no offer of its own, no answer to wait for: docs/signaling.md, "Standing
        offers"). One per member, replaced by the next; a member keeps its offer's connection
        until an answer comes for it."""
        if s.room is None:
            raise ProtocolError("not_joined", "offer.standing needs a joined room", msg.id)
        if await switching.room_topology(self.hub, s.room) == switching.SFU:
            raise ProtocolError("not_mesh", f"room '{s.room}' is on a call server", msg.id)
        offer = {"sdp": msg["sdp"], "sources": msg.get("sources") or {}}
        await self.hub.store.hset(f"standing:{s.room}", s.identity, json.dumps(offer))

    async def _take_standing(self, room: str, members: dict[str, Any]) -> dict[str, Any]:
        """The members' standing offers, each taken (gone from the store) for this one joiner,
        in one read; the room's lock keeps two joiners from answering the same offer. One of
        someone no longer a member (its replica died) goes too."""
        taken = {}
        for identity, raw in (await self.hub.store.hgetall(f"standing:{room}")).items():
            await self.hub.store.hdel(f"standing:{room}", identity)
            if identity in members:
                taken[identity] = json.loads(raw)
        return taken

    async def policy(self, room: str) -> MeetingPolicy | None:
        """The policy the operator published for a Meeting's room, if the directory has one;
        an unreadable one is logged and ignored (the room then follows signaling's rules)."""
        read = getattr(self.hub.directory, "policy", None)
        if read is None or room.startswith(CALL_ROOM_PREFIX):
            return None
        try:
            return await read(room)
        except Exception as exc:  # a bad record or Redis hiccup never fails a join
            log.warning("policy of room %s ignored: %s", room, exc)
            return None

    async def _record(self, room: str) -> None:
        """A Meeting with recording on records from its first participant (once: ``start``
        returns the running recording when there is one)."""
        if not await self.hub.store.set_nx(f"recording:policy-start:{room}", "1", ttl_s=10):
            return  # another join (on any replica) is starting it right now
        try:
            await self.hub.recordings.start(room, by="meeting")
        except Exception as exc:  # retried on the next join
            log.warning("recording the meeting in room %s did not start: %s", room, exc)

    async def leave(self, s: Session, dropped: str | None = None) -> None:
        """Take ``s`` out of its room: ``participant.left`` for a leave (or the server ending its
        call), ``participant.dropped`` with ``dropped`` as the reason when its connection went
        away while still in the room."""
        room = s.room
        if room is None:
            return
        s.room = None
        await self.hub.sfu.leave(s)
        async with self._locked(room):
            await self.hub.store.hdel(f"room:{room}", s.identity)
            await self.hub.store.hdel(f"standing:{room}", s.identity)
            members = await self.members(room)
        gone = {"type": "participant.left", "room": room, "identity": s.identity}
        for other in members:
            await self.hub.presence.deliver(other, gone)
        self.hub.emit("participant.dropped" if dropped else "participant.left", room=room,
                      call_id=call_of(room), data={
                          "identity": s.identity, "name": s.name, "participants": len(members),
                          "device": s.telemetry.device,
                          **({"reason": dropped} if dropped else {})})
        if members:
            await self._reconfigure(room, members)
        else:
            await self.hub.store.delete(f"roomcfg:{room}")
            await switching.room_emptied(self.hub, room)

    async def update_caps(self, s: Session, msg: Message) -> None:
        s.caps = Caps.from_fields(msg.fields, s.caps)
        if s.room is None:
            return  # remembered for the next join
        await self.hub.store.hset(f"room:{s.room}", s.identity, json.dumps(self._entry(s)))
        await self._reconfigure(s.room, await self.members(s.room))

    async def update_media(self, s: Session, msg: Message) -> None:
        """Camera / microphone toggles: remembered in the room entry (late joiners see it in
        ``joined``) and told to the others as ``participant.media``."""
        s.media = {k: msg.get(k, v) for k, v in s.media.items()}
        if s.room is None:
            return  # remembered for the next join
        await self.hub.store.hset(f"room:{s.room}", s.identity, json.dumps(self._entry(s)))
        out = {"type": "participant.media", "room": s.room, "identity": s.identity, **s.media}
        for other in await self.members(s.room):
            if other != s.identity:
                await self.hub.presence.deliver(other, out)

    @staticmethod
    def _entry(s: Session) -> dict[str, Any]:
        return {"identity": s.identity, "name": s.name, "caps": s.caps.to_json(),
                "media": s.media}

    async def _reconfigure(self, room: str, members: dict[str, dict[str, Any]]) -> None:
        """Recompute the room's configuration; broadcast and record it only when it changed."""
        config = negotiate([Caps.from_fields(m["caps"]) for m in members.values()])
        encoded = json.dumps(config, sort_keys=True)
        if await self.hub.store.get(f"roomcfg:{room}") == encoded:
            return
        await self.hub.store.set(f"roomcfg:{room}", encoded, ttl_s=24 * 3600)
        for identity in members:
            await self.hub.presence.deliver(identity, {"type": "config", "room": room, **config})
        self.hub.emit("config.changed", room=room, call_id=call_of(room), data=config)

    async def relay(self, s: Session, msg: Message) -> None:
        """Forward offer/answer/ice to a peer in the same room, stamped with the sender."""
        if s.room is None:
            raise ProtocolError("not_joined", f"{msg.type} needs a joined room", msg.id)
        target = msg["to"]
        if target == s.identity or await self.hub.store.hget(f"room:{s.room}", target) is None:
            raise ProtocolError("peer_not_in_room", f"{target} is not in room '{s.room}'",
                                msg.id)
        out = {"type": msg.type, "from": s.identity, "room": s.room,
               **{k: v for k, v in msg.fields.items() if k != "to"}}
        if not await self.hub.presence.deliver(target, out):
            raise ProtocolError("peer_not_in_room", f"{target} went offline", msg.id)

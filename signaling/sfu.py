"""Relay of a client's call-server (SFU) session over its signaling WebSocket.

The browser never talks to the call server's control API (it has no authentication and is
cluster-internal); signaling does it for the client: ``sfu.join`` becomes a join on the node the
directory places the meeting on, the node's event stream (long poll) becomes ``sfu.offer`` frames,
and ``sfu.answer`` / ``sfu.publish`` go back to the node. When the node dies (connection refused,
or its Redis heartbeat expired) or drains past its deadline (``move`` event), the meeting is
placed again without that node and the client is told to open a new session (``sfu.start``).

One :class:`Leg` per session that has a call-server session; it lives on the replica holding the
session's WebSocket, so no state about it needs to be shared between replicas. Which of a room's
published track ids are screens is shared (``sfusrc:<room>``) so every subscriber can label tiles.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from parley import tokens
from parley.signaling.negotiation import Caps, Placement
from parley.signaling.protocol import Message, ProtocolError

if TYPE_CHECKING:
    from parley.signaling.hub import Hub
    from parley.signaling.session import Session

log = logging.getLogger("parley.signaling.sfu")
POLL_WAIT_S = 10.0
REPLACE_WITHIN_S = 10.0  # keep trying to re-place a lost meeting this long
MONITOR_S = 0.5


def sources_key(room: str) -> str:
    return f"sfusrc:{room}"


PAIR_PREFIX = "~"  # never in a room name (protocol._ID_RE): no room is a pair's meeting


def pair_meeting(secret: str, room: str, a: str, b: str) -> str:
    """The call-server meeting of one peer pair of a mesh room (P2P fallback, docs/signaling.md):
    only those two publish and subscribe there. Opaque (a MAC of room and pair under the token
    secret, so both ends' replicas name it alike) and prefixed with a character no room name
    has: joining a room never lands in a pair's meeting."""
    lo, hi = sorted((a, b))
    mac = hmac.new(secret.encode(), f"pair\0{room}\0{lo}\0{hi}".encode(), hashlib.sha256)
    return PAIR_PREFIX + base64.urlsafe_b64encode(mac.digest()[:18]).decode()


def q(part: str) -> str:
    """A meeting or participant id as one URL path segment."""
    return quote(part, safe="")


def may_publish(s: Session) -> bool:
    """Whether the session's token lets it send media (the call server answers a participant
    that may not inactive on every m-line it offers to send)."""
    token = getattr(s, "token", None)
    grants = token.grants if token is not None else frozenset()
    return "publish" in grants or "admin" in grants


_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


def ice_ufrag(sdp: str) -> str | None:
    """The ICE username fragment of a description: one per browser connection (bundled), so it
    tells which of a client's call-server connections an answer comes from."""
    m = _UFRAG.search(sdp)
    return m.group(1) if m else None


def leg_key(session_id: str, pair: str | None) -> str:
    return f"{session_id}|{pair or ''}"


LAYER_FIELDS = ("participant", "track", "rid", "index", "layers", "height", "reason",
                "estimateKbps", "transcoded", "codec", "paused")  # transcoded: the meeting
# transcoder's output (rid = its rung, codec = what the receiver decodes); docs/call-server.md


@dataclass
class Leg:
    """One session's connection to one call server."""

    session: Session
    room: str
    placement: Placement
    pid: str
    after: int = 0
    task: asyncio.Task[None] | None = None
    lost: bool = False
    joined_at: float = field(default_factory=time.monotonic)
    pair: str | None = None  # a P2P-fallback leg for this one peer (its own meeting)
    meeting: str = ""
    ufrag: str | None = None  # the client connection's ICE ufrag (from its join offer)

    def __post_init__(self) -> None:
        self.meeting = self.meeting or self.room

    @property
    def key(self) -> str:
        return leg_key(self.session.session_id, self.pair)

    def tag(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {**msg, "pair": self.pair} if self.pair else msg

    @property
    def url(self) -> str:
        """This session's participant on its node (ids are per session, scoped by meeting)."""
        return (f"{self.placement.url}/v1/meetings/{q(self.meeting)}/participants/"
                f"{q(self.pid)}")


class SfuRelay:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.legs: dict[str, Leg] = {}  # leg_key(session id, pair) -> leg
        self.http = self._client()
        self._monitor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _client(self, mounts: dict[str, httpx.AsyncBaseTransport] | None = None
                ) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=POLL_WAIT_S + 5),
                                 headers=tokens.control_headers(self.hub.settings.token_secret),
                                 mounts=mounts)

    def serve_in_process(self, origin: str, app: Any) -> None:
        """Calls to ``origin`` go to ``app`` directly, not over loopback TCP: `parley up`, whose
        call server is mounted in this very app. The same routes, middleware and control key;
        no socket, HTTP parser or connection pool on either side (with them, a join's control
        calls were a quarter of the server's CPU in bench/join_time's profile)."""
        self.http = self._client({origin: httpx.ASGITransport(app, raise_app_exceptions=False)})

    # -- placement ------------------------------------------------------------------------
    async def place(self, room: str, exclude: tuple[str, ...] = (),
                    leg: Leg | None = None, pair: tuple[str, str] | None = None
                    ) -> Placement | None:
        members = await self.hub.rooms.members(room)
        if leg is not None and leg.pair:
            pair = (leg.session.identity, leg.pair)
        if pair:
            members = {k: v for k, v in members.items() if k in pair}
        meeting = self.pair_meeting(room, *pair) if pair else room
        caps = [Caps.from_fields(m["caps"]) for m in members.values()]
        return await self.hub.directory.place(meeting, max(1, len(caps)), caps, exclude=exclude)

    def pair_meeting(self, room: str, a: str, b: str) -> str:
        return pair_meeting(self.hub.settings.token_secret, room, a, b)

    # -- client messages ------------------------------------------------------------------
    async def handle(self, s: Session, msg: Message) -> None:
        if s.room is None:
            raise ProtocolError("not_joined", f"{msg.type} needs a joined room", msg.id)
        if msg.type == "sfu.join":
            await self.join(s, msg)
            return
        leg = self.legs.get(leg_key(s.session_id, msg.get("pair")))
        if leg is None:
            raise ProtocolError("not_sfu", f"{msg.type} needs sfu.join first", msg.id)
        if msg.type == "sfu.publish" and not may_publish(s):
            raise ProtocolError("grant_missing", "publishing needs the 'publish' grant", msg.id)
        if msg.type == "sfu.answer" and leg.ufrag and ice_ufrag(msg["sdp"]) not in (
                None, leg.ufrag):
            # the answer of a connection the client already replaced (it answered an offer of
            # the old session while starting the new one): it must not reach the new one
            raise ProtocolError("sfu_stale", "answer of an earlier call-server connection; "
                                "ignored", msg.id)
        await self._store_sources(leg.meeting, msg.get("sources"))
        url = leg.url
        try:
            if msg.type == "sfu.answer":
                r = await self.http.post(f"{url}/sdp", json={"type": "answer", "sdp": msg["sdp"]})
            elif msg.type == "sfu.view":
                body = {"views": msg["views"]}
                if msg.get("maxBitrate") is not None:  # the receiver's cap; 0 lifts it
                    body["maxBitrate"] = msg["maxBitrate"] or None
                r = await self.http.post(f"{url}/view", json=body)
            elif msg.type == "sfu.unpublish":
                r = await self.http.post(f"{url}/unpublish", json={"track": msg["track"]})
            else:
                r = await self.http.post(f"{url}/publish", json={"kinds": msg["kinds"]})
        except httpx.HTTPError as exc:
            # one failed request (a keep-alive connection the node dropped, a stall) is not a
            # dead node: a node still alive gives the client a fresh session (the same node
            # may take it); only a dead one is left behind
            alive = await self._node_alive(leg.placement.node)
            self._lose(leg, "closed" if alive else "node_lost")
            raise ProtocolError("sfu_session", f"call server unreachable: {exc!r}",
                                msg.id) from None
        if r.status_code >= 400:
            raise ProtocolError("sfu_session", f"call server said {r.status_code}: "
                                f"{r.text[:120]}", msg.id)

    async def join(self, s: Session, msg: Message, exclude: tuple[str, ...] = ()) -> None:
        """A fresh session (first join, after a move, after an ICE failure): the call server
        replaces any earlier connection of this participant."""
        room = s.room
        assert room is not None
        pair = msg.get("pair")
        if pair is not None and (pair == s.identity or await self.hub.store.hget(
                f"room:{room}", pair) is None):
            raise ProtocolError("peer_not_in_room", f"{pair} is not in room '{room}'", msg.id)
        meeting = self.pair_meeting(room, s.identity, pair) if pair else room
        old = self.legs.pop(leg_key(s.session_id, pair), None)
        if old is not None:
            await self._stop(old, leave=False)
        await self._store_sources(meeting, msg.get("sources"))
        body = {"type": "offer", "sdp": msg["sdp"], "participant": s.identity,
                "publish": may_publish(s), "early": bool(msg.get("early"))}
        tried: list[str] = [*exclude]
        for _ in range(3):
            placement = await self.place(room, tuple(tried),
                                         pair=(s.identity, pair) if pair else None)
            if placement is None:
                raise ProtocolError("sfu_unavailable", "no call server takes this meeting",
                                    msg.id)
            if old is not None and old.placement.node != placement.node:
                self._spawn_delete(old)
            try:
                r = await self.http.post(f"{placement.url}/v1/meetings/{q(meeting)}/participants",
                                         json=body)
            except httpx.HTTPError:
                tried.append(placement.node)  # dead but still registered: try another node
                continue
            if r.status_code == 503:  # draining or full since the heartbeat
                tried.append(placement.node)
                continue
            if r.status_code >= 400:
                raise ProtocolError("sfu_session", f"call server said {r.status_code}: "
                                    f"{r.text[:120]}", msg.id)
            answer = r.json()
            leg = Leg(s, room, placement, answer["participant"], pair=pair, meeting=meeting,
                      ufrag=ice_ufrag(msg["sdp"]))
            if s.room != room:  # left while the join was in flight
                self._spawn_delete(leg)
                return
            self.legs[leg.key] = leg
            leg.task = asyncio.create_task(self._follow(leg))
            self._ensure_monitor()
            # sources: the answer may carry the others' tracks (recvonly m-lines of the offer)
            raw = await self.hub.store.hgetall(sources_key(meeting))
            s.send(leg.tag({"type": "sfu.joined", "room": room, "node": placement.node,
                            "sdp": answer["sdp"], "ref": msg.id, "sources": raw}))
            if pair and old is None and await self.hub.store.set_nx(
                    f"pairswitch:{meeting}", "1", 24 * 3600):  # once per pair, not per end
                self.hub.emit("topology.switched", room=room, data={
                    "from": "p2p", "to": "sfu", "reason": "fallback", "pair": True})
            if pair and old is None:  # the other end of the pair follows (it may not know yet)
                await self.hub.presence.deliver(pair, {"type": "sfu.start", "room": room,
                                                       "pair": s.identity, "reason": "peer"})
            return
        raise ProtocolError("sfu_unavailable", "no call server answered", msg.id)

    async def leave(self, s: Session) -> None:
        prefix = leg_key(s.session_id, None)
        for key in [k for k in self.legs if k.startswith(prefix)]:
            await self._stop(self.legs.pop(key), leave=True)

    # -- the node's event stream ----------------------------------------------------------
    async def _follow(self, leg: Leg) -> None:
        url = f"{leg.url}/events"
        while not leg.lost:
            try:
                r = await self.http.get(url, params={"after": leg.after, "wait": POLL_WAIT_S})
                r.raise_for_status()
                events = r.json()["events"]
            except (httpx.HTTPError, ValueError, KeyError):
                self._lose(leg, "node_lost")
                return
            for event in events:
                leg.after = event["seq"]
                etype = event["type"]
                if etype == "offer":
                    raw = await self.hub.store.hgetall(sources_key(leg.meeting))
                    leg.session.send(leg.tag({"type": "sfu.offer", "room": leg.room,
                                              "sdp": event["sdp"], "sources": raw}))
                elif etype == "unpublished":
                    leg.session.send(leg.tag({"type": "sfu.unpublished", "room": leg.room,
                                              "participant": event.get("participant"),
                                              "track": event.get("track")}))
                elif etype == "layer":  # the node moved one of this subscriber's tracks
                    fields = {k: event.get(k) for k in LAYER_FIELDS}
                    leg.session.send(leg.tag({"type": "sfu.layer", "room": leg.room, **fields}))
                    self.hub.emit("layer.changed", room=leg.room, data={
                        "subscriber": leg.session.identity, "node": leg.placement.node,
                        **fields})
                elif etype == "layers":  # dynacast: which of our simulcast layers to encode
                    leg.session.send(leg.tag({"type": "sfu.layers", "room": leg.room,
                                              "track": event.get("track"),
                                              "active": event.get("active")}))
                elif etype == "move":
                    self._lose(leg, event.get("reason") or "move")
                    return
                elif etype == "closed":
                    self._lose(leg, "closed")
                    return

    def _lose(self, leg: Leg, reason: str) -> None:
        """The leg's node is gone or sent us away: re-place the meeting without it and have the
        client open a new session there."""
        if leg.lost or self.legs.get(leg.key) is not leg:
            return
        leg.lost = True
        self._spawn(self._replace(leg, reason))

    async def _replace(self, leg: Leg, reason: str) -> None:
        s = leg.session
        deadline = time.monotonic() + REPLACE_WITHIN_S
        while s.room == leg.room and self.legs.get(leg.key) is leg:
            try:
                # "closed": the node dropped this connection (its ICE failed) but lives on
                gone = () if reason == "closed" else (leg.placement.node,)
                placement = await self.place(leg.room, gone, leg=leg)
            except Exception:
                log.exception("re-placing %s failed", leg.room)
                placement = None
            if placement is not None:
                log.info("%s in %s: %s on %s, moving to %s", s.identity, leg.room, reason,
                         leg.placement.node, placement.node)
                s.send(leg.tag({"type": "sfu.start", "room": leg.room, "reason": reason,
                                "exclude": leg.placement.node}))
                return
            if time.monotonic() > deadline:
                s.send({"type": "error", "code": "sfu_unavailable",
                        "message": f"call server {leg.placement.node} lost ({reason}) and no "
                                   "other takes the meeting"})
                return
            await asyncio.sleep(0.2)

    # -- node liveness (heartbeat expiry) -------------------------------------------------
    def _ensure_monitor(self) -> None:
        if self._monitor is None and hasattr(self.hub.directory, "alive"):
            self._monitor = asyncio.create_task(self._watch_nodes())

    async def _watch_nodes(self) -> None:
        """A node that stops heartbeating (hung, partitioned) may keep its TCP connections
        open: its legs are treated as lost once its registry record expires."""
        alive = self.hub.directory.alive  # type: ignore[attr-defined]
        while True:
            await asyncio.sleep(MONITOR_S)
            nodes = {leg.placement.node for leg in self.legs.values() if not leg.lost}
            for node in nodes:
                try:
                    ok = await alive(node)
                except Exception:
                    continue  # a directory hiccup is not a node failure
                if not ok:
                    for leg in [x for x in self.legs.values() if x.placement.node == node]:
                        self._lose(leg, "node_lost")

    async def _node_alive(self, node: str) -> bool:
        """The directory's word on a node (its heartbeat); False when it has none or fails."""
        alive = getattr(self.hub.directory, "alive", None)
        if alive is None:
            return False
        try:
            return bool(await alive(node))
        except Exception:
            return False

    # -- helpers --------------------------------------------------------------------------
    async def _store_sources(self, room: str, sources: dict[str, str] | None) -> None:
        for track, source in (sources or {}).items():
            await self.hub.store.hset(sources_key(room), track, source)

    async def _stop(self, leg: Leg, leave: bool) -> None:
        leg.lost = True
        if leg.task is not None and leg.task is not asyncio.current_task():
            leg.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await leg.task
        if leave:
            self._spawn_delete(leg)

    def _spawn_delete(self, leg: Leg) -> None:
        async def delete() -> None:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.delete(leg.url)

        self._spawn(delete())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def room_emptied(self, room: str) -> None:
        await self.hub.store.delete(sources_key(room))

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for leg in list(self.legs.values()):
            await self._stop(leg, leave=False)
        self.legs.clear()
        await self.http.aclose()

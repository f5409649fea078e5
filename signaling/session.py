"""One client's WebSocket: authenticate, then read, validate and dispatch messages.

A bad message costs its sender an ``error`` reply, never the connection (except failed
authentication) and never the process. Outbound messages go through a bounded queue drained by
one writer task, so routing from other tasks never interleaves frames and a client that stops
reading is cut off (4413) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from parley import tokens
from parley.signaling import guests, metrics
from parley.signaling import protocol as p
from parley.signaling.hub import Hub
from parley.signaling.limits import BUDGET_OF, connection_buckets
from parley.signaling.negotiation import Caps
from parley.signaling.telemetry import Telemetry
from parley.turn import ice_servers

log = logging.getLogger("parley.signaling.session")
OUTBOX = 1024


class Session:
    def __init__(self, hub: Hub, ws: WebSocket) -> None:
        self.hub = hub
        self.ws = ws
        self.session_id = uuid.uuid4().hex[:12]
        self.identity = ""
        self.name = ""
        self.token: tokens.AccessToken
        self.minted = ""  # a guest token this socket made (/ws?guest=1), for the welcome
        self.room: str | None = None
        self.caps = Caps()
        # what the client says it sends, and whether its hand is raised
        self.media = {"audio": True, "video": True, "hand": False}
        self.calls: set[str] = set()
        self.replaced = False
        self._out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX)
        self._close: tuple[int, str] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._expiry: asyncio.Task[None] | None = None
        o = hub.options
        self._buckets = connection_buckets(o)  # signaling/limits.py
        self.started_at = time.time()  # a guest's refreshes end PARLEY_GUEST_MAX_SESSION_S on
        self.telemetry = Telemetry(o.telemetry_interval_ms, o.telemetry_burst)

    # -- outbound -------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        mtype = msg.get("type")
        if mtype == "call.incoming":
            self.calls.add(msg["callId"])
        elif mtype == "call.ended":
            self.calls.discard(msg["callId"])
            if self.room == f"call-{msg['callId']}":
                self._spawn(self.hub.rooms.leave(self))
        elif mtype == "error":
            metrics.ERRORS.labels(msg["code"]).inc()
        if self._close is not None:
            return
        try:
            self._out.put_nowait(msg)
        except asyncio.QueueFull:
            self.close(p.CLOSE_SLOW_CONSUMER, "client does not read its messages")

    def replaced_elsewhere(self) -> None:
        """A newer connection of this user landed on another replica: it takes over calls and
        room membership, so this one goes without cleaning up."""
        self.replaced = True
        self.close(p.CLOSE_REPLACED, "replaced by a newer connection")

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason[:120])
            with contextlib.suppress(asyncio.QueueFull):
                self._out.put_nowait(None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _writer(self) -> None:
        try:
            while True:
                msg = await self._out.get()
                if msg is None:
                    break
                await self.ws.send_text(json.dumps(msg, separators=(",", ":")))
        except Exception:  # the client went away mid-send; the reader notices too
            pass
        if self._close is not None and self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(*self._close)

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        await self.ws.accept()
        writer = asyncio.create_task(self._writer())
        registered = False
        try:
            if await self._authenticate():
                registered = True
                old = await self.hub.presence.register(self)
                if old is not None and isinstance(old, Session):
                    old.replaced = True
                    self.calls |= old.calls
                    old.close(p.CLOSE_REPLACED, "replaced by a newer connection")
                metrics.CONNECTED.inc()
                self._expiry = asyncio.create_task(self._expire())
                self.send(self._welcome())
                await self.hub.chat.connected(self)  # direct messages that waited
                await self._read_loop()
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("session %s failed", self.session_id)
            self.close(p.CLOSE_INTERNAL, "internal error")
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            if registered:
                metrics.CONNECTED.dec()
                await self._cleanup()
            self.close(self._close[0] if self._close else p.CLOSE_NORMAL, "bye")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 2)

    async def _cleanup(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        try:
            if not self.replaced:
                await self.hub.rooms.leave(self, dropped=self._drop_reason())
                await self.hub.calls.disconnected(self)
            await self.hub.presence.unregister(self)
        except Exception:
            log.exception("cleanup of %s failed", self.identity)

    def _drop_reason(self) -> str:
        """Why a connection still in a room ended (``participant.dropped``): the client's socket
        went away, or the server cut it."""
        if self._close is None:
            return "connection_lost"
        return {p.CLOSE_TOKEN_EXPIRED: "token_expired", p.CLOSE_SLOW_CONSUMER: "slow_consumer",
                p.CLOSE_INTERNAL: "internal"}.get(self._close[0], "closed")

    async def _receive_text(self) -> str | None:
        """The next frame as text; None when the client disconnected."""
        event = await self.ws.receive()
        if event["type"] == "websocket.disconnect":
            return None
        if event.get("text") is not None:
            return event["text"]
        data = event.get("bytes") or b""
        try:
            return data.decode()
        except UnicodeDecodeError:
            return "\x00"  # not JSON: becomes a bad_json error

    async def _authenticate(self) -> bool:
        """Token from ``?token=`` or a first ``auth`` message within the auth timeout; or, with
        ``?guest=1&room=&name=``, a new guest's token minted here (the same checks, grants and
        lifetime as ``POST /api/v1/guest-token``; the welcome hands it to the page)."""
        query = self.ws.query_params
        token = query.get("token")
        if token is None and query.get("guest") == "1":
            try:
                token = self.minted = await guests.new_guest(
                    self.hub.settings, self.hub.users, query.get("room") or "lobby",
                    query.get("name") or "Guest")
            except guests.GuestRefused as exc:
                self.send(p.error(exc.code, exc.message))
                self.close(p.CLOSE_TOKEN_INVALID, exc.code)
                return False
        if token is None:
            try:
                raw = await asyncio.wait_for(self._receive_text(),
                                             self.hub.options.auth_timeout_s)
            except TimeoutError:
                self.send(p.error("not_authenticated", "no auth message in time"))
                self.close(p.CLOSE_AUTH_TIMEOUT, "authentication timeout")
                return False
            if raw is None:
                return False
            try:
                msg = p.parse(raw)
            except p.ProtocolError as exc:
                self.send(p.error(exc.code, str(exc), exc.ref))
                self.close(p.CLOSE_TOKEN_INVALID, "first message must be auth")
                return False
            metrics.MESSAGES.labels(msg.type).inc()
            if msg.type != "auth":
                self.send(p.error("not_authenticated", "send auth first", msg.id))
                self.close(p.CLOSE_TOKEN_INVALID, "first message must be auth")
                return False
            token = msg["token"]
        try:
            self.token = tokens.verify(self.hub.settings.token_secret, token)
        except tokens.TokenError as exc:
            self.send(p.error(exc.code, str(exc)))
            self.close(p.CLOSE_TOKEN_EXPIRED if exc.code == "token_expired"
                       else p.CLOSE_TOKEN_INVALID, exc.code)
            return False
        self.identity, self.name = self.token.identity, self.token.name
        if len(self.identity) > p.MAX_ID_LEN:
            self.send(p.error("token_invalid", "identity too long"))
            self.close(p.CLOSE_TOKEN_INVALID, "token_invalid")
            return False
        if self.token.guest:
            return await self._admit_guest()
        return True

    async def _admit_guest(self) -> bool:
        """A guest token is for a server-made ``guest-`` identity, never a registered user's,
        and never takes over a connected session (only a deployment-minted token does)."""
        if (not self.identity.startswith(tokens.GUEST_PREFIX)
                or await self.hub.users.registered(self.identity)):
            self.send(p.error("token_invalid", "a guest token cannot be for a registered user"))
            self.close(p.CLOSE_TOKEN_INVALID, "token_invalid")
            return False
        if await self.hub.presence.online(self.identity):
            self.send(p.error("identity_in_use", f"{self.identity} is already connected; a "
                              "guest token does not take over a session"))
            self.close(p.CLOSE_IDENTITY_IN_USE, "identity_in_use")
            return False
        return True

    async def _expire(self) -> None:
        """End the session when its token expires (token.refresh restarts this timer)."""
        await asyncio.sleep(max(0.0, self.token.expires_at - time.time()))
        self.send(p.error("token_expired", "the session's token expired; refresh it before "
                          "expiresAt with token.refresh"))
        self.close(p.CLOSE_TOKEN_EXPIRED, "token_expired")

    def _refresh(self, msg: p.Message) -> None:
        """Swap in a fresh token for the same identity (new expiry and grants)."""
        try:
            new = tokens.verify(self.hub.settings.token_secret, msg["token"])
        except tokens.TokenError as exc:
            raise p.ProtocolError(exc.code, str(exc), msg.id) from None
        if new.identity != self.identity:
            raise p.ProtocolError("identity_mismatch", f"the token is for {new.identity!r}, "
                                  f"this session is {self.identity!r}", msg.id)
        if self.token.guest or new.guest:
            self._check_guest_age(new, msg)
        room = self.room
        if room is not None and not room.startswith("call-") and new.room not in ("*", room):
            raise p.ProtocolError("token_invalid", f"the token does not admit room {room!r}",
                                  msg.id)
        self.token = new
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.create_task(self._expire())
        self.send({"type": "token.refreshed", "expiresAt": new.expires_at,
                   "expiresIn": max(0, int(new.expires_at - time.time())),
                   "grants": sorted(new.grants), "ref": msg.id})

    def _check_guest_age(self, new: tokens.AccessToken, msg: p.Message) -> None:
        """A guest lives at most PARLEY_GUEST_MAX_SESSION_S from its first guest token (or
        this connection, if older): past it, its token is not renewed and the session ends at
        the token's expiry."""
        limit = self.hub.options.guest_max_session_s
        began = min(self.started_at, self.token.since, new.since)
        if limit > 0 and time.time() - began >= limit:
            raise p.ProtocolError("guest_session_limit", f"a guest session lives at most "
                                  f"{int(limit)} s; this one ends when its token expires "
                                  "(a new guest token starts a new one)", msg.id,
                                  maxSessionS=int(limit))

    def _limit(self, bucket: str, msg: p.Message) -> None:
        wait = self._buckets[bucket].take()
        if wait:
            raise p.ProtocolError("rate_limited", f"too many {msg.type} messages; retry later",
                                  msg.id, retryAfterMs=int(wait * 1000) + 1)

    def _check_sdp(self, msg: p.Message) -> None:
        """An SDP that sends needs the publish grant; a participant publishes a bounded
        number of tracks."""
        sending = p.sending_tracks(msg["sdp"])
        if sending and not self.token.allows("publish"):
            raise p.ProtocolError("grant_missing", f"{msg.type} sends media but the token "
                                  "lacks the 'publish' grant (make it recvonly)", msg.id,
                                  grant="publish")
        limit = self.hub.options.max_publish_tracks
        if sending > limit:
            raise p.ProtocolError("too_many_tracks", f"{msg.type} sends {sending} tracks; a "
                                  f"participant publishes at most {limit}", msg.id)

    def _welcome(self) -> dict[str, Any]:
        s = self.hub.settings
        return {"type": "welcome", "protocol": 1, "identity": self.identity, "name": self.name,
                "sessionId": self.session_id, "instance": self.hub.instance,
                "grants": sorted(self.token.grants), "expiresAt": self.token.expires_at,
                "expiresIn": max(0, int(self.token.expires_at - time.time())),
                "guest": self.token.guest,
                **({"token": self.minted} if self.minted else {}),
                "telemetryIntervalMs": self.telemetry.interval_ms,
                "iceServers": ice_servers(s.stun_uris, s.turn_uris, s.turn_secret,
                                          self.identity)}

    async def _read_loop(self) -> None:
        while self._close is None:
            raw = await self._receive_text()
            if raw is None:
                return
            try:
                msg = p.parse(raw)
            except p.ProtocolError as exc:
                metrics.MESSAGES.labels("invalid").inc()
                self.send(p.error(exc.code, str(exc), exc.ref))
                continue
            metrics.MESSAGES.labels(msg.type).inc()
            try:
                await self._dispatch(msg)
            except p.ProtocolError as exc:
                self.send(p.error(exc.code, str(exc), exc.ref if exc.ref is not None
                                  else msg.id, **exc.extra))
            except Exception:
                log.exception("handling %s from %s failed", msg.type, self.identity)
                self.send(p.error("internal", f"could not handle {msg.type}", msg.id))

    async def _dispatch(self, msg: p.Message) -> None:
        t = msg.type
        hub = self.hub
        budget = BUDGET_OF.get(t)
        if budget is not None:  # before any work the message asks for (signaling/limits.py)
            self._limit(budget, msg)
        if t == "ping":
            self.send({"type": "pong", "ref": msg.id})
        elif t == "auth":
            raise p.ProtocolError("already_authenticated", "already authenticated", msg.id)
        elif t == "token.refresh":
            self._refresh(msg)
        elif t == "join":
            await hub.rooms.join(self, msg)
            await hub.chat.joined(self)  # the room's recent messages
        elif t == "leave":
            if self.room is None:
                raise p.ProtocolError("not_joined", "not in a room", msg.id)
            room = self.room
            await hub.rooms.leave(self)
            self.send({"type": "left", "room": room, "ref": msg.id})
        elif t == "caps":
            await hub.rooms.update_caps(self, msg)
        elif t == "media":
            await hub.rooms.update_media(self, msg)
        elif t == "offer.standing":
            self._check_sdp(msg)
            await hub.rooms.stand(self, msg)
        elif t in ("offer", "answer", "ice"):
            if t != "ice":
                self._check_sdp(msg)
            await hub.rooms.relay(self, msg)
        elif t.startswith("sfu."):
            if t == "sfu.publish" and not self.token.allows("publish"):
                raise p.ProtocolError("grant_missing", "sfu.publish needs the 'publish' grant",
                                      msg.id, grant="publish")
            if t in ("sfu.join", "sfu.answer"):
                self._check_sdp(msg)
            await hub.sfu.handle(self, msg)
        elif t in ("quality.sample", "client.info"):
            self.telemetry.handle(self, msg)
        elif t == "chat.send":
            await hub.chat.send(self, msg)
        elif t == "chat.ack":
            await hub.chat.ack(self, msg)
        elif t == "chat.history":
            await hub.chat.history(self, msg)
        elif t == "presence":
            await hub.presence.query(self, msg, hub.users)
        elif t == "presence.subscribe":
            await hub.presence.subscribe(self, msg, hub.users)
        elif t == "invite":
            await hub.calls.invite(self, msg)
        elif t == "accept":
            await hub.calls.accept(self, msg)
        elif t == "reject":
            await hub.calls.reject(self, msg)
        elif t == "cancel":
            await hub.calls.cancel(self, msg)
        elif t == "hangup":
            await hub.calls.hangup(self, msg)
        else:  # parse() only lets protocol types through
            raise p.ProtocolError("unknown_type", t, msg.id)

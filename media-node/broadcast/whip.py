"""WHIP ingest (RFC 9725): sources publish to ``POST /live/{broadcast}/whip``.

The bearer token is the stream key: a Parley access token for room ``broadcast:{broadcast}``
with the ``publish`` grant, whose identity is the source's name (``parley token --broadcast B
--source cam1 --grant publish``). Each source's frames go, undecoded, to the broadcast's input
manager (programme.py).
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCIceServer, RTCPeerConnection
from aiortc import sdp as aiosdp

from parley.events import Emitter
from parley.tokens import TokenError, broadcast_room, verify

from ..tasks import spawn
from . import frames, trickle
from .meeting_source import MeetingSources
from .programme import Programme, Source
from .sessions import SessionError, answer, close_quietly, ice_config, new_id, watch_connection

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def check_name(broadcast: str) -> None:
    if not NAME.match(broadcast):
        raise SessionError(404, "broadcast_unknown", "a broadcast name is lower-case letters, "
                           "digits, '-' and '.' (namespace.name in Kubernetes)")


def dtls_server(pc: RTCPeerConnection) -> None:
    """Answer ``a=setup:passive`` to an ``actpass`` offer: the publisher is the DTLS client.

    aiortc as a DTLS client offers only ECDHE-ECDSA ciphers, so a publisher whose DTLS server
    has an RSA certificate (GStreamer's webrtcbin: ``no shared cipher``) could not connect; as
    the server aiortc serves its ECDSA certificate to any client (RFC 8842 lets the answerer
    pick either role)."""
    for t in pc.getTransceivers():
        transport = t.receiver.transport
        if transport._role == "auto":  # an ``active`` offer already made us the server
            transport._set_role("server")


def restart_unsupported() -> SessionError:
    return SessionError(422, "ice_restart_unsupported", "ICE restart is not supported (trickle "
                        "ICE is): DELETE this session and POST a new offer")


@dataclass
class Publishing:
    """One WHIP session: a source's connection."""

    id: str
    broadcast: str
    source: Source
    pc: RTCPeerConnection
    etag: str = field(default_factory=new_id)
    since: float = field(default_factory=time.time)
    remote_ufrag: str | None = None  # the offer's ICE credentials: another ufrag is a restart
    remote_pwd: str | None = None
    trickled: int = 0  # candidates added by PATCH
    candidates_ended: bool = False


class Ingest:
    """The WHIP sessions and programmes of every broadcast this process ingests."""

    def __init__(self, token_secret: str, *, broadcasts: list[str] | None = None,
                 sources: list[str] | None = None,
                 ice_servers: list[RTCIceServer] | None = None,
                 events: Emitter | None = None) -> None:
        """``broadcasts=None``: publishing creates the broadcast (``parley up``); else only the
        named ones are served. ``sources``: names a stream key may publish as (spec.sources).
        ``events``: where broadcast.* analytics events go (default: from the environment)."""
        self.secret = token_secret
        self.fixed = broadcasts
        self.allowed_sources = set(sources) if sources else None
        self.ice_servers = ice_servers
        self.programmes: dict[str, Programme] = {b: Programme(b) for b in broadcasts or []}
        self.sessions: dict[str, Publishing] = {}
        self.refused = 0
        self.events = events or Emitter(os.environ.get("HOSTNAME") or socket.gethostname())
        self.on_air: dict[str, float] = {}  # broadcast -> when its first source connected
        self.meetings: MeetingSources | None = None  # spec.sources[].meeting (meeting_source.py)

    def programme(self, broadcast: str, create: bool = False) -> Programme | None:
        p = self.programmes.get(broadcast)
        if p is None and create and self.fixed is None:
            p = self.programmes[broadcast] = Programme(broadcast)
        return p

    def authorize(self, broadcast: str, token: str, grant: str) -> str:
        """The token's identity if it grants ``grant`` on ``broadcast``; else SessionError."""
        if not token:
            raise SessionError(401, "token_missing", "send the stream key as "
                               "'Authorization: Bearer <token>'",
                               {"WWW-Authenticate": 'Bearer realm="parley"'})
        try:
            access = verify(self.secret, token, room=broadcast_room(broadcast))
        except TokenError as exc:
            raise SessionError(401, exc.code, str(exc),
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from exc
        try:
            access.require(grant)
        except TokenError as exc:
            raise SessionError(403, exc.code, str(exc)) from exc
        return access.identity

    def admit(self, broadcast: str, token: str) -> str:
        """The source a WHIP request publishes as, checked before its body is read."""
        check_name(broadcast)
        if self.fixed is not None and broadcast not in self.programmes:
            raise SessionError(404, "broadcast_unknown", f"this ingest serves "
                               f"{', '.join(self.fixed)}, not {broadcast}")
        name = self.authorize(broadcast, token, "publish")
        if self.allowed_sources is not None and name not in self.allowed_sources:
            raise SessionError(403, "source_unknown", f"source '{name}' is not in the "
                               f"broadcast's sources ({', '.join(sorted(self.allowed_sources))})")
        return name

    async def publish(self, broadcast: str, name: str, offer: str) -> tuple[Publishing, str]:
        """Admit source ``name`` (from ``admit``) with its offer; returns the session and the
        SDP answer."""
        pc = RTCPeerConnection(ice_config(self.ice_servers))
        try:
            await answer(pc, offer, sends=True)
            programme = self.programme(broadcast, create=True)  # an offer we can take
            assert programme is not None
            kinds = {t.kind for t in pc.getTransceivers()}
            receivers = {t.kind: t.receiver for t in pc.getTransceivers()}
            source = Source(name, kinds, lambda: frames.request_keyframe(receivers["video"])
                            if "video" in receivers else None)
            for kind, receiver in receivers.items():
                frames.tap(receiver, kind, lambda f, s=source: programme.on_frame(s, f))
            dtls_server(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except SessionError:
            self.refused += 1
            await close_quietly(pc)
            raise
        session = Publishing(new_id(), broadcast, source, pc)
        ice = aiosdp.SessionDescription.parse(offer).media[0].ice
        if ice is not None:
            session.remote_ufrag, session.remote_pwd = ice.usernameFragment, ice.password
        olds = [s for s in self.sessions.values()
                if s.broadcast == broadcast and s.source.name == name]
        self.sessions[session.id] = session  # first: a replaced source does not end the show
        for old in olds:
            await self._end(old)  # a source that publishes again replaces its old session
        programme.add(source)
        self._connected(session, kinds)
        spawn(watch_connection(pc, lambda: self._end(session)))
        return session, pc.localDescription.sdp

    async def unpublish(self, broadcast: str, sid: str, token: str) -> None:
        """DELETE on the Location: only the source itself (or an admin token) may end it."""
        await self._end(self.owned(broadcast, sid, token))

    def owned(self, broadcast: str, sid: str, token: str) -> Publishing:
        """The session at a Location, if ``token`` is its source's key (or an admin's)."""
        session = self.sessions.get(sid)
        if session is None or session.broadcast != broadcast:
            raise SessionError(404, "session_unknown", "no such WHIP session")
        name = self.authorize(broadcast, token, "publish")
        if name != session.source.name and not self._is_admin(broadcast, token):
            raise SessionError(403, "not_your_session",
                               f"this session belongs to source '{session.source.name}'")
        return session

    async def trickle(self, session: Publishing, content_type: str, if_match: str | None,
                      body: bytes) -> None:
        """PATCH on the Location (RFC 9725 4.3.1): trickled candidates; ICE restart is 422."""
        if content_type != trickle.TRICKLE:
            raise SessionError(415, "content_type", f"PATCH a WHIP session with "
                               f"{trickle.TRICKLE}, not {content_type or 'nothing'}",
                               {"Accept-Patch": trickle.TRICKLE})
        if if_match is not None:
            tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
            if "*" in tags:
                raise restart_unsupported()
            if f'"{session.etag}"' not in tags:
                raise SessionError(412, "etag_mismatch", "If-Match does not name this "
                                   "session's ICE session (its ETag from the 201)")
        mids = [t.mid for t in session.pc.getTransceivers() if t.mid is not None]
        frag = trickle.parse(body, mids)
        if ((frag.ufrag is not None and frag.ufrag != session.remote_ufrag)
                or (frag.pwd is not None and frag.pwd != session.remote_pwd)):
            raise restart_unsupported()
        if frag.candidates and session.candidates_ended:
            raise SessionError(400, "candidates_ended", "a=end-of-candidates came already")
        if session.trickled + len(frag.candidates) > trickle.MAX_CANDIDATES:
            raise SessionError(400, "too_many_candidates", f"at most "
                               f"{trickle.MAX_CANDIDATES} trickled candidates per session")
        ice = session.pc.getTransceivers()[0].receiver.transport.transport  # max-bundle: one
        for candidate in frag.candidates:
            try:
                await ice.addRemoteCandidate(candidate)
            except Exception as exc:  # aioice refuses what it cannot use
                raise trickle.invalid(f"candidate refused: {exc}") from exc
            session.trickled += 1
            session.source.trickled = session.trickled
        if frag.end and not session.candidates_ended:
            session.candidates_ended = True
            await ice.addRemoteCandidate(None)

    def _is_admin(self, broadcast: str, token: str) -> bool:
        try:
            return "admin" in verify(self.secret, token, room=broadcast_room(broadcast)).grants
        except TokenError:
            return False

    async def _end(self, session: Publishing) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        programme = self.programmes.get(session.broadcast)
        if programme is not None:
            programme.remove(session.source)
        await close_quietly(session.pc)
        self._disconnected(session)

    def _connected(self, session: Publishing, kinds: set[str]) -> None:
        """broadcast.started with the first live source, broadcast.source.connected always."""
        b, room = session.broadcast, broadcast_room(session.broadcast)
        if b not in self.on_air:
            self.on_air[b] = session.since
            self.events.emit("broadcast.started", room=room,
                             data={"broadcast": b, "source": session.source.name})
        self.events.emit("broadcast.source.connected", room=room, data={
            "broadcast": b, "source": session.source.name, "kinds": sorted(kinds)})

    def _disconnected(self, session: Publishing) -> None:
        """broadcast.source.disconnected; broadcast.ended when no source is left."""
        b, room, now = session.broadcast, broadcast_room(session.broadcast), time.time()
        self.events.emit("broadcast.source.disconnected", room=room, data={
            "broadcast": b, "source": session.source.name,
            "durationMs": int(1000 * (now - session.since))})
        if b in self.on_air and not any(s.broadcast == b for s in self.sessions.values()):
            self.events.emit("broadcast.ended", room=room, data={
                "broadcast": b, "durationMs": int(1000 * (now - self.on_air.pop(b)))})

    def set_program(self, broadcast: str, token: str, video: str | None,
                    audio: list[str] | None) -> Programme:
        """The programme of ``broadcast`` (an admin token for it): a camera cut or audio change."""
        check_name(broadcast)
        self.authorize(broadcast, token, "admin")
        programme = self.programme(broadcast, create=True)
        if programme is None:
            raise SessionError(404, "broadcast_unknown", f"no broadcast {broadcast} here")
        programme.set_program(video, audio)
        return programme

    async def set_meetings(self, broadcast: str, token: str,
                           entries: list[dict[str, Any]]) -> Programme:
        """Meeting sources of ``broadcast`` (an admin token; `parley up`'s spec.sources)."""
        check_name(broadcast)
        self.authorize(broadcast, token, "admin")
        programme = self.programme(broadcast, create=True)
        if programme is None:
            raise SessionError(404, "broadcast_unknown", f"no broadcast {broadcast} here")
        if self.meetings is None:
            raise SessionError(409, "meetings_unavailable", "this ingest reaches no call server")
        await self.meetings.apply(programme, entries)
        return programme

    async def close(self) -> None:
        if self.meetings is not None:
            await self.meetings.close()
        for s in list(self.sessions.values()):
            await self._end(s)
        for p in self.programmes.values():
            p.close()

"""WHIP ingest (RFC 9725): sources publish to ``POST /live/{broadcast}/whip``.

The bearer token is the stream key: a Parley access token for room ``broadcast:{broadcast}``
with the ``publish`` grant, whose identity is the source's name (``parley token --broadcast B
--source cam1 --grant publish``). Each source's frames go, undecoded, to the broadcast's input
manager (programme.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiortc import RTCIceServer, RTCPeerConnection

from parley.tokens import TokenError, broadcast_room, verify

from ..tasks import spawn
from . import frames
from .programme import Programme, Source
from .sessions import SessionError, answer, close_quietly, ice_config, new_id, watch_connection

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def check_name(broadcast: str) -> None:
    if not NAME.match(broadcast):
        raise SessionError(404, "broadcast_unknown", "a broadcast name is lower-case letters, "
                           "digits, '-' and '.' (namespace.name in Kubernetes)")


@dataclass
class Publishing:
    """One WHIP session: a source's connection."""

    id: str
    broadcast: str
    source: Source
    pc: RTCPeerConnection
    etag: str = field(default_factory=new_id)


class Ingest:
    """The WHIP sessions and programmes of every broadcast this process ingests."""

    def __init__(self, token_secret: str, *, broadcasts: list[str] | None = None,
                 sources: list[str] | None = None,
                 ice_servers: list[RTCIceServer] | None = None) -> None:
        """``broadcasts=None``: publishing creates the broadcast (``parley up``); else only the
        named ones are served. ``sources``: names a stream key may publish as (spec.sources)."""
        self.secret = token_secret
        self.fixed = broadcasts
        self.allowed_sources = set(sources) if sources else None
        self.ice_servers = ice_servers
        self.programmes: dict[str, Programme] = {b: Programme(b) for b in broadcasts or []}
        self.sessions: dict[str, Publishing] = {}
        self.refused = 0

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
            await pc.setLocalDescription(await pc.createAnswer())
        except SessionError:
            self.refused += 1
            await close_quietly(pc)
            raise
        session = Publishing(new_id(), broadcast, source, pc)
        for old in [s for s in self.sessions.values()
                    if s.broadcast == broadcast and s.source.name == name]:
            await self._end(old)  # a source that publishes again replaces its old session
        self.sessions[session.id] = session
        programme.add(source)
        spawn(watch_connection(pc, lambda: self._end(session)))
        return session, pc.localDescription.sdp

    async def unpublish(self, broadcast: str, sid: str, token: str) -> None:
        """DELETE on the Location: only the source itself (or an admin token) may end it."""
        session = self.sessions.get(sid)
        if session is None or session.broadcast != broadcast:
            raise SessionError(404, "session_unknown", "no such WHIP session")
        name = self.authorize(broadcast, token, "publish")
        if name != session.source.name and not self._is_admin(broadcast, token):
            raise SessionError(403, "not_your_session",
                               f"this session belongs to source '{session.source.name}'")
        await self._end(session)

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

    async def close(self) -> None:
        for s in list(self.sessions.values()):
            await self._end(s)
        for p in self.programmes.values():
            p.close()

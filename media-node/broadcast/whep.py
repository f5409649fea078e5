"""WHEP playback (draft-ietf-wish-whep): viewers ``POST /live/{broadcast}[/{rendition}]/whep``.

A viewer's connection gets one ``FrameTrack`` per kind from the feed it plays: encoded frames
packetized by aiortc's sender, never encoded again. A keyframe request (PLI/FIR) from the viewer
goes to the feed, which asks its origin (rate-limited). Public broadcasts need no token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import RTCIceServer, RTCPeerConnection

from ..tasks import spawn
from .feed import Feed
from .frames import FrameTrack
from .sessions import SessionError, answer, close_quietly, ice_config, new_id, watch_connection

FeedLookup = Callable[[str, str | None], Feed | None]


@dataclass
class Viewing:
    """One WHEP session."""

    id: str
    broadcast: str
    rendition: str | None
    feed: Feed
    pc: RTCPeerConnection
    tracks: list[FrameTrack] = field(default_factory=list)
    etag: str = field(default_factory=new_id)


class Playback:
    """The WHEP sessions of this process; ``lookup(broadcast, rendition)`` finds the feed."""

    def __init__(self, lookup: FeedLookup, ice_servers: list[RTCIceServer] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.lookup = lookup
        self.ice_servers = ice_servers
        self.sessions: dict[str, Viewing] = {}
        self.on_change = on_change or (lambda: None)
        self.refused = 0

    async def play(self, broadcast: str, rendition: str | None,
                   offer: str) -> tuple[Viewing, str]:
        feed = self.lookup(broadcast, rendition)
        if feed is None:
            raise SessionError(404, "broadcast_unknown", f"nothing plays {broadcast}"
                               + (f"/{rendition}" if rendition else "") + " here")
        pc = RTCPeerConnection(ice_config(self.ice_servers))
        session = Viewing(new_id(), broadcast, rendition, feed, pc)
        try:
            await answer(pc, offer, sends=False)
            for t in pc.getTransceivers():
                track = feed.track(t.kind)
                session.tracks.append(track)
                t.sender.replaceTrack(track)
                t.direction = "sendonly"
                t.sender._send_keyframe = feed.request_keyframe  # type: ignore[method-assign]
            await pc.setLocalDescription(await pc.createAnswer())
        except SessionError:
            self.refused += 1
            await self._drop(session)
            raise
        self.sessions[session.id] = session
        spawn(watch_connection(pc, lambda: self.stop(session.id)))
        self.on_change()
        return session, pc.localDescription.sdp

    async def stop(self, sid: str) -> bool:
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        await self._drop(session)
        self.on_change()
        return True

    async def _drop(self, session: Viewing) -> None:
        for track in session.tracks:
            session.feed.remove(track)
        await close_quietly(session.pc)

    def viewers(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sessions.values():
            out[s.broadcast] = out.get(s.broadcast, 0) + 1
        return out

    async def close(self) -> None:
        for sid in list(self.sessions):
            await self.stop(sid)

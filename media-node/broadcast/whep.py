"""WHEP playback (draft-ietf-wish-whep): viewers ``POST /live/{broadcast}[/{rendition}]/whep``.

A viewer of a ``Feed`` (ingest, transcoder) gets one ``FrameTrack`` per kind: encoded frames
packetized by aiortc's sender, never encoded again. A viewer of a ``PacketFeed`` (relay, edge)
gets the upstream's RTP packets forwarded to its m-lines (edge_fanout.py), and aiortc's senders
only negotiate and send RTCP. A keyframe request (PLI/FIR) from the viewer
goes to the feed, which asks its origin (rate-limited). Public broadcasts need no token. An
ingest's programme sessions carry the programme timestamp of each video frame (timeline.py), so
separate transcoder processes put their keyframes on the same source frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCIceServer, RTCPeerConnection

from ..subscriber import SilentTrack
from ..tasks import spawn
from . import timeline
from .edge_fanout import PacketFeed
from .feed import Feed
from .sessions import SessionError, answer, close_quietly, ice_config, new_id, watch_connection

FeedLookup = Callable[[str, str | None], Feed | PacketFeed | None]


@dataclass
class Viewing:
    """One WHEP session."""

    id: str
    broadcast: str
    rendition: str | None
    feed: Feed | PacketFeed
    pc: RTCPeerConnection
    tracks: list[Any] = field(default_factory=list)  # FrameTracks, or its EdgeViewer
    etag: str = field(default_factory=new_id)


class Playback:
    """The WHEP sessions of this process; ``lookup(broadcast, rendition)`` finds the feed."""

    def __init__(self, lookup: FeedLookup, ice_servers: list[RTCIceServer] | None = None,
                 on_change: Callable[[], None] | None = None,
                 stamp_timeline: bool = False) -> None:
        self.lookup = lookup
        self.stamp_timeline = stamp_timeline  # the programme's timestamps in its video (ingest)
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
            if isinstance(feed, PacketFeed):
                for t in pc.getTransceivers():
                    t.sender.replaceTrack(SilentTrack(t.kind, f"{feed.name}/{t.kind}"))
                    t.direction = "sendonly"
                await pc.setLocalDescription(await pc.createAnswer())
                session.tracks.append(feed.join(session.id, pc))
            else:
                await self._frames(session, feed, rendition)
        except SessionError:
            self.refused += 1
            await self._drop(session)
            raise
        self.sessions[session.id] = session
        spawn(watch_connection(pc, lambda: self.stop(session.id)))
        self.on_change()
        return session, pc.localDescription.sdp

    async def _frames(self, session: Viewing, feed: Feed, rendition: str | None) -> None:
        """A frame feed's tracks on the session's m-lines, then the answer."""
        pc = session.pc
        for t in pc.getTransceivers():
            track = feed.track(t.kind)
            if self.stamp_timeline and t.kind == "video" and rendition is None:
                track.rewrite = timeline.stamp
            session.tracks.append(track)
            t.sender.replaceTrack(track)
            t.direction = "sendonly"
            t.sender._send_keyframe = feed.request_keyframe  # type: ignore[method-assign]
        await pc.setLocalDescription(await pc.createAnswer())

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

"""A broadcast source that is a Meeting (``spec.sources[].meeting``): the meeting's active
speaker, or one named participant, taken from its call server without decoding in it.

**How.** The ingest joins the meeting on its call server as a **hidden participant**: through the
call server's control API (the one signaling drives), with ``publish: false`` (it never sends
media, so nobody receives a track from it) and the service identity ``broadcast:{b}/{source}``
as its label. Signaling never hears of it (participants lists come from signaling's own
sessions), so nobody in the meeting sees it. It authenticates with the call server's **control
key** (``Authorization: Bearer``): the credential signaling and the operator use; the ingest has
it as ``PARLEY_CONTROL_KEY`` or derives it from ``PARLEY_TOKEN_SECRET``, like every node
(``parley.tokens.control_key``). A per-participant service token would need a second auth path
in the call server; the control key is already what may add participants to a meeting.

It subscribes to every participant (the call server offers each published track on the
hidden participant's event stream; the ingest answers), taps each track's encoded frames
(frames.tap: H.264 is forwarded as the call server sends it, never decoded) and forwards
the chosen participant's video and audio into the programme as one source. The chosen one is
``participant`` when named, else the active speaker (active_speaker.py: Opus decoded in the
ingest for levels, the call server untouched). A change of speaker asks the new one for a
keyframe (PLI through the call server to the publisher) and switches video and audio on that
keyframe; until then the old one stays on air. Timestamps are re-based on a switch, so the
programme sees one continuous source.

Codecs: the broadcast path carries H.264. H.264 publishers are forwarded as they are; a VP8
publisher (what a browser in a meeting sends) is converted to H.264 in the ingest while on air
(vp8_to_h264.py: one decode + one encode, the participant on air only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiosdp

from . import frames
from .active_speaker import ActiveSpeaker
from .frames import CLOCK, Frame, h264_is_keyframe
from .programme import Programme, Source
from .sessions import close_quietly, ice_config

CallServerLocator = Callable[[str], Awaitable[str | None]]  # meeting -> control API URL
Authorize = Callable[[str], Awaitable[None]]  # meeting -> raises unless it may be broadcast
H264, VP8 = "video/h264", "video/vp8"
RETRY_S = 2.0
RECHECK_S = 30.0  # authorization asked again while joined
log = logging.getLogger("parley.broadcast.meeting")


def vp8_is_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: the frame tag's lowest bit is 0 on a key frame."""
    return bool(data) and not data[0] & 1


class _Track:
    __slots__ = ("codec", "kind", "owner", "receiver", "track_id")

    def __init__(self, owner: str, track_id: str, kind: str, receiver: Any, codec: str) -> None:
        self.owner, self.track_id, self.kind = owner, track_id, kind
        self.receiver, self.codec = receiver, codec


class MeetingSource:
    """One ``spec.sources[]`` entry with a ``meeting``, as a source of ``programme``."""

    def __init__(self, programme: Programme, name: str, meeting: str, participant: str | None,
                 locate: CallServerLocator, control_key: str,
                 authorize: Authorize | None = None) -> None:
        """``authorize``: asked before each join and every ``RECHECK_S`` while joined (in
        Kubernetes, the apiserver's RBAC: meeting_access.py); None where the process is the
        whole deployment (``parley up``)."""
        self.programme = programme
        self.name = name
        self.meeting = meeting
        self.participant = participant
        self.locate = locate
        self.authorize = authorize
        self._authorized_at = 0.0
        self.control_key = control_key
        self.label = f"broadcast:{programme.broadcast}/{name}"
        self.source = Source(name, {"video", "audio"}, self._request_keyframe)
        self.tracks: dict[int, _Track] = {}  # id(receiver) -> track
        self.on_air: str | None = None  # participant label whose frames are forwarded
        self.pending: str | None = None  # the next one, waiting for its keyframe
        self.speaker = ActiveSpeaker(self.label, self._speaker_changed)
        self.switches = 0
        self.url: str | None = None
        self.pid: str | None = None
        self.error: str | None = None
        self._offset: dict[str, int] = {}
        self._last: dict[str, tuple[int, float]] = {}
        self._origin: dict[str, str] = {}
        self._pc: RTCPeerConnection | None = None
        self._http = httpx.AsyncClient(timeout=30, headers={
            "Authorization": f"Bearer {control_key}"})
        self._task: asyncio.Task[None] | None = None
        self._added = False
        self._own_mids: set[str | None] = set()
        self._vp8: Any = None  # Vp8ToH264, made when a VP8 participant first goes on air

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.speaker.start()
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        self.speaker.stop()
        if self._vp8 is not None:
            self._vp8.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._leave()
        if self._added:
            self.programme.remove(self.source)
            self._added = False
        await self._http.aclose()

    async def _run(self) -> None:
        """Join, follow the event stream; on any failure leave and join again."""
        while True:
            try:
                await self._join()
                await self._events()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error = str(exc) or type(exc).__name__
                log.warning("%s: meeting %s: %s", self.label, self.meeting, self.error)
            await self._leave()
            await asyncio.sleep(RETRY_S)

    async def _check(self) -> None:
        if self.authorize is not None:
            await self.authorize(self.meeting)
            self._authorized_at = time.monotonic()

    async def _join(self) -> None:
        await self._check()
        self.url = await self.locate(self.meeting)
        if self.url is None:
            raise RuntimeError(f"no call server has meeting {self.meeting}")
        pc = self._pc = RTCPeerConnection(ice_config())
        pc.addTransceiver("audio", "recvonly")  # an offer needs one m-line for the transport
        await pc.setLocalDescription(await pc.createOffer())
        r = await self._http.post(f"{self.url}/v1/meetings/{self.meeting}/participants", json={
            "sdp": pc.localDescription.sdp, "type": "offer", "participant": self.label,
            "publish": False, "subscribe": True})
        r.raise_for_status()
        body = r.json()
        self.pid = body["participant"]
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
        self._own_mids = {t.mid for t in pc.getTransceivers()}  # the transport's m-line
        self.error = None

    async def _leave(self) -> None:
        pc, pid, self._pc, self.pid = self._pc, self.pid, None, None
        if pid is not None and self.url is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self._http.delete(f"{self.url}/v1/meetings/{self.meeting}/participants/"
                                        f"{pid}")
        if pc is not None:
            await close_quietly(pc)
        for t in list(self.tracks.values()):
            self._gone(t)

    # -- the call server's event stream ---------------------------------------------------------
    async def _events(self) -> None:
        after = 0
        me = f"{self.url}/v1/meetings/{self.meeting}/participants/{self.pid}"
        while self._pc is not None:
            if (self.authorize is not None
                    and time.monotonic() - self._authorized_at >= RECHECK_S):
                await self._check()  # a grant withdrawn ends the source (it rejoins when back)
            r = await self._http.get(f"{me}/events", params={"after": after, "wait": 20})
            r.raise_for_status()
            for event in r.json()["events"]:
                after = event["seq"]
                kind = event["type"]
                if kind == "offer":
                    await self._answer(me, event["sdp"])
                elif kind == "unpublished":
                    for t in [t for t in self.tracks.values()
                              if t.track_id == event.get("track")]:
                        self._gone(t)
                elif kind in ("closed", "move"):
                    raise RuntimeError(f"the call server ended the session ({kind})")

    async def _answer(self, me: str, offer: str) -> None:
        pc = self._pc
        assert pc is not None
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        owners = {}
        for m in aiosdp.SessionDescription.parse(offer).media:
            if m.msid and " " in m.msid:
                owners[m.rtp.muxId] = m.msid.split(" ", 1)
        for t in pc.getTransceivers():
            who = owners.get(t.mid)
            if (who is None or id(t.receiver) in self.tracks or t.kind not in CLOCK
                    or t.mid in self._own_mids):
                continue
            codec = t._codecs[0].mimeType.lower() if t._codecs else ""
            track = _Track(who[0], who[1], t.kind, t.receiver, codec)
            self.tracks[id(t.receiver)] = track
            frames.tap(t.receiver, t.kind, lambda f, tr=track: self._frame(tr, f))
        await pc.setLocalDescription(await pc.createAnswer())
        r = await self._http.post(f"{me}/sdp", json={"sdp": pc.localDescription.sdp,
                                                     "type": "answer"})
        r.raise_for_status()
        self._choose()

    def _gone(self, track: _Track) -> None:
        self.tracks.pop(id(track.receiver), None)
        if not any(t.owner == track.owner for t in self.tracks.values()):
            self.speaker.forget(track.owner)
            if self.on_air == track.owner:
                self.on_air = None
            if self.pending == track.owner:
                self.pending = None
        self._choose()

    # -- who is on air ---------------------------------------------------------------------------
    def _speaker_changed(self, who: str) -> None:
        self._choose()

    def _wanted(self) -> str | None:
        owners = [t.owner for t in self.tracks.values()
                  if t.kind == "video" and t.codec in (H264, VP8)]
        if self.participant is not None:
            return self.participant if self.participant in owners else None
        if self.speaker.current in owners:
            return self.speaker.current
        return self.on_air if self.on_air in owners else (owners[0] if owners else None)

    def _choose(self) -> None:
        wanted = self._wanted()
        if wanted is not None and not self._added:
            self._added = True
            self.programme.add(self.source)
        if wanted == self.on_air:
            self.pending = None
        elif wanted != self.pending:
            self.pending = wanted
            if self.on_air is None and wanted is not None:
                self._request_keyframe()
            elif wanted is not None:
                self._keyframe_of(wanted)

    def _request_keyframe(self) -> None:
        """The programme asks (a cut to this source, a new viewer): the participant on air or
        the one coming."""
        for who in (self.on_air, self.pending):
            if who is not None:
                self._keyframe_of(who)
        if self._vp8 is not None:
            self._vp8.keyframe()

    def _keyframe_of(self, who: str) -> None:
        for t in self.tracks.values():
            if t.owner == who and t.kind == "video":
                frames.request_keyframe(t.receiver)

    # -- the hot path: every tapped frame --------------------------------------------------------
    def _frame(self, track: _Track, frame: Frame) -> None:
        kind = track.kind
        if kind == "audio":
            self.speaker.put(track.owner, frame.data)
        elif track.owner == self.pending and (vp8_is_keyframe(frame.data) if track.codec == VP8
                                              else h264_is_keyframe(frame.data)):
            self.on_air, self.pending = self.pending, None
            self.switches += 1
        if track.owner != self.on_air:
            return
        if track.codec == VP8:
            self._converter().put(track.owner, frame)
            return
        self._forward(track.owner, frame)

    def _converter(self) -> Any:
        if self._vp8 is None:
            from .vp8_to_h264 import Vp8ToH264  # the ladder encoder: only when needed

            self._vp8 = Vp8ToH264(self.label, self._forward, self._keyframe_of)
        return self._vp8

    def _forward(self, owner: str, frame: Frame) -> None:
        """Into the programme as this source, on one continuous timeline per kind."""
        kind = frame.kind
        if owner != self.on_air:  # converted just after a switch away
            return
        if self._origin.get(kind) != owner:  # a switch: continue the source's timeline
            self._origin[kind] = owner
            last = self._last.get(kind)
            now = time.monotonic()
            self._offset[kind] = (-frame.ts if last is None else
                                  last[0] + max(1, int((now - last[1]) * CLOCK[kind])) - frame.ts)
        ts = (frame.ts + self._offset[kind]) & 0xFFFFFFFF
        self._last[kind] = (ts, time.monotonic())
        self.programme.on_frame(self.source, Frame(kind, frame.data, ts, frame.key))

    def status(self) -> dict[str, Any]:
        owners: dict[str, list[str]] = {}
        for t in self.tracks.values():
            owners.setdefault(t.owner, []).append(f"{t.kind}:{t.codec}")
        return {"meeting": self.meeting, "participant": self.participant,
                "callServer": self.url, "joined": self.pid is not None, "error": self.error,
                "onAir": self.on_air, "pending": self.pending, "switches": self.switches,
                "activeSpeaker": self.speaker.current, "levels": self.speaker.levels(),
                "converted": None if self._vp8 is None else {
                    "frames": self._vp8.frames, "dropped": self._vp8.dropped,
                    "errors": self._vp8.errors},
                "participants": {k: sorted(v) for k, v in owners.items()}}


class MeetingSources:
    """The meeting sources of every broadcast of one ingest, kept as the spec says."""

    def __init__(self, locate: CallServerLocator, control_key: str,
                 authorize: Authorize | None = None) -> None:
        self.locate = locate
        self.control_key = control_key
        self.authorize = authorize
        self.running: dict[tuple[str, str], MeetingSource] = {}

    async def apply(self, programme: Programme, entries: list[dict[str, Any]]) -> None:
        """``entries``: spec.sources items with a ``meeting``; others end."""
        b = programme.broadcast
        wanted = {e["name"]: e for e in entries if e.get("meeting")}
        for (broadcast, name), ms in list(self.running.items()):
            e = wanted.get(name) if broadcast == b else None
            if broadcast == b and (e is None or (e["meeting"], e.get("participant")) != (
                    ms.meeting, ms.participant)):
                del self.running[(broadcast, name)]
                await ms.close()
        for name, e in wanted.items():
            if (b, name) not in self.running:
                ms = MeetingSource(programme, name, e["meeting"], e.get("participant"),
                                   self.locate, self.control_key, self.authorize)
                self.running[(b, name)] = ms
                ms.start()

    def status(self, broadcast: str) -> dict[str, Any]:
        return {name: ms.status() for (b, name), ms in self.running.items() if b == broadcast}

    async def close(self) -> None:
        for ms in list(self.running.values()):
            await ms.close()
        self.running.clear()

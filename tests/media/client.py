"""An aiortc participant for call-server tests: publishes real VP8 video and Opus audio, decodes
what it receives, and does what signaling would do with the call server's control API (answer
server offers, follow moves, fail over to another node)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

import av
import httpx
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack

from parley import tokens

# The deployment's token secret in these tests; call servers get only its control key.
TEST_SECRET = "call-server-tests-token-secret-0123456789"
CONTROL_KEY = tokens.control_key(TEST_SECRET)
CONTROL = tokens.control_headers(TEST_SECRET)


class PatternVideo(VideoStreamTrack):
    """Small moving test pattern (so VP8 really encodes something), 30 fps."""

    def __init__(self, track_id: str, size: tuple[int, int] = (160, 120)) -> None:
        super().__init__()
        self._id = track_id
        self.size = size
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        w, h = self.size
        frame = av.VideoFrame(w, h, "yuv420p")
        self.n += 1
        y = bytes(((x + self.n * 3) & 0xFF) for x in range(w)) * h
        frame.planes[0].update(y[: frame.planes[0].buffer_size])
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneAudio(AudioStreamTrack):
    def __init__(self, track_id: str) -> None:
        super().__init__()
        self._id = track_id


class Client:
    """One participant with one peer connection to a call server."""

    def __init__(self, name: str, meeting: str, video: bool = True, audio: bool = True,
                 headers: dict[str, str] | None = None, publish: bool = True) -> None:
        self.name = name
        self.publish_allowed = publish  # False: joins subscribe-only (no publish grant)
        self.meeting = meeting
        self.video = video
        self.audio = audio
        self.url = ""
        self.pid: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.frames: dict[str, int] = defaultdict(int)  # remote track id -> decoded frames
        self.first_frame: dict[str, float] = {}
        self.connected_at: float | None = None
        self.joined_at: float | None = None
        self.moves: list[dict[str, Any]] = []
        self.node_lost = asyncio.Event()
        self.http = httpx.AsyncClient(timeout=30, headers=CONTROL if headers is None else headers)
        self._tasks: list[asyncio.Task[Any]] = []
        self._after = 0
        self.extra: list[MediaStreamTrack] = []  # published after joining; kept on re-join
        self.to_publish: list[MediaStreamTrack] = []
        # set: the join offer has a recvonly video m-line listing only these codecs (what a
        # client that decodes nothing else announces); the server's offers are kept
        self.video_codecs: list[str] | None = None
        # set: the extra video tracks are offered in these codecs only (a camera forced to VP9)
        self.send_codecs: list[str] | None = None
        self.offers: list[str] = []

    @property
    def me(self) -> str:
        """This participant's session on its node."""
        return f"{self.url}/v1/meetings/{self.meeting}/participants/{self.pid}"

    async def join(self, url: str) -> None:
        """(Re)join the meeting on the call server at ``url`` with a fresh connection."""
        await self._drop_pc()
        self.url = url
        self._after = 0
        self.frames.clear()
        self.first_frame.clear()
        self.connected_at = None
        self.node_lost = asyncio.Event()
        self.joined_at = time.monotonic()
        pc = self.pc = RTCPeerConnection(RTCConfiguration(
            iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        if self.video:
            pc.addTransceiver(PatternVideo(f"{self.name}-camera"), "sendonly")
        if self.audio:
            pc.addTransceiver(ToneAudio(f"{self.name}-mic"), "sendonly")
        for t in self.extra:
            sending = pc.addTransceiver(t, "sendonly")
            if self.send_codecs and t.kind == "video":
                caps = RTCRtpSender.getCapabilities("video").codecs
                sending.setCodecPreferences([c for c in caps
                                             if c.mimeType.lower() in self.send_codecs])
        if self.video_codecs:
            caps = RTCRtpSender.getCapabilities("video").codecs
            pc.addTransceiver("video", "recvonly").setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in self.video_codecs])
        if not pc.getTransceivers():  # a viewer: an offer needs one m-line for the transport
            pc.addTransceiver("audio", "recvonly")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected" and self.connected_at is None:
                self.connected_at = time.monotonic()

        await pc.setLocalDescription(await pc.createOffer())
        r = await self.http.post(f"{url}/v1/meetings/{self.meeting}/participants",
                                 json={"sdp": pc.localDescription.sdp, "type": "offer",
                                       "participant": self.name,
                                       "publish": self.publish_allowed})
        r.raise_for_status()
        body = r.json()
        self.pid = body["participant"]
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
        self._tasks.append(asyncio.ensure_future(self._events(pc)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()
                self.frames[track.id] += 1
                self.first_frame.setdefault(track.id, time.monotonic())

    async def _events(self, pc: RTCPeerConnection) -> None:
        while pc is self.pc:
            try:
                r = await self.http.get(f"{self.me}/events",
                                        params={"after": self._after, "wait": 10})
                r.raise_for_status()
            except (httpx.HTTPError, OSError):
                self.node_lost.set()  # the node died (or forgot us): signaling would re-place
                return
            for event in r.json()["events"]:
                self._after = event["seq"]
                if event["type"] == "offer":
                    self.offers.append(event["sdp"])
                    await pc.setRemoteDescription(RTCSessionDescription(event["sdp"], "offer"))
                    for t in pc.getTransceivers():
                        if (t.sender.track is None and t._offerDirection == "sendonly"
                                and any(x.kind == t.kind for x in self.to_publish)):
                            track = next(x for x in self.to_publish if x.kind == t.kind)
                            self.to_publish.remove(track)
                            self.extra.append(track)
                            t.sender.replaceTrack(track)
                            t.direction = "sendonly"
                    await pc.setLocalDescription(await pc.createAnswer())
                    await self.http.post(f"{self.me}/sdp",
                                         json={"sdp": pc.localDescription.sdp,
                                               "type": "answer"})
                elif event["type"] == "move":
                    self.moves.append(event)
                    self.node_lost.set()
                    return
                elif event["type"] == "closed":
                    self.node_lost.set()
                    return

    async def publish(self, track: MediaStreamTrack) -> None:
        """Publish one more track (a screen share): ask the call server for an m-line; its offer
        arrives on the event stream and the answer attaches the track."""
        self.to_publish.append(track)
        r = await self.http.post(f"{self.me}/publish",
                                 json={"kinds": [track.kind]})
        r.raise_for_status()

    def decoding_from(self, others: list[str], kinds: tuple[str, ...] = ("camera", "mic"),
                      minimum: int = 5) -> bool:
        return all(self.frames.get(f"{o}-{k}", 0) >= minimum for o in others for k in kinds)

    async def _drop_pc(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        if self.pc is not None:
            pc, self.pc = self.pc, None
            await pc.close()

    async def close(self, leave: bool = True) -> None:
        if leave and self.pid and self.url:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.delete(self.me)
        await self._drop_pc()
        await self.http.aclose()


async def wait_for(check: Any, limit: float, what: str, interval: float = 0.05) -> float:
    """Await until ``check()`` is truthy; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():
            return time.monotonic() - start
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


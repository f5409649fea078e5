"""aiortc WHIP publishers and WHEP viewers for broadcast tests (real WebRTC over loopback).

The publisher encodes H.264 with aiortc's own encoder (libx264 through PyAV) and Opus; each source
draws frames of its own size, so a viewer can tell which camera is on air from what it decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from tests.media.client import PatternVideo, ToneAudio

H264 = "video/h264"


def _prefer(pc: RTCPeerConnection, video_mime: str = H264) -> None:
    for t in pc.getTransceivers():
        if t.kind == "video":
            caps = RTCRtpSender.getCapabilities("video").codecs
            t.setCodecPreferences([c for c in caps if c.mimeType.lower() == video_mime])


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[],
                                              bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


class Publisher:
    """A camera: H.264 test pattern of ``size`` plus an Opus tone, published over WHIP."""

    def __init__(self, base: str, broadcast: str, token: str, size: tuple[int, int],
                 video_mime: str = H264, audio: MediaStreamTrack | None = None) -> None:
        self.url = f"{base}/live/{broadcast}/whip"
        self.base = base
        self.token = token
        self.pc = _pc()
        self.pc.addTransceiver(PatternVideo("cam", size), "sendonly")
        self.pc.addTransceiver(audio or ToneAudio("mic"), "sendonly")
        _prefer(self.pc, video_mime)
        self.location: str | None = None
        self.connected = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def changed() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def publish(self) -> httpx.Response:
        offer = await self.offer()
        async with httpx.AsyncClient(timeout=20) as http:
            r = await http.post(self.url, content=offer, headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"})
        if r.status_code == 201:
            self.location = r.headers["location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        return r

    async def stop(self, delete: bool = True) -> None:
        if delete and self.location:
            async with httpx.AsyncClient(timeout=10) as http:
                await http.delete(self.base + self.location,
                                  headers={"Authorization": f"Bearer {self.token}"})
        await self.pc.close()


class Viewer:
    """A WHEP player: decodes what it receives, records each video frame's size and time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pc = _pc()
        self.pc.addTransceiver("video", "recvonly")
        self.pc.addTransceiver("audio", "recvonly")
        self.video: list[tuple[float, int, int]] = []  # (arrival, width, height)
        self.audio_frames = 0
        self.location: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def play(self) -> httpx.Response:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient(timeout=20) as http:
            r = await http.post(self.url, content=self.pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp"})
        if r.status_code == 201:
            self.location = r.headers["location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        return r

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video.append((time.monotonic(), frame.width, frame.height))
                else:
                    self.audio_frames += 1

    def sizes(self) -> list[tuple[int, int]]:
        return [(w, h) for _, w, h in self.video]

    def max_gap(self, since: float) -> float:
        times = [t for t, _, _ in self.video if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()

"""Encoded frames in and out of aiortc without decoding (frame-level forwarding).

In: aiortc's ``RTCRtpReceiver`` depacketizes and reassembles frames in its jitter buffer, then
hands each one to a decoder thread through a queue. ``tap`` swaps that queue for one whose ``put``
calls back with the encoded frame, on the event loop, so nothing is decoded (the idle decoder
thread only waits for the stop marker). H.264 arrives as an Annex-B byte stream, Opus as packets.

Out: a track whose ``recv`` returns ``av.Packet`` objects is sent by ``RTCRtpSender`` through its
encoder's ``pack`` (packetize only, no encode). ``FrameTrack`` is such a track for one viewer: it
holds the viewer until a keyframe, and drops (and asks for a keyframe again) rather than queueing
when the viewer's connection falls behind.
"""

from __future__ import annotations

import asyncio
import fractions
import queue
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from ..tasks import spawn
from .jitter import VIDEO_CAPACITY, AudioOnArrival, MarkerJitterBuffer

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000
CLOCK = {"video": VIDEO_CLOCK, "audio": AUDIO_CLOCK}
_TIME_BASE = {k: fractions.Fraction(1, v) for k, v in CLOCK.items()}
QUEUE_LIMIT = {"video": 30, "audio": 50}  # about 1 s: beyond that a viewer fell behind


class Frame:
    """One encoded frame: H.264 access unit (Annex B) or one Opus packet."""

    __slots__ = ("data", "key", "kind", "ts")

    def __init__(self, kind: str, data: bytes, ts: int, key: bool) -> None:
        self.kind = kind
        self.data = data
        self.ts = ts  # in CLOCK[kind] units, monotonic per origin
        self.key = key


def h264_is_keyframe(data: bytes) -> bool:
    """True when an Annex-B access unit holds an IDR slice or SPS (NAL types 5, 7)."""
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        if data[i + 3] & 0x1F in (5, 7):
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


class _Tap(queue.Queue):  # type: ignore[type-arg]
    """Stands in for the receiver's decoder queue: frames go to ``on_frame``; only the stop
    marker (None) reaches the decoder thread, which then exits."""

    def __init__(self, on_frame: Callable[[Any, Any], None]) -> None:
        super().__init__()
        self.on_frame = on_frame

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
        else:
            self.on_frame(*item)


def tap(receiver: RTCRtpReceiver, kind: str, on_frame: Callable[[Frame], None]) -> None:
    """Deliver ``receiver``'s encoded frames to ``on_frame`` instead of its decoder. Call it
    before the connection starts (after setRemoteDescription/setLocalDescription)."""
    is_key = h264_is_keyframe if kind == "video" else (lambda _: True)

    def frame(codec: Any, encoded: Any) -> None:
        data = encoded.data
        on_frame(Frame(kind, data, encoded.timestamp, is_key(data)))

    receiver._RTCRtpReceiver__decoder_queue = _Tap(frame)  # type: ignore[attr-defined]
    # a video frame handed on at its last packet, an audio packet as it comes (jitter.py)
    receiver._RTCRtpReceiver__jitter_buffer = (  # type: ignore[attr-defined]
        MarkerJitterBuffer(VIDEO_CAPACITY, is_video=True) if kind == "video" else AudioOnArrival())


def request_keyframe(receiver: RTCRtpReceiver) -> None:
    """Send a PLI (RFC 4585 section 6.3.1) for every SSRC the receiver has seen."""
    ssrcs = list(getattr(receiver, "_RTCRtpReceiver__active_ssrc", {}))
    for ssrc in ssrcs:
        spawn(receiver._send_rtcp_pli(ssrc))


class FrameTrack(MediaStreamTrack):
    """What one viewer receives of one kind: encoded frames handed to aiortc's packetizer."""

    def __init__(self, kind: str, on_keyframe_request: Callable[[], None]) -> None:
        super().__init__()
        self.kind = kind
        self.gated = kind == "video"  # a new viewer starts on a keyframe
        self.ask = on_keyframe_request
        self.queue: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.sent = 0
        self.dropped = 0
        self.time_base = _TIME_BASE[kind]
        self.limit = QUEUE_LIMIT[kind]
        self.rewrite: Callable[[Frame], bytes] | None = None  # e.g. timeline.stamp (ingest)

    def push(self, frame: Frame) -> None:
        if self.gated:
            if not frame.key:
                return
            self.gated = False
        if self.queue.qsize() >= self.limit:  # the viewer fell behind: drop, restart on a key
            self.dropped += self.queue.qsize()
            while not self.queue.empty():
                self.queue.get_nowait()
            if self.kind == "video":
                self.gated = True
                self.ask()
            return
        self.queue.put_nowait(frame)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        frame = await self.queue.get()
        if frame is None:
            raise MediaStreamError
        packet = av.Packet(frame.data if self.rewrite is None else self.rewrite(frame))
        packet.pts = frame.ts
        packet.time_base = self.time_base
        self.sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState != "ended":
            super().stop()
            self.queue.put_nowait(None)

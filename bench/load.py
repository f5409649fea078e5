"""Lightweight synthetic load clients (aiortc, no encoder, no decoder).

A publisher's track yields pre-built ``av.Packet`` objects, so aiortc's sender only packetizes
them (VP8 payload descriptor, RFC 7741) - no encoding. Each frame fits one RTP packet and carries,
after a VP8 payload header whose P bit marks every 30th frame as a keyframe, the publisher index,
a frame number and the monotonic send time. A subscriber's receivers are intercepted before the
jitter buffer (as the call server itself does), so subscribers count and time packets without
decoding. Both SFUs forward the payload unchanged, so the stamp survives.
"""

from __future__ import annotations

import asyncio
import fractions
import os
import struct
import time
from dataclasses import dataclass, field

import av
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.rtp import RtpPacket

STAMP = struct.Struct("!HIQ")  # publisher index, frame number, send time (ns, monotonic)
FRAME_BYTES = 1000
KEY_INTERVAL = 30
_ns = time.monotonic_ns


class StampTrack(MediaStreamTrack):
    """Video track of pre-encoded, stamped frames at ``fps`` (one RTP packet each)."""

    kind = "video"

    def __init__(self, index: int, fps: float, stats: Stats) -> None:
        super().__init__()
        self.index = index
        self.period = 1.0 / fps
        self.n = 0
        self.stats = stats
        self.start: float | None = None
        self.filler = bytes(FRAME_BYTES - 3 - STAMP.size)

    async def recv(self) -> av.Packet:
        if self.start is None:
            self.start = time.monotonic()
        self.n += 1
        delay = self.start + self.n * self.period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        # VP8 payload header: P=0 for keyframes (RFC 6386 section 9.1), then a fake start code
        head = b"\x10\x9d\x01" if self.n % KEY_INTERVAL == 1 else b"\x11\x00\x00"
        now = _ns()
        packet = av.Packet(head + STAMP.pack(self.index, self.n, now) + self.filler)
        packet.pts = int(self.n * self.period * 90000)
        packet.time_base = fractions.Fraction(1, 90000)
        self.stats.sent(self.index, self.n, now)
        return packet


def vp8_descriptor_length(payload: bytes) -> int:
    """Length of the VP8 payload descriptor (RFC 7741 section 4.2)."""
    b0 = payload[0]
    i = 1
    if b0 & 0x80:
        x = payload[1]
        i = 2
        if x & 0x80:
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    return i


@dataclass
class Stats:
    """Sent frames per publisher and (publisher, frame) arrivals per subscriber, by window."""

    window: tuple[int, int] | None = None  # monotonic ns [start, end) of send times counted
    sent_frames: dict[int, int] = field(default_factory=dict)
    received: dict[int, set[tuple[int, int]]] = field(default_factory=dict)
    latencies: list[int] = field(default_factory=list)
    packets: int = 0

    def sent(self, pub: int, frame: int, t: int) -> None:
        w = self.window
        if w is not None and w[0] <= t < w[1]:
            self.sent_frames[pub] = self.sent_frames.get(pub, 0) + 1

    def arrived(self, sub: int, payload: bytes) -> None:
        d = vp8_descriptor_length(payload) + 3
        pub, frame, t = STAMP.unpack_from(payload, d)
        w = self.window
        if w is not None and w[0] <= t < w[1]:
            now = _ns()
            self.received.setdefault(sub, set()).add((pub, frame))
            self.latencies.append(now - t)
            self.packets += 1

    def reset(self, start: int, end: int) -> None:
        self.window = (start, end)
        self.sent_frames.clear()
        self.received.clear()
        self.latencies.clear()
        self.packets = 0


def count_arrivals(pc: RTCPeerConnection, sub: int, stats: Stats) -> None:
    """Replace every video receiver's packet handler with a counter (no jitter buffer, no
    decoder), for receivers that exist now; call again after each renegotiation."""
    for t in pc.getTransceivers():
        r = t.receiver
        if t.kind != "video" or getattr(r, "_bench_counting", False):
            continue

        pt = t._codecs[0].payloadType if t._codecs else -1

        async def handle(packet: RtpPacket, arrival_time_ms: int = 0, _sub: int = sub,
                         _pt: int = pt) -> None:
            if packet.payload_type == _pt and len(packet.payload) > 20:
                stats.arrived(_sub, packet.payload)

        r._handle_rtp_packet = handle
        r._bench_counting = True


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

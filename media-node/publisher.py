"""A publisher's track on the call server: encoded RTP in, fan-out to every subscriber.

aiortc's ``RTCRtpReceiver`` reassembles frames in a jitter buffer and always hands them to a
decoder thread. The call server replaces the receiver's ``_handle_rtp_packet`` on the instance, so
packets are intercepted right after SRTP and parsing and never reach the jitter buffer or decoder;
the idle decoder thread aiortc starts stays idle.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiortc.rtcrtpreceiver import NackGenerator, RTCRtpReceiver, StreamStatistics
from aiortc.rtp import RtpPacket, unwrap_rtx

from . import metrics
from .keyframes import KeyframeRequests
from .rtp import keyframe_detector
from .tasks import spawn

if TYPE_CHECKING:
    from .subscriber import DownTrack

HISTORY = 1024  # packets of video kept for subscriber NACKs (about 1-3 s), a power of two
_perf = time.perf_counter
_observe = metrics.FORWARD_LATENCY.observe


class UpTrack:
    """One published track (audio, camera or screen) and its forwarding legs."""

    def __init__(self, owner: str, receiver: RTCRtpReceiver, codecs: list[Any],
                 track_id: str, kind: str) -> None:
        self.owner = owner
        self.track_id = track_id
        self.kind = kind
        self.receiver = receiver
        self.codec = codecs[0]
        self.pt: int = self.codec.payloadType
        self.rtx_pt: int | None = next(
            (c.payloadType for c in codecs
             if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == self.pt), None)
        self.is_keyframe = keyframe_detector(self.codec.mimeType)
        self.downtracks: list[DownTrack] = []
        self.waiting = 0  # downtracks gated until a keyframe
        self.ssrc: int | None = None
        self.history: list[tuple[int, int, int, bytes] | None] = (
            [None] * HISTORY if kind == "video" else [])
        self.nacks = NackGenerator() if kind == "video" else None
        self.stats: StreamStatistics | None = None
        self.keyframes = KeyframeRequests(self._send_pli)
        self.last_ts = 0
        self.last_time = 0.0
        self.packets = 0
        self.bytes = 0
        receiver._handle_rtp_packet = self.on_rtp  # type: ignore[method-assign]

    async def on_rtp(self, packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        """Hot path: forward one RTP packet to every subscriber (RFC 3550 translator rules)."""
        t0 = _perf()
        pt = packet.payload_type
        if pt != self.pt:
            if pt != self.rtx_pt or self.ssrc is None or len(packet.payload) < 2:
                return
            # RFC 4588: a retransmission repairs the loss for every subscriber at once.
            packet = unwrap_rtx(packet, self.pt, self.ssrc)
        else:
            self.ssrc = packet.ssrc
        seq = packet.sequence_number
        ts = packet.timestamp
        marker = packet.marker
        payload = packet.payload
        key = self.waiting > 0 and self.is_keyframe(payload)
        for dt in self.downtracks:
            dt.forward(seq, ts, marker, payload, key)
        if self.history:
            self.history[seq & (HISTORY - 1)] = (seq, ts, marker, payload)
        self.last_ts = ts
        self.packets += 1
        self.bytes += len(payload)
        self.last_time = t1 = _perf()
        _observe(t1 - t0)
        # Receiver-side bookkeeping after the copies left: RTCP RR statistics and NACKs upstream.
        if self.stats is None:
            self.stats = self._register_stats(packet)
        self.stats.add(packet)
        if self.nacks is not None and self.nacks.add(packet):
            missing = sorted(self.nacks.missing)
            metrics.NACKS.labels("upstream").inc(len(missing))
            await self.receiver._send_rtcp_nack(packet.ssrc, missing)

    def _register_stats(self, packet: RtpPacket) -> StreamStatistics:
        # aiortc's RTCP loop reports RR blocks from this table (RFC 3550 section 6.4.2).
        streams = self.receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        stats = streams.get(packet.ssrc) or StreamStatistics(self.codec.clockRate)
        streams[packet.ssrc] = stats
        return stats

    def lookup(self, seq: int) -> tuple[int, int, int, bytes] | None:
        """The packet with input sequence ``seq`` if still in the history."""
        if not self.history:
            return None
        entry = self.history[seq & (HISTORY - 1)]
        return entry if entry is not None and entry[0] == seq else None

    def request_keyframe(self) -> None:
        if self.kind == "video":
            self.keyframes.request()

    def _send_pli(self) -> None:
        if self.ssrc is not None:
            spawn(self.receiver._send_rtcp_pli(self.ssrc))

    def attach(self, dt: DownTrack) -> None:
        self.downtracks = [*self.downtracks, dt]  # copy: the hot loop never sees a mutation
        self.waiting += 1
        self.request_keyframe()

    def detach(self, dt: DownTrack) -> None:
        if dt in self.downtracks:
            self.downtracks = [d for d in self.downtracks if d is not dt]
            if dt.gated:
                self.waiting -= 1

    def close(self) -> None:
        self.keyframes.close()
        for dt in list(self.downtracks):
            self.detach(dt)

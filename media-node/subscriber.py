"""One forwarding leg: a publisher's track sent to one subscriber.

The leg owns an aiortc ``RTCRtpSender`` only for negotiation, SSRC allocation and its RTCP sender
reports; its RTP loop waits forever on a track that never yields. Packets are written by
``DownTrack.forward`` with this leg's SSRC, payload type and a sequence offset (RFC 3550 section 7:
the call server acts as a translator that rewrites SSRC and renumbers), then SRTP-protected and
sent on the subscriber's UDP pair.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import TYPE_CHECKING, Any

from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc import clock as rtc_clock
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
)

from . import metrics
from .link import Link
from .rtp import pack_header

if TYPE_CHECKING:
    from .publisher import UpTrack

_pack_seq = struct.Struct("!H").pack


class SilentTrack(MediaStreamTrack):
    """Placeholder track for a forwarding sender: ``recv`` never returns, so aiortc's own RTP
    loop idles and never encodes anything."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id

    async def recv(self) -> Any:
        await asyncio.Event().wait()


class DownTrack:
    """Rewrites and sends one publisher track's packets to one subscriber."""

    __slots__ = ("bytes", "dropped", "flushed", "gated", "kind", "last_seq", "link", "packets",
                 "pt", "retransmitted", "rtx_pt", "rtx_seq", "rtx_ssrc", "sender", "seq_offset",
                 "ssrc", "subscriber", "transceiver", "up")

    def __init__(self, up: UpTrack, subscriber: str, link: Link) -> None:
        self.up = up
        self.kind = up.kind
        self.subscriber = subscriber
        self.link = link
        self.transceiver: Any = None
        self.sender: RTCRtpSender | None = None
        self.pt = -1
        self.rtx_pt: int | None = None
        self.ssrc = 0
        self.rtx_ssrc = 0
        self.rtx_seq = 0
        self.gated = True  # held until the publisher's next keyframe
        self.seq_offset = 0
        self.last_seq = 0
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.retransmitted = 0
        self.flushed = (0, 0, 0)  # packets, bytes, dropped already counted in metrics

    def bind(self, transceiver: Any) -> None:
        """Take payload types and SSRCs from the negotiated transceiver and start forwarding."""
        self.transceiver = transceiver
        self.sender = sender = transceiver.sender
        codecs = transceiver._codecs
        self.ssrc = sender._ssrc
        self.rtx_ssrc = sender._rtx_ssrc
        self.pt = codecs[0].payloadType
        self.rtx_pt = next(
            (c.payloadType for c in codecs
             if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == self.pt), None)
        self.last_seq = self.rtx_seq = sender._ssrc & 0x7FFF  # RFC 3550: random start
        sender._handle_rtcp_packet = self.on_rtcp  # type: ignore[method-assign]
        self.up.attach(self)

    def forward(self, seq: int, ts: int, marker: int, payload: bytes, key: bool) -> None:
        """Hot path: one packet to one subscriber; drops (and re-gates) if it fell behind."""
        link = self.link
        if self.gated:
            if not key or not link.ready:
                return
            self.gated = False
            self.up.waiting -= 1
            self.seq_offset = (self.last_seq + 1 - seq) & 0xFFFF
        out = (seq + self.seq_offset) & 0xFFFF
        data = pack_header(0x80, (marker << 7) | self.pt, out, ts, self.ssrc) + payload
        try:
            link.sendto(link.protect(data), link.addr)
        except (BlockingIOError, InterruptedError):  # socket buffer full: fell behind
            self._fell_behind()
            return
        except OSError:  # e.g. the pair's socket closed under us; the state change follows
            return
        if ((out - self.last_seq) & 0xFFFF) < 0x8000:
            self.last_seq = out
        self.packets += 1
        self.bytes += len(data)

    def _fell_behind(self) -> None:
        """Drop frames, not the call: wait for a fresh keyframe, then continue the numbering."""
        self.dropped += 1
        self.gated = True
        self.up.waiting += 1
        self.up.request_keyframe()

    async def on_rtcp(self, packet: Any) -> None:
        """RTCP feedback from the subscriber about this leg (RFC 4585, RFC 5104)."""
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            metrics.NACKS.labels("downstream").inc(len(packet.lost))
            for out in packet.lost:
                self.retransmit(out)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.up.request_keyframe()
        elif self.sender is not None and not isinstance(packet, RtcpPsfbPacket):
            await RTCRtpSender._handle_rtcp_packet(self.sender, packet)  # RR: RTT statistics

    def retransmit(self, out: int) -> None:
        """Resend a NACKed packet from the publisher's history, as RTX when negotiated
        (RFC 4588 section 4: original sequence number first in the payload)."""
        link = self.link
        entry = self.up.lookup((out - self.seq_offset) & 0xFFFF)
        if entry is None or not link.ready or self.gated:
            return
        _, ts, marker, payload = entry
        if self.rtx_pt is not None:
            self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
            data = (pack_header(0x80, (marker << 7) | self.rtx_pt, self.rtx_seq, ts,
                                self.rtx_ssrc) + _pack_seq(out) + payload)
        else:
            data = pack_header(0x80, (marker << 7) | self.pt, out, ts, self.ssrc) + payload
        try:
            link.sendto(link.protect(data), link.addr)
        except OSError:
            return
        self.retransmitted += 1
        metrics.RETRANSMISSIONS.inc()

    def sync_sender_report(self) -> None:
        """Feed aiortc's RTCP loop the counters and the NTP/RTP pair of the last forwarded packet,
        so its sender reports stay true (RFC 3550 section 6.4.1) without per-packet work."""
        s = self.sender
        if s is None or not self.packets:
            return
        up = self.up
        age = time.perf_counter() - up.last_time
        ntp = rtc_clock.current_ntp_time() - int(age * (1 << 32))
        s._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
        s._RTCRtpSender__rtp_timestamp = up.last_ts  # type: ignore[attr-defined]
        s._RTCRtpSender__packet_count = self.packets  # type: ignore[attr-defined]
        s._RTCRtpSender__octet_count = self.bytes  # type: ignore[attr-defined]

    def close(self) -> None:
        self.up.detach(self)

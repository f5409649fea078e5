"""A video frame is complete at its last packet, not one frame later; an audio packet is
complete when it comes.

aiortc's video ``JitterBuffer`` finds a frame complete only when a packet with a *different*
timestamp follows it, so each aiortc receiver holds every frame for one frame interval (33 ms at
30 fps) after its last packet arrived. The broadcast path has four such receivers before a viewer
(ingest, transcoder, relay, edge): measured with bench/broadcast_glass.py (360p source, the
``--marker-jitter`` experiment), the edge's glass-to-glass p50 went from 202 to 29 ms.

The RTP marker bit ends a video frame (RFC 6184 section 5.1 for H.264): when the packet carrying
it makes the frame's packets contiguous from the buffer's origin, the frame is handed on at once.
A hole (a packet still to come by NACK/RTX) keeps aiortc's own rule.

Audio: aiortc's audio buffer hands a packet on only once four more have come (``prefetch=4``:
80 ms of 20 ms Opus packets per receiver), and a lost packet stalls it until 16 are queued (320
ms). Opus puts one frame in one packet (RFC 7587 section 4.2) and audio is not retransmitted
(no NACK is negotiated for it), so waiting on a hole waits for nothing. Measured through ingest
and transcoder (tests/broadcast/test_hls.py's source), the AAC reached the LL-HLS packager 150 ms
(p50) after the video of the same instant. ``AudioOnArrival`` hands each packet on as it comes;
a packet older than one already handed on is dropped (the decoder conceals it), unless it is far
older: a restarted sender, whose numbering starts anew.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

VIDEO_CAPACITY = 512  # what aiortc's receiver gives its video buffer
RESTART = 100  # packets: further back than this is a new numbering (aiortc's MAX_MISORDER)


class MarkerJitterBuffer(JitterBuffer):
    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is None and packet.marker and self._origin is not None:
            frame = self._ended_by(packet)
        return pli, frame

    def _ended_by(self, last: RtpPacket) -> JitterFrame | None:
        packets = []
        for count in range(self._capacity):
            p = self._packets[(self._origin + count) % self._capacity]
            if p is None or p.timestamp != last.timestamp:
                return None  # a hole, or an older frame still open: aiortc's own rule
            packets.append(p)
            if p is last:
                self.remove(count + 1)
                data = b"".join(x._data for x in packets)  # type: ignore[attr-defined]
                return JitterFrame(data=data, timestamp=last.timestamp)
        return None


class AudioOnArrival(JitterBuffer):
    """One Opus packet is one frame: handed on as it arrives, nothing held."""

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last: int | None = None  # sequence number of the last packet handed on

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None:
            behind = uint16_add(self._last, -seq)
            if behind < RESTART:  # a duplicate (0), or late behind a newer one: dropped
                return False, None
        self._last = seq
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]

"""A video frame is complete at its last packet, not one frame later.

aiortc's video ``JitterBuffer`` finds a frame complete only when a packet with a *different*
timestamp follows it, so each aiortc receiver holds every frame for one frame interval (33 ms at
30 fps) after its last packet arrived. The broadcast path has four such receivers before a viewer
(ingest, transcoder, relay, edge): measured with bench/broadcast_glass.py (360p source, the
``--marker-jitter`` experiment), the edge's glass-to-glass p50 went from 202 to 29 ms.

The RTP marker bit ends a video frame (RFC 6184 section 5.1 for H.264): when the packet carrying
it makes the frame's packets contiguous from the buffer's origin, the frame is handed on at once.
A hole (a packet still to come by NACK/RTX) keeps aiortc's own rule.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

VIDEO_CAPACITY = 512  # what aiortc's receiver gives its video buffer


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

"""Experiment (``--marker-jitter`` of the glass benchmarks): hand a video frame on at its last
packet instead of at the next frame's first packet.

aiortc's video ``JitterBuffer`` (prefetch 0) finds a frame complete only when a packet with a
*different* timestamp follows it, so every aiortc receiver holds each frame for one frame interval
(33 ms at 30 fps) after its last packet arrived. The broadcast path has five such receivers
(ingest, transcoder, relay, edge, the viewer). The RTP marker bit ends a video frame (RFC 6184
5.1): when the packet carrying it makes the frame's packets contiguous from the buffer's origin,
the frame is complete. A hole (a NACKed packet) keeps aiortc's own rule.

The roles now install it for video themselves (``frames.tap``); this switch also gives it to the
benchmark's own viewers, and to the role processes through a ``sitecustomize`` on
``PYTHONPATH``.
"""

from __future__ import annotations

from pathlib import Path

from aiortc import jitterbuffer
from aiortc.rtp import RtpPacket

from parley.media.broadcast.jitter import MarkerJitterBuffer as _RolesBuffer

_Original = jitterbuffer.JitterBuffer


class MarkerJitterBuffer(_RolesBuffer):
    """The roles' buffer (media-node/broadcast/jitter.py) for every aiortc receiver a process
    makes; it replaces aiortc's class for audio too, where aiortc's own rule is kept."""

    def add(self, packet: RtpPacket) -> tuple[bool, jitterbuffer.JitterFrame | None]:
        if not self._is_video:
            return _Original.add(self, packet)
        return super().add(packet)


def install() -> None:
    import aiortc.rtcrtpreceiver

    jitterbuffer.JitterBuffer = MarkerJitterBuffer  # type: ignore[misc]
    aiortc.rtcrtpreceiver.JitterBuffer = MarkerJitterBuffer  # type: ignore[attr-defined]


def sitecustomize_dir(where: Path) -> Path:
    """A directory to put first on PYTHONPATH: its sitecustomize installs the buffer."""
    where.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parent.parent)
    (where / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {root!r})\nfrom bench.broadcast_jitter import install\n"
        "install()\n")
    return where

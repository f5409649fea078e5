"""A publisher's track on the call server: encoded RTP in, fan-out to every subscriber.

aiortc's ``RTCRtpReceiver`` reassembles frames in a jitter buffer and always hands them to a
decoder thread. The call server replaces the receiver's ``_handle_rtp_packet`` on the instance, so
packets are intercepted right after SRTP and parsing and never reach the jitter buffer or decoder;
the idle decoder thread aiortc starts stays idle.

A simulcast track (RFC 8853, identified by rid: RFC 8851) arrives as one RTP stream per ``Layer``,
each with its own SSRC, sequence numbers and timestamps; every subscriber's leg forwards exactly
one layer of it (docs/call-server.md, "Simulcast").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiortc.rtcrtpreceiver import NackGenerator, RTCRtpReceiver, StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtpPacket, pack_remb_fci, unwrap_rtx

from . import metrics
from .keyframes import KeyframeRequests
from .rtp import abs_send_time, height_reader, keyframe_detector
from .tasks import spawn

if TYPE_CHECKING:
    from .subscriber import DownTrack

PUBLISH_BPS = 2_500_000  # REMB towards a publisher, per video track: room for every layer
HISTORY = 1024  # packets of video kept per layer for subscriber NACKs (about 1-3 s), a power of 2
_perf = time.perf_counter
_observe = metrics.FORWARD_LATENCY.observe
# one packet in 16 of each track is timed into the histogram: prometheus-client takes a lock per
# observation, 2 % of the call server's CPU over bench/join_time when every packet was observed
# (py-spy); a sample of the same packets has the same distribution
SAMPLE_MASK = 15


class Layer:
    """One RTP stream of a track: the only one of a plain track, or one rid of a simulcast one.

    Holds what is per stream: its SSRCs, its packet history for retransmissions, NACK and
    keyframe state towards the publisher, and the legs currently fed from it."""

    __slots__ = ("bitrate", "bytes", "bytes_mark", "downtracks", "height", "history", "index",
                 "key_at", "key_seq", "keyframes", "known", "last_time", "last_ts", "lost",
                 "lost_mark", "nacks", "packets", "rid", "rtx_ssrc", "ssrc", "stats", "up",
                 "waiting")

    def __init__(self, up: UpTrack, index: int, rid: str | None) -> None:
        self.up = up
        self.index = index  # 0 = lowest
        self.rid = rid
        self.ssrc: int | None = None
        self.rtx_ssrc: int | None = None
        self.downtracks: list[DownTrack] = []
        self.waiting = 0  # legs waiting for a keyframe of this layer (first packet or a switch)
        # the first packet of the latest keyframe seen while legs waited, and when it came: a
        # leg whose link came up after it starts there (DownTrack.catch_up)
        self.key_seq = -1
        self.key_at = 0.0
        video = up.kind == "video"
        self.history: list[tuple[int, int, int, bytes] | None] = [None] * HISTORY if video else []
        self.nacks = NackGenerator() if video else None
        self.stats: StreamStatistics | None = None
        self.keyframes = KeyframeRequests(self._send_pli)
        self.last_ts = 0
        self.last_time = 0.0
        self.packets = 0
        self.bytes = 0
        self.bytes_mark = (0.0, 0)  # (time, bytes) at the last bitrate sample
        self.bitrate = 0.0  # bits/s over the last sample (control loop, not the hot path)
        self.known = 0.0  # the last non-zero bitrate: what a paused layer costs when resumed
        self.height = 0 if video else -1  # from the first keyframe (VP8, VP9); -1: unknowable
        self.lost = 0.0  # fraction lost on the way in (after repairs), over about a second
        self.lost_mark = (0, 0)  # (expected, received) at the last sample

    def lookup(self, seq: int) -> tuple[int, int, int, bytes] | None:
        """The packet with input sequence ``seq`` if still in the history."""
        if not self.history:
            return None
        entry = self.history[seq & (HISTORY - 1)]
        return entry if entry is not None and entry[0] == seq else None

    def request_keyframe(self, urgent: bool = False) -> None:
        if self.up.kind == "video":
            self.keyframes.request(urgent)

    def _send_pli(self) -> None:
        if self.ssrc is not None:
            spawn(self.up.receiver._send_rtcp_pli(self.ssrc))

    def add(self, dt: DownTrack) -> None:
        """Feed ``dt`` from this layer from its next keyframe on."""
        self.downtracks = [*self.downtracks, dt]  # copy: the hot loop never sees a mutation
        self.waiting += 1
        self.request_keyframe()

    def remove(self, dt: DownTrack) -> None:
        if dt in self.downtracks:
            self.downtracks = [d for d in self.downtracks if d is not dt]

    def sample(self, now: float) -> float:
        """Update ``bitrate`` from the byte counter (called by the node's tick)."""
        t, b = self.bytes_mark
        if t and now > t:
            self.bitrate = (self.bytes - b) * 8 / (now - t)
            if self.bitrate > 0:
                # slow average (about 2 s at four samples a second): a keyframe is a spike
                self.known = self.bitrate if not self.known else (
                    0.88 * self.known + 0.12 * self.bitrate)
        self.bytes_mark = (now, self.bytes)
        stats = self.stats
        if stats is not None and stats.max_seq is not None:
            # a subscriber's receiver report counts these gaps too: they are not its downlink's
            expected, received = stats.packets_expected, stats.packets_received
            e0, r0 = self.lost_mark
            self.lost_mark = (expected, received)
            if expected > e0:
                gone = max(0.0, 1 - (received - r0) / (expected - e0))
                self.lost += 0.25 * (gone - self.lost)
        return self.bitrate


class UpTrack:
    """One published track (audio, camera or screen): its layers and their forwarding legs."""

    def __init__(self, owner: str, receiver: RTCRtpReceiver, codecs: list[Any],
                 track_id: str, kind: str, rids: list[str] | None = None) -> None:
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
        self.height_of = height_reader(self.codec.mimeType)
        # rids as the publisher listed them in a=simulcast, lowest first; None: one plain stream
        self.layers = [Layer(self, i, rid) for i, rid in enumerate(rids or [None])]
        self.simulcast = rids is not None and len(rids) > 1
        self._by_ssrc: dict[int, Layer] = {}
        self._rtx_by_ssrc: dict[int, Layer] = {}
        self._by_rid = {layer.rid: layer for layer in self.layers}
        self.packets = 0
        self.bytes = 0
        self.last_time = 0.0
        self.recorders = 0  # recording taps on this track (they take the top layer)
        self.sent_active: list[str] | None = None  # rids last asked to send (dynacast)
        receiver._handle_rtp_packet = self.on_rtp  # type: ignore[method-assign]

    @property
    def ssrc(self) -> int | None:
        """The top layer's SSRC (what a recording keeps)."""
        return self.layers[-1].ssrc

    async def on_rtp(self, packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        """Hot path: forward one RTP packet to every leg fed by its layer (RFC 3550 translator
        rules)."""
        t0 = _perf()
        layer = self._by_ssrc.get(packet.ssrc)
        if layer is None:
            layer = self._learn(packet)
            if layer is None:
                return
        if packet.payload_type != self.pt:
            if len(packet.payload) < 2 or layer.ssrc is None:
                return
            # RFC 4588: a retransmission repairs the loss for every subscriber at once.
            packet = unwrap_rtx(packet, self.pt, layer.ssrc)
        seq = packet.sequence_number
        ts = packet.timestamp
        marker = packet.marker
        payload = packet.payload
        key = (layer.waiting > 0 or not layer.height) and self.is_keyframe(payload)
        if key:
            layer.key_seq = seq
            layer.key_at = t0
            if not layer.height and self.kind == "video":
                layer.height = self.height_of(payload) or -1
        ast = abs_send_time(t0)
        for dt in layer.downtracks:
            dt.forward(layer, seq, ts, marker, payload, key, ast)
        if layer.history:
            layer.history[seq & (HISTORY - 1)] = (seq, ts, marker, payload)
        layer.last_ts = ts
        layer.packets += 1
        layer.bytes += len(payload)
        self.packets += 1
        self.bytes += len(payload)
        layer.last_time = self.last_time = t1 = _perf()
        if not self.packets & SAMPLE_MASK:
            _observe(t1 - t0)
        # Receiver-side bookkeeping after the copies left: RTCP RR statistics and NACKs upstream.
        if layer.stats is None:
            layer.stats = self._register_stats(packet)
        layer.stats.add(packet)
        if layer.nacks is not None and layer.nacks.add(packet):
            missing = sorted(layer.nacks.missing)
            metrics.NACKS.labels("upstream").inc(len(missing))
            await self.receiver._send_rtcp_nack(packet.ssrc, missing)

    def _learn(self, packet: RtpPacket) -> Layer | None:
        """Map a new SSRC to its layer: by the rid / repaired-rid header extension (RFC 8852;
        a browser sends them until the SSRC is acknowledged), or, for a plain track, by payload
        type. Returns the layer for a media packet, or for an RTX packet whose layer is known."""
        ext = packet.extensions
        rtx = packet.payload_type == self.rtx_pt and self.rtx_pt is not None
        if not rtx and packet.payload_type != self.pt:
            return None
        if self.simulcast:
            layer = self._by_rid.get(ext.repaired_rtp_stream_id if rtx else ext.rtp_stream_id)
        else:
            layer = self.layers[0]
        if layer is None:
            return None
        if rtx:
            if layer.rtx_ssrc is not None and not self.simulcast:
                return layer  # a plain track: RTX by payload type, whatever its SSRC
            layer.rtx_ssrc = packet.ssrc
            self._rtx_by_ssrc[packet.ssrc] = layer
            self._by_ssrc[packet.ssrc] = layer
            return layer
        if layer.ssrc is not None:
            self._by_ssrc.pop(layer.ssrc, None)  # the publisher restarted this layer's stream
        layer.ssrc = packet.ssrc
        self._by_ssrc[packet.ssrc] = layer
        return layer

    def _register_stats(self, packet: RtpPacket) -> StreamStatistics:
        # aiortc's RTCP loop reports RR blocks from this table (RFC 3550 section 6.4.2).
        streams = self.receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        stats = streams.get(packet.ssrc) or StreamStatistics(self.codec.clockRate)
        streams[packet.ssrc] = stats
        return stats

    def request_keyframe(self) -> None:
        """Ask every layer for a keyframe (a recording starting, a subscriber's FIR)."""
        for layer in self.layers:
            layer.request_keyframe()

    def flowing(self) -> int:
        """Index of the highest layer the publisher sends now (bits in the last sample), where
        a new leg starts: its keyframe is one PLI away, while a layer dynacast paused waits for
        the next allocation, the ``layers`` event, the publisher's encoder and its keyframe
        (300+ ms, docs/benchmarks.md "Join time"). The allocation raises the leg after its first
        keyframe. Nothing sampled yet (a new publisher sends every layer): the top one."""
        return max((layer.index for layer in self.layers if layer.bitrate > 0),
                   default=len(self.layers) - 1)

    def wanted_rids(self) -> list[str]:
        """Dynacast: the layers somebody receives or waits for, plus always the lowest (a new
        subscriber or a falling one lands there at once) and the top one while recording."""
        layers = self.layers
        return [str(layer.rid) for layer in layers
                if layer.downtracks or layer.index == 0
                or (self.recorders and layer is layers[-1])]

    def close(self) -> None:
        for layer in self.layers:
            layer.keyframes.close()
            for dt in list(layer.downtracks):
                dt.close()


def allow(video: list[UpTrack], bps: int) -> None:
    """Tell a publisher how much it may send on its connection: one REMB (draft-alvestrand-
    rmcat-remb) naming the SSRCs of all its video layers. Without feedback a browser's send-side
    estimate stays at its 300 kbps start and it never turns on its upper simulcast layers; its
    loss-based controller still backs off on our receiver reports when its uplink is narrow."""
    ssrcs = [layer.ssrc for up in video for layer in up.layers if layer.ssrc is not None]
    if not ssrcs:
        return
    receiver = video[0].receiver
    rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
    if rtcp_ssrc is not None:
        spawn(receiver._send_rtcp(RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(bps, ssrcs))))

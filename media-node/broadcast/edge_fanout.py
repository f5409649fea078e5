"""An edge's (or relay's) fan-out: its upstream's RTP packets forwarded to every WHEP viewer.

The frame path (frames.py: aiortc reassembles each frame, then one ``RTCRtpSender`` per viewer
packetizes it again and runs its Python per packet) cost the edge about 130 us of CPU per packet
sent (bench/broadcast_edge.py). An edge changes nothing in the media, so it forwards packets as
the call server does, with the call server's own code: the upstream WHEP session's receivers are
intercepted by ``publisher.UpTrack`` (RTP right after SRTP, never reassembled or decoded; NACK
and receiver reports upstream, the packet history), and each viewer's m-line is a
``subscriber.DownTrack`` (SSRC, payload type, sequence number and timestamp rewritten, the
viewer's SRTP context, one ``sendto``; its NACKs answered from the history, its PLIs upstream).

An upstream reconnect (a new WHEP session: new SSRC, sequence and timestamp origin) is a new
layer for every leg, which moves over on the new session's first keyframe with its numbering
continued (the call server's simulcast switch), so viewers keep one RTP stream.

``GopCache`` keeps the packets since the last keyframe began. A new viewer gets them at once and
its picture starts on that keyframe instead of after the next one (up to a GOP, 2 s: transcoders
cut keyframes on the programme timeline and do not answer PLIs). The cached frames go out with
timestamps one tick apart ending at the newest frame's own, so the viewer decodes them in a burst
and plays at live latency, not one GOP behind.

Such a viewer's leg is an ``EdgeLeg``. The burst's timestamps are the leg's own, not the layer
history's, so the leg keeps what it sent for a few seconds and answers a NACK for a burst packet
with exactly that header (same sequence number and timestamp): from the history, a lost packet
came back with its frame's original timestamp, another frame to the viewer's jitter buffer, and
the frame it belonged to broke. The viewer's PLI is dropped until its receiver report covers the
burst's last packet: it has been sent the keyframe (browsers and aiortc ask for one as they start
anyway), and sent upstream it made every joining viewer a keyframe request to the source. A later
PLI (the burst's keyframe did not decode, or real loss) goes upstream
as on the call server, coalesced to one request per 0.5 s per layer: a transcoder ignores it and
the viewer recovers on the next GOP boundary, at most 2 s, like the transcoder's own viewers; an
edge pulling the ingest's programme reaches the camera, which answers. Replaying the cache instead
would show the viewer frames it already saw (a rewind) and put a GOP at once on the downlink that
just lost packets.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, RtcpRrPacket, RtcpSrPacket

from ..link import Link
from ..publisher import Layer, UpTrack
from ..rtp import h264_keyframe
from ..subscriber import DownTrack

GOP_LIMIT = 4096  # packets: a longer GOP (about 4 MB) is not cached; viewers wait for a keyframe
TICK_S = 0.5  # sender reports, and keyframe requests for legs still waiting
STARTS_KEPT = 32  # cache starts the status describes
START_PLIS = 8  # a viewer's keyframe requests recorded after its start from the cache
STALL_S = 0.1  # a tick this late counts as a stall of the event loop (status)
BURST_KEEP_S = 3.0  # how long a leg answers NACKs for its burst (NACKs stop within about 1 s)
_MASK = 0xFFFFFFFF
_perf = time.perf_counter


class GopCache:
    """(seq, ts, marker, payload) of one layer from the first packet of its last keyframe on.

    It is a leg of the layer (``forward``), so it costs one keyframe check per upstream packet
    and nothing per viewer."""

    __slots__ = ("frame", "key", "packets", "ts", "valid")

    def __init__(self) -> None:
        self.packets: list[tuple[int, int, int, bytes]] = []
        self.ts = -1  # timestamp of the newest frame
        self.frame = 0  # index of that frame's first packet
        self.key = False  # that frame is a keyframe
        self.valid = False  # the packets start on a keyframe

    def forward(self, layer: Layer, seq: int, ts: int, marker: int, payload: bytes,
                key: bool, ast: bytes = b"") -> None:
        packets = self.packets
        if ts != self.ts:  # a new frame
            self.ts = ts
            if not self.valid:  # no GOP yet: only the current frame is kept
                packets.clear()
            self.frame = len(packets)
            self.key = False
        if not self.key and h264_keyframe(payload):  # the GOP starts at this frame's start
            self.key = self.valid = True
            del packets[:self.frame]
            self.frame = 0
        if len(packets) >= GOP_LIMIT:
            self.valid = False
            packets.clear()
            self.frame = 0
        packets.append((seq, ts, marker, payload))

    def replay(self, layer: Layer, leg: DownTrack) -> dict[int, tuple[int, int, bytes]]:
        """Send the GOP to ``leg`` (waiting on ``layer``), the frames one tick apart. Returns what
        went out: outgoing sequence number -> (timestamp, marker, payload) as sent; it stops at
        a packet the leg could not send (its socket buffer full: it waits for a keyframe)."""
        order: dict[int, int] = {}
        for p in self.packets:
            order.setdefault(p[1], len(order))
        base = self.ts - len(order) + 1
        sent: dict[int, tuple[int, int, bytes]] = {}
        first = True
        for seq, ts, marker, payload in self.packets:
            ts = (base + order[ts]) & _MASK
            before = leg.packets
            leg.forward(layer, seq, ts, marker, payload, first)
            if leg.packets == before:
                break
            sent[(seq + leg.seq_offset) & 0xFFFF] = ((ts + leg.ts_offset) & _MASK, marker,
                                                      payload)
            first = False
        return sent

    def close(self) -> None:
        self.packets = []
        self.valid = False


class EdgeLeg(DownTrack):
    """A viewer's leg at an edge: a ``DownTrack`` that may have started from the cached GOP."""

    __slots__ = ("burst", "burst_end", "confirmed", "received", "start_plis", "started")

    def __init__(self, up: UpTrack, subscriber: str, link: Link) -> None:
        super().__init__(up, subscriber, link)
        self.burst: dict[int, tuple[int, int, bytes]] | None = None  # GopCache.replay's answer
        self.started = 0.0  # perf_counter() of its start from the cache (0: it did not)
        # the burst's last outgoing sequence number until a receiver report covers it, else -1
        self.burst_end = -1
        self.received = -1  # highest sequence number in the viewer's last receiver report
        self.confirmed = -1.0  # seconds from the start to the report that covered the burst
        # the viewer's keyframe requests while its burst is kept: (seconds after the start, went
        # upstream), for the status
        self.start_plis: list[tuple[float, bool]] = []

    def retransmit(self, out: int) -> None:
        """A burst packet again exactly as the viewer first got it; others from the history."""
        burst = self.burst
        if burst is not None:
            sent = burst.get(out)
            if sent is not None:
                if self.link.ready:
                    self.resend(out, *sent)
                return
        super().retransmit(out)

    def covered(self) -> bool:
        """The viewer's last receiver report (RFC 3550 6.4.2: extended highest sequence number
        received) reaches the burst's last packet."""
        return self.received >= 0 and ((self.received - self.burst_end) & 0xFFFF) < 0x8000

    async def on_rtcp(self, packet: Any) -> None:
        """The viewer's feedback, but not its keyframe requests (RFC 4585 6.3.1 PLI, RFC 5104
        4.3.1 FIR) while the keyframe it was started on is still on its way: until a receiver
        report of the viewer covers the burst's last packet (a browser sends its PLI in a
        compound packet after its receiver report, RFC 4585 3.1), or the burst is let go. A
        request after that is a real one (the burst's keyframe did not decode) and goes upstream,
        coalesced; one before it is the request every starting receiver makes, answered by the
        burst already (and NACKs repair it)."""
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    self.received = report.highest_sequence & 0xFFFF
            if self.burst_end >= 0 and self.covered():
                self.burst_end = -1
                self.confirmed = round(_perf() - self.started, 3)
        elif (self.started and isinstance(packet, RtcpPsfbPacket)
              and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR)):
            quiet = self.burst_end >= 0
            if self.burst is not None and len(self.start_plis) < START_PLIS:
                self.start_plis.append((round(_perf() - self.started, 3), not quiet))
            if quiet:
                return
        await super().on_rtcp(packet)


class EdgeViewer:
    """One WHEP session's legs: its connection's send side and one DownTrack per m-line."""

    __slots__ = ("id", "legs", "link", "pc")

    def __init__(self, sid: str, pc: RTCPeerConnection) -> None:
        self.id = sid
        self.pc = pc
        self.link = Link()
        self.legs: dict[str, EdgeLeg] = {}


class PacketFeed:
    """What an edge or relay serves of one upstream: its packets, to every viewer's legs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ups: dict[str, UpTrack] = {}
        self.viewing: list[EdgeViewer] = []
        self.gop = GopCache()
        self.cached_starts = 0  # viewers started from the cache (status)
        # the last viewers started from the cache: when their receiver report covered the burst
        # and their keyframe requests meanwhile (EdgeLeg.confirmed, start_plis), for the status
        self.starts: list[dict[str, Any]] = []
        self._earlier = {"video": 0, "audio": 0}  # packets of earlier upstream sessions
        self._tick: asyncio.Task[None] | None = None
        self.stalls = 0  # ticks at least STALL_S late, and their lateness summed (seconds)
        self.stalled = 0.0

    def attach(self, kind: str, receiver: RTCRtpReceiver, codecs: list[Any]) -> None:
        """A new upstream session's receiver of ``kind`` (negotiated ``codecs``): its packets
        now feed every viewer; legs move over on its first keyframe."""
        old = self.ups.get(kind)
        up = UpTrack(self.name, receiver, codecs, f"{self.name}/{kind}", kind)
        self.ups[kind] = up
        layer = up.layers[0]
        if kind == "video":
            self.gop.close()
            layer.downtracks = [self.gop]  # type: ignore[list-item]
        if old is not None:
            self._earlier[kind] += old.packets
            for old_layer in old.layers:
                old_layer.keyframes.close()
        for viewer in self.viewing:
            leg = viewer.legs.get(kind)
            if leg is not None:
                leg.up = up
                leg.aim(layer)
            elif viewer.link.ready:
                self._start(viewer)

    def upstream_ended(self) -> None:
        """The upstream session is gone (silent, failed or closed): its cached GOP is history.
        A viewer joining before the next session must wait for its keyframe, not be shown
        seconds of a dead upstream's past as if live (and a tier below that reconnects here
        would take that replay for the new upstream's media)."""
        self.gop.close()

    def join(self, sid: str, pc: RTCPeerConnection) -> EdgeViewer:
        """A viewer whose answer is set (every m-line sendonly with a SilentTrack): its legs
        start when its connection is up."""
        viewer = EdgeViewer(sid, pc)
        self.viewing = [*self.viewing, viewer]

        @pc.on("connectionstatechange")
        def changed() -> None:
            if pc.connectionState == "connected" and viewer in self.viewing:
                viewer.link.resolve(pc)
                self._start(viewer)
            elif pc.connectionState in ("failed", "closed"):
                viewer.link.close()

        if self._tick is None:
            self._tick = asyncio.ensure_future(self._ticks())
        return viewer

    def _start(self, viewer: EdgeViewer) -> None:
        """Legs for the viewer's m-lines whose kind has an upstream; video from the cached GOP
        when there is one, else on the next keyframe (asked for)."""
        for t in viewer.pc.getTransceivers():
            up = self.ups.get(t.kind)
            if up is None or t.kind in viewer.legs:
                continue
            leg = EdgeLeg(up, viewer.id, viewer.link)
            leg.target = None
            leg.bind(t)
            viewer.legs[t.kind] = leg
            layer = up.layers[0]
            if t.kind == "video" and self.gop.valid:
                leg.target = layer  # as Layer.add, without a keyframe request
                layer.downtracks = [*layer.downtracks, leg]
                layer.waiting += 1
                sent = self.gop.replay(layer, leg)
                if leg.layer is not None:
                    leg.burst, leg.started = sent, _perf()
                    leg.burst_end = next(reversed(sent)) if sent else -1
                    self.cached_starts += 1
                    continue
            leg.aim(layer)

    def remove(self, viewer: EdgeViewer) -> None:
        self.viewing = [v for v in self.viewing if v is not viewer]
        for leg in viewer.legs.values():
            leg.close()
        viewer.legs = {}
        viewer.link.close()

    async def _ticks(self) -> None:
        """What the call server's tick does for its legs: true sender reports (RFC 3550 6.4.1)
        and a keyframe request again for a leg still waiting (a lost PLI must not hold it); a
        burst kept past the time NACKs for it can come is let go."""
        due = _perf() + TICK_S
        while True:
            await asyncio.sleep(TICK_S)
            now = _perf()
            late = now - due  # the event loop's lag: a stall holds every viewer's packets
            due = now + TICK_S
            if late >= STALL_S:
                self.stalls += 1
                self.stalled += late
            old = now - BURST_KEEP_S
            for viewer in self.viewing:
                for leg in viewer.legs.values():
                    leg.sync_sender_report()
                    if leg.burst is not None and leg.started < old:
                        self.starts = [*self.starts[-STARTS_KEPT + 1:], {
                            "confirmedS": leg.confirmed if leg.confirmed >= 0 else None,
                            "plis": leg.start_plis}]
                        leg.burst, leg.burst_end = None, -1  # no report: PLIs pass now
                    if leg.target is not None and leg.sender is not None:
                        leg.target.request_keyframe()

    def request_keyframe(self) -> None:
        up = self.ups.get("video")
        if up is not None:
            up.request_keyframe()

    @property
    def packets(self) -> dict[str, int]:
        """RTP packets received from upstream per kind, over every upstream session."""
        return {k: n + (self.ups[k].packets if k in self.ups else 0)
                for k, n in self._earlier.items()}

    @property
    def last_frame_at(self) -> float:
        """``time.monotonic()`` of the last packet from upstream (0: none yet)."""
        last = max((up.last_time for up in self.ups.values()), default=0.0)
        return time.monotonic() - (time.perf_counter() - last) if last else 0.0

    def viewers(self) -> int:
        return len(self.viewing)

    def forwarding(self) -> dict[str, int]:
        """Totals over the viewers' legs (status; bench/broadcast_edge.py reads them): packets
        sent, dropped at a full socket buffer (the leg then waits for a keyframe) and resent."""
        legs = [leg for v in self.viewing for leg in v.legs.values()]
        lost = {k: sum(max(0, layer.stats.packets_expected - layer.stats.packets_received)
                       for layer in up.layers if layer.stats is not None)
                for k, up in self.ups.items()}
        return {"packets": sum(leg.packets for leg in legs),
                "dropped": sum(leg.dropped for leg in legs),
                "retransmitted": sum(leg.retransmitted for leg in legs),
                "upstream_lost_video": lost.get("video", 0),
                "upstream_lost_audio": lost.get("audio", 0),
                "loop_stalls": self.stalls, "loop_stalled_ms": round(self.stalled * 1000),
                "keyframe_requests": sum(layer.keyframes.sent for up in self.ups.values()
                                         for layer in up.layers)}

    def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for viewer in list(self.viewing):
            self.remove(viewer)
        for up in self.ups.values():
            for layer in up.layers:
                layer.keyframes.close()
        self.gop.close()

"""One forwarding leg: a publisher's track sent to one subscriber.

The leg owns an aiortc ``RTCRtpSender`` only for negotiation, SSRC allocation and its RTCP sender
reports; its RTP loop waits forever on a track that never yields. Packets are written by
``DownTrack.forward`` with this leg's SSRC, payload type and a sequence offset (RFC 3550 section 7:
the call server acts as a translator that rewrites SSRC and renumbers), then SRTP-protected and
sent on the subscriber's UDP pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from typing import TYPE_CHECKING, Any, cast

from aiortc import MediaStreamTrack, RTCRtpSender
from aiortc import clock as rtc_clock
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from . import metrics
from .link import Link
from .rtp import PICTURE_IDS, abs_send_time, pack_header

if TYPE_CHECKING:
    from .publisher import Layer, UpTrack
    from .transcoding import RungLayer

_pack_seq = struct.Struct("!H").pack
_join = b"".join
CATCH_UP_S = 0.5  # s: how old a keyframe a leg may start on when its link comes up
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
# A NACKed number is resent at most once in this long (or the leg's RTT, if longer): a browser
# asks again every RTT it measured (tens of ms) until the packet comes (up to 10 times), and a
# repair waits behind a full access-link queue for hundreds of ms. Each ask answered, a failed
# probe's 26 lost packets drew 290 repairs in 2 s, about 1 Mbit/s on a 270 kbit/s link: the loss
# fed itself (NACKs, keyframe requests) for seconds and cut to a transcoded rung
# (tests/sfu/test_throttled.py). libwebrtc's RtpPacketHistory and mediasoup's RtpStreamSend
# resend a packet once per RTT the same way.
REPAIR_GAP_S = 0.2


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
    """Rewrites and sends one publisher track's packets to one subscriber.

    The leg forwards one layer of the track at a time. Switching layers (``select``) keeps the
    current layer flowing until the target layer's next keyframe, then moves over on that packet:
    sequence numbers continue without a gap and the timestamp continues from the last one sent
    plus the wall-clock time since, so the receiver sees one continuous stream (the technique of
    mediasoup's and LiveKit's simulcast forwarders)."""

    __slots__ = ("bytes", "clock_rate", "continued", "downlink", "dropped", "ext", "flushed",
                 "ids", "kind", "last_pid", "last_sent", "last_seq", "last_tl0", "last_ts",
                 "layer", "link", "loss", "marks", "munge", "nack_seen", "nacked", "packets",
                 "pid_offset", "pt", "repaired", "reported", "retransmitted", "rewrite", "rtx_pt",
                 "rtx_seq", "rtx_ssrc", "sender", "seq_offset", "ssrc", "subscriber",
                 "switch_seq", "target", "tl0_offset", "transceiver", "ts_offset", "up")

    def __init__(self, up: UpTrack, subscriber: str, link: Link, downlink: Any = None,
                 layer: int | None = None) -> None:
        self.up = up
        self.kind = up.kind
        self.subscriber = subscriber
        self.link = link
        self.downlink = downlink  # the subscriber's Downlink estimate (REMB, loss), or None
        if downlink is not None and up.kind == "video":
            downlink.legs.add(self)
        self.clock_rate = up.codec.clockRate
        self.transceiver: Any = None
        self.sender: RTCRtpSender | None = None
        self.pt = -1
        self.rtx_pt: int | None = None
        self.ssrc = 0
        self.rtx_ssrc = 0
        self.rtx_seq = 0
        self.ext = b""  # the abs-send-time extension header, when negotiated
        # ``layer``: the one being forwarded (None until the first keyframe); ``target``: the one
        # waited for (first start, a switch, or a re-start after falling behind), else None.
        self.layer: Layer | None = None
        start = up.layers[-1] if layer is None else up.layers[min(layer, len(up.layers) - 1)]
        self.target: Layer | None = start
        self.seq_offset = 0
        self.ts_offset = 0
        self.last_seq = 0
        self.last_ts = 0
        self.last_sent = 0.0
        self.switch_seq = 0  # first outgoing sequence number of the current layer
        self.continued = False  # on a retired leg's m-line, its numbering continued (follow)
        # VP8 / VP9 of a simulcast track: PictureID and TL0PICIDX continued across switches
        mime = up.codec.mimeType.lower()
        self.munge = up.simulcast and mime in PICTURE_IDS
        self.ids, self.rewrite = PICTURE_IDS.get(mime, PICTURE_IDS["video/vp8"])
        self.pid_offset = self.tl0_offset = 0
        self.last_pid = self.last_tl0 = 0
        self.reported = False  # the subscriber was told which layer it gets
        self.loss = 0.0  # fraction lost, from the subscriber's last receiver report
        # sequence numbers NACKed since the last allocation (a browser repeats a NACK until the
        # packet comes, so they are counted once): loss seen before the next receiver report
        self.nacked: set[int] = set()
        self.nack_seen: set[int] = set()  # every NACKed number counts once, repeats do not
        self.repaired: dict[int, float] = {}  # NACKed number -> when it was last resent
        self.marks = 0  # packets sent at the last allocation
        self.packets = 0
        self.bytes = 0
        self.dropped = 0
        self.retransmitted = 0
        self.flushed = (0, 0, 0)  # packets, bytes, dropped already counted in metrics

    @property
    def gated(self) -> bool:
        """Nothing is forwarded until a keyframe (a new leg, or one that fell behind)."""
        return self.layer is None

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
        if not self.continued:
            self.last_seq = self.rtx_seq = sender._ssrc & 0x7FFF  # RFC 3550: random start
        ids = {e.uri: e.id for e in getattr(transceiver, "_headerExtensions", None) or []}
        ast_id = ids.get(ABS_SEND_TIME)
        if ast_id is not None and 0 < ast_id < 15:  # RFC 8285 one-byte header, 3 data bytes
            self.ext = b"\xbe\xde\x00\x01" + bytes([(ast_id << 4) | 2])
        sender._handle_rtcp_packet = self.on_rtcp  # type: ignore[method-assign]
        if self.target is not None:
            self.target.add(self)

    def follow(self, retired: DownTrack) -> None:
        """Carry on from ``retired``, a leg that left the m-line (and so the sender's SSRC) this
        leg reuses: sequence numbers, timestamp and picture ids go on from its last packet, as
        at a layer switch, so the receiver sees one continuous stream whether or not it kept
        its receive stream while the m-line was inactive."""
        self.continued = True
        self.last_seq, self.rtx_seq = retired.last_seq, retired.rtx_seq
        self.last_ts, self.last_sent = retired.last_ts, retired.last_sent
        self.last_pid, self.last_tl0 = retired.last_pid, retired.last_tl0

    def forward(self, layer: Layer, seq: int, ts: int, marker: int, payload: bytes,
                key: bool, ast: bytes = b"\0\0\0") -> None:
        """Hot path: one packet to one subscriber; drops (and re-gates) if it fell behind.
        ``ast``: the packet's abs-send-time, written when the leg negotiated it."""
        link = self.link
        if layer is not self.layer:  # the target layer: move over on its keyframe
            if not key or not link.ready:
                return
            self._switch(layer, seq, ts, payload)
        if self.munge:
            payload = self._continue_ids(payload)
        out = (seq + self.seq_offset) & 0xFFFF
        ts = (ts + self.ts_offset) & 0xFFFFFFFF
        if self.ext:
            data = _join((pack_header(0x90, (marker << 7) | self.pt, out, ts, self.ssrc),
                          self.ext, ast, payload))
        else:
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
            self.last_ts = ts
            self.last_sent = layer.last_time
        self.packets += 1
        self.bytes += len(data)

    def catch_up(self, now: float) -> bool:
        """Start a leg whose link just came up on its layer's latest keyframe, if one came in
        the last ``CATCH_UP_S`` while it waited: that keyframe and what followed it go out now,
        from the layer's history. The keyframe asked for at the bind (in a join's answer, while
        ICE and DTLS connect) usually comes before the link: without this it was dropped, and a
        second request inside the encoder's own minimum interval (300 ms in libwebrtc) went
        unanswered, a black tile for up to a second (docs/call-server.md, "Negotiation and
        renegotiation"). False: nothing to start from (ask for a keyframe instead)."""
        layer = self.target
        seq = getattr(layer, "key_seq", -1)  # a transcoder's rung keeps no history
        if (layer is None or self.layer is not None or seq < 0 or not self.link.ready
                or now - layer.key_at > CATCH_UP_S):
            return False
        key = True
        ast = abs_send_time(now)
        while (entry := layer.lookup(seq)) is not None:  # up to the newest (or the first gap)
            _, ts, marker, payload = entry
            self.forward(layer, seq, ts, marker, payload, key, ast)
            seq, key = (seq + 1) & 0xFFFF, False
        return self.layer is layer

    def _continue_ids(self, payload: bytes) -> bytes:
        """VP8 / VP9 of a simulcast track: PictureID and TL0PICIDX continued across layer
        switches (RFC 7741 section 4.2, RFC 9628 section 4.2)."""
        pid, tl0 = self.ids(payload)
        if pid < 0:
            return payload
        pid = (pid + self.pid_offset) & 0x7FFF
        if tl0 >= 0:
            tl0 = (tl0 + self.tl0_offset) & 0xFF
            self.last_tl0 = tl0
        self.last_pid = pid
        return self.rewrite(payload, pid, tl0)

    def _switch(self, layer: Layer, seq: int, ts: int, payload: bytes) -> None:
        """Start forwarding ``layer`` at this keyframe packet (RFC 3550 translator numbering)."""
        old = self.layer
        if old is not None and old is not layer:
            old.remove(self)
        self.layer = layer
        self.target = None
        layer.waiting -= 1
        self.seq_offset = (self.last_seq + 1 - seq) & 0xFFFF
        self.switch_seq = (self.last_seq + 1) & 0xFFFF
        if self.last_sent:  # continue the timeline: last timestamp + the time since, at least 1
            gap = max(1, int((time.perf_counter() - self.last_sent) * self.clock_rate))
            self.ts_offset = (self.last_ts + gap - ts) & 0xFFFFFFFF
            if self.munge:
                pid, tl0 = self.ids(payload)
                if pid >= 0:
                    self.pid_offset = (self.last_pid + 1 - pid) & 0x7FFF
                if tl0 >= 0:
                    self.tl0_offset = (self.last_tl0 + 1 - tl0) & 0xFF

    def select(self, index: int, congested: bool = False) -> bool:
        """Aim at layer ``index`` of the track; True when that is a change. The move happens on
        that layer's next keyframe (asked for now); until then the current layer flows on,
        unless the link is ``congested``: then it stops at once, since the link drops it anyway
        and the new layer's keyframe needs the room (a short freeze instead of a long one)."""
        layers = self.up.layers
        return self.aim(layers[max(0, min(index, len(layers) - 1))], congested)

    def aim(self, want: Layer, congested: bool = False) -> bool:
        """``select`` for any layer of the track, a simulcast one or a transcoded rung
        (``transcoding.RungLayer``); same keyframe switch and continuity."""
        if want is (self.target or self.layer):
            return False
        if congested and self.layer is not None and want is not self.layer:
            self.layer.remove(self)
        if self.target is not None and self.target is not self.layer:
            self.target.remove(self)
            self.target.waiting -= 1
        if want is self.layer:
            if self in want.downtracks:  # still flowing: nothing to wait for
                self.target = None
                return True
            self.layer = None  # stopped by a congested switch: start it again on a keyframe
        if want.index < 0:  # a transcoded rung (``RungLayer``): in the leg's codec (VP8, VP9),
            # whose PictureID the leg continues, or H.264 for a leg that cannot decode the
            # source, which has no PictureID: nothing to continue
            if not cast("RungLayer", want).numbered:
                self.munge = False
            elif not self.munge:
                self._start_munging()
        self.target = want
        want.add(self)
        return True

    def _start_munging(self) -> None:
        """A plain VP8 / VP9 leg about to switch to a transcoded rung: continue the PictureID and
        TL0PICIDX from the last ones forwarded (the rung numbers its own), as a simulcast leg
        does from the start."""
        layer = self.layer
        entry = layer.lookup((self.last_seq - self.seq_offset) & 0xFFFF) if layer else None
        if entry is not None:
            pid, tl0 = self.ids(entry[3])
            if pid < 0:
                return  # 7-bit or no PictureID: nothing to continue
            self.last_pid = pid
            self.last_tl0 = max(tl0, 0)
        self.munge = True

    @property
    def current(self) -> Layer | None:
        """The layer the subscriber gets now, or will get first."""
        return self.layer or self.target

    def _fell_behind(self) -> None:
        """Drop frames, not the call: wait for a fresh keyframe, then continue the numbering."""
        self.dropped += 1
        layer = self.layer
        if layer is None:
            return
        if self.target is not None and self.target is not layer:  # give up a pending switch
            self.target.remove(self)
            self.target.waiting -= 1
        self.layer = None
        self.target = layer
        layer.waiting += 1
        layer.request_keyframe()

    async def on_rtcp(self, packet: Any) -> None:
        """RTCP feedback from the subscriber about this leg (RFC 4585, RFC 5104), and the
        subscriber's receiver reports and REMB for its downlink estimate."""
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            metrics.NACKS.labels("downstream").inc(len(packet.lost))
            fresh = [s for s in packet.lost if s not in self.nack_seen and self.was_sent(s)]
            self.nacked.update(fresh)
            self.nack_seen.update(fresh)
            if self.downlink is not None and fresh:
                self.downlink.nacks += len(fresh)
                if self.downlink.alert is not None:  # judge the loss now, not at the next tick
                    self.downlink.alert()
            if len(self.nack_seen) > 4096:
                self.nack_seen.clear()
            now = time.monotonic()
            rtt = getattr(self.sender, "_RTCRtpSender__rtt", None)
            gap = max(REPAIR_GAP_S, rtt or 0.0)
            repaired = self.repaired
            for out in packet.lost:
                if now - repaired.get(out, -gap) < gap:
                    continue  # its repair is still on the way
                repaired[out] = now
                self.retransmit(out)
            if len(repaired) > 1024:
                repaired.clear()
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                layer = self.target or self.layer  # mid-switch, the next keyframe is the new one's
                if layer is not None:
                    layer.request_keyframe()
            elif packet.fmt == RTCP_PSFB_APP and self.downlink is not None:
                with contextlib.suppress(ValueError):
                    self.downlink.on_remb(unpack_remb_fci(packet.fci)[0])
        elif self.sender is not None:
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc == self.ssrc:
                        self.loss = report.fraction_lost / 256
            await RTCRtpSender._handle_rtcp_packet(self.sender, packet)  # RR: RTT statistics

    def was_sent(self, out: int) -> bool:
        """Whether outgoing number ``out`` was a packet this leg sent: not a gap the publisher's
        uplink (or, on a starved machine, the node's own receive buffer) made, which the
        subscriber NACKs too but which says nothing about its downlink. Numbers from before the
        current layer count as sent (their history is another layer's)."""
        layer = self.layer
        if layer is None or ((out - self.switch_seq) & 0xFFFF) >= 0x8000:
            return True
        return layer.lookup((out - self.seq_offset) & 0xFFFF) is not None

    def retransmit(self, out: int) -> None:
        """Resend a NACKed packet from the current layer's history, as RTX when negotiated
        (RFC 4588 section 4: original sequence number first in the payload). Not while a
        congested switch waits for the new layer's keyframe: the receiver keeps NACKing the
        stopped layer's lost packets, and answering them kept a throttled link full, so the
        new layer's keyframe was lost too (tests/sfu/test_throttled.py: no low-layer frame
        within 5 s of the throttle)."""
        link = self.link
        layer = self.layer
        if layer is None or not link.ready or ((out - self.switch_seq) & 0xFFFF) >= 0x8000:
            return  # gated, or sent from an earlier layer whose history this is not
        if self.target is not None and self not in layer.downtracks:
            return  # a congested switch stopped this layer: its repairs would fill the link
        self._again(layer, out)

    def _again(self, layer: Layer, out: int, repair: bool = True) -> int:
        """Resend outgoing number ``out`` from ``layer``'s history as it went out; its size, or
        0 when no longer there."""
        entry = layer.lookup((out - self.seq_offset) & 0xFFFF)
        if entry is None:
            return 0
        _, ts, marker, payload = entry
        ts = (ts + self.ts_offset) & 0xFFFFFFFF
        if self.munge:
            pid, tl0 = self.ids(payload)
            if pid >= 0:
                payload = self.rewrite(payload, (pid + self.pid_offset) & 0x7FFF,
                                       (tl0 + self.tl0_offset) & 0xFF if tl0 >= 0 else -1)
        self.resend(out, ts, marker, payload, repair)
        return len(payload)

    def pad(self, back: int) -> int:
        """Padding for a probe (``probe.Prober``): the packet sent ``back`` packets ago, again, as
        RTX (a redundant payload, as libwebrtc pads when RTX is negotiated: the receiver already
        has the packet and drops the copy). Returns the bytes sent, 0 when there is nothing to
        repeat (no RTX, a switch pending, nothing sent on this layer yet)."""
        layer = self.layer
        if layer is None or self.rtx_pt is None or self.target is not None or not self.link.ready:
            return 0
        out = (self.last_seq - back) & 0xFFFF
        if ((out - self.switch_seq) & 0xFFFF) >= 0x8000:
            return 0  # before the current layer: another layer's history
        return self._again(layer, out, repair=False)

    def resend(self, out: int, ts: int, marker: int, payload: bytes, repair: bool = True) -> None:
        """Send outgoing packet ``out`` again with the timestamp, marker and payload it went out
        with, as RTX when negotiated (RFC 4588 section 4: original sequence number first in the
        payload); ``repair``: an answer to a NACK (counted as a retransmission), not padding."""
        link = self.link
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
        if repair:
            self.retransmitted += 1
            metrics.RETRANSMISSIONS.inc()

    def sync_sender_report(self) -> None:
        """Feed aiortc's RTCP loop the counters and the NTP/RTP pair of the last forwarded packet,
        so its sender reports stay true (RFC 3550 section 6.4.1) without per-packet work."""
        s = self.sender
        if s is None or not self.packets:
            return
        age = time.perf_counter() - self.last_sent
        ntp = rtc_clock.current_ntp_time() - int(age * (1 << 32))
        s._RTCRtpSender__ntp_timestamp = ntp  # type: ignore[attr-defined]
        s._RTCRtpSender__rtp_timestamp = self.last_ts  # type: ignore[attr-defined]
        s._RTCRtpSender__packet_count = self.packets  # type: ignore[attr-defined]
        s._RTCRtpSender__octet_count = self.bytes  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.downlink is not None:
            self.downlink.legs.discard(self)
        for layer in {id(x): x for x in (self.layer, self.target) if x is not None}.values():
            layer.remove(self)
            if layer is self.target:
                layer.waiting -= 1
        self.layer = self.target = None

"""The edge's keyframe cache: it holds the packets from the first packet of the last keyframe on
(a keyframe whose SPS comes after another packet of its frame included), hands them to a new
viewer's leg with the frames one timestamp tick apart ending at the newest frame's own timestamp
(so live packets continue that frame), and gives up on a GOP longer than its limit. With a real
edge process and aiortc viewers: a lost burst packet comes back with the header it first had, and
viewers starting from the cache ask the source for no keyframe in their first second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtcpRrPacket, RtpPacket

from parley.media.broadcast import edge_fanout
from parley.media.broadcast.edge_fanout import GopCache
from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.broadcast.test_tiers import Start, edge_relay  # noqa: F401 (the role processes)
from tests.conftest import eventually

SEI, IDR, SPS_STAP, DELTA, FU_MIDDLE = b"\x06\x05", b"\x65\x88", b"\x18\x00\x02\x67\x42", \
    b"\x41\x9a", b"\x7c\x05\x00"


class Leg:
    """Records what a DownTrack would be asked to forward; it numbers from 100 on."""

    def __init__(self) -> None:
        self.got: list[tuple[int, int, int, bytes, bool]] = []
        self.packets = 0
        self.send_limit = 1 << 16  # packets its socket takes
        self.seq_offset = self.ts_offset = 0

    def forward(self, layer: Any, seq: int, ts: int, marker: int, payload: bytes,
                key: bool, ast: bytes = b"") -> None:
        if not self.packets:
            self.seq_offset = 100 - seq
        self.got.append((seq, ts, marker, payload, key))
        if self.packets < self.send_limit:
            self.packets += 1


def _push(cache: GopCache, packets: list[tuple[int, int, int, bytes]]) -> None:
    for seq, ts, marker, payload in packets:
        cache.forward(None, seq, ts, marker, payload, False)  # type: ignore[arg-type]


def test_a_new_viewer_gets_the_gop_from_its_keyframe_one_tick_apart() -> None:
    cache = GopCache()
    _push(cache, [(10, 1000, 1, DELTA)])  # before any keyframe: nothing to start on
    assert not cache.valid
    gop = [(11, 4000, 0, SEI), (12, 4000, 0, SPS_STAP), (13, 4000, 0, IDR),
           (14, 4000, 1, FU_MIDDLE), (15, 7000, 1, DELTA), (16, 10000, 0, DELTA)]
    _push(cache, [(9, 1000, 1, DELTA), *gop])
    assert cache.valid and [p[0] for p in cache.packets] == [11, 12, 13, 14, 15, 16]
    leg = Leg()
    sent = cache.replay(None, leg)  # type: ignore[arg-type]
    assert [(seq, ts, key) for seq, ts, _, _, key in leg.got] == [
        (11, 9998, True), (12, 9998, False), (13, 9998, False), (14, 9998, False),
        (15, 9999, False), (16, 10000, False)]
    # what went out, by outgoing number, as the leg's retransmissions must repeat it
    assert {out: (ts, marker) for out, (ts, marker, _) in sent.items()} == {
        100: (9998, 0), 101: (9998, 0), 102: (9998, 0), 103: (9998, 1), 104: (9999, 1),
        105: (10000, 0)}
    # the next keyframe starts a new GOP; the one before is gone
    _push(cache, [(17, 10000, 1, DELTA), (18, 13000, 1, IDR), (19, 16000, 1, DELTA)])
    assert [p[0] for p in cache.packets] == [18, 19]


def test_the_burst_ends_at_the_first_packet_the_leg_could_not_send() -> None:
    """A full socket buffer drops the leg to the next keyframe: nothing after it went out, so
    nothing after it may be resent as the burst's (its numbers are the live stream's next)."""
    cache = GopCache()
    _push(cache, [(1, 0, 1, IDR), (2, 3000, 1, DELTA), (3, 6000, 1, DELTA)])
    leg = Leg()
    leg.send_limit = 2
    sent = cache.replay(None, leg)  # type: ignore[arg-type]
    assert sorted(sent) == [100, 101] and len(leg.got) == 3


def test_a_gop_longer_than_the_limit_is_not_cached(monkeypatch: Any) -> None:
    monkeypatch.setattr(edge_fanout, "GOP_LIMIT", 3)
    cache = GopCache()
    _push(cache, [(1, 0, 1, IDR), (2, 1, 1, DELTA), (3, 2, 1, DELTA)])
    assert cache.valid and len(cache.packets) == 3
    _push(cache, [(4, 3, 1, DELTA)])
    assert not cache.valid
    _push(cache, [(5, 4, 1, DELTA), (6, 5, 1, IDR)])
    assert cache.valid and [p[0] for p in cache.packets] == [6]


class WireViewer(Viewer):
    """A WHEP viewer that sees its video RTP as it arrives (after SRTP, RTX unwrapped to the
    sequence number it repairs): the header of each packet's first copy and of every repair, the
    PLIs it sends; with ``drop``, it loses the first copy of the first packet of the burst's second
    frame (timestamp one tick after the first), as a lossy downlink would. While ``holding``, its
    receiver reports (RFC 3550 6.4.2) are not sent: the edge cannot know yet what it received."""

    def __init__(self, url: str, drop: bool = False, holding: bool = False) -> None:
        super().__init__(url)
        self.holding = holding
        self.reports: list[float] = []  # when receiver reports went out
        self.first: dict[int, int] = {}  # sequence number -> timestamp of its first copy
        self.repairs: list[tuple[int, int]] = []  # (sequence number, timestamp) of each repair
        self.dropped: tuple[int, int] | None = None
        self.plis: list[float] = []
        receiver = next(t for t in self.pc.getTransceivers() if t.kind == "video").receiver
        self.receiver = receiver
        handle, send_pli = receiver._handle_rtp_packet, receiver._send_rtcp_pli
        send_rtcp = receiver._send_rtcp
        start: list[int] = []

        async def tap(packet: RtpPacket, arrival_time_ms: int = 0) -> None:
            codecs = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
            codec = codecs.get(packet.payload_type)
            if codec is not None and codec.mimeType.lower().endswith("/rtx"):
                if len(packet.payload) >= 2:
                    seq = int.from_bytes(packet.payload[:2], "big")
                    self.repairs.append((seq, packet.timestamp))
            elif codec is not None:
                seq, ts = packet.sequence_number, packet.timestamp
                if seq in self.first:
                    self.repairs.append((seq, ts))
                else:
                    self.first[seq] = ts
                    start[:] = start or [ts]
                    if drop and self.dropped is None and ts == (start[0] + 1) & 0xFFFFFFFF:
                        self.dropped = (seq, ts)
                        return
            await handle(packet, arrival_time_ms)

        async def pli(media_ssrc: int) -> None:
            self.plis.append(time.monotonic())
            await send_pli(media_ssrc)

        async def rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpRrPacket) and packet.reports:
                if self.holding:
                    return
                self.reports.append(time.monotonic())
            await send_rtcp(packet)

        receiver._handle_rtp_packet = tap  # type: ignore[method-assign]
        receiver._send_rtcp_pli = pli  # type: ignore[method-assign]
        receiver._send_rtcp = rtcp  # type: ignore[method-assign]

    async def send_pli(self) -> None:
        """A PLI (RFC 4585 6.3.1) for the stream it receives, as a decoder that lost a picture."""
        ssrc = next(iter(self.receiver._RTCRtpReceiver__remote_streams))  # type: ignore[attr-defined]
        await self.receiver._send_rtcp_pli(ssrc)


def _camera_keyframe_requests(cam: Publisher) -> list[float]:
    """When the camera's encoder is asked for a keyframe (a PLI or FIR reaching its sender)."""
    sender = next(t for t in cam.pc.getTransceivers() if t.kind == "video").sender
    asked: list[float] = []
    force = sender._send_keyframe

    def send_keyframe() -> None:
        asked.append(time.monotonic())
        force()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
    return asked


async def _decoding(viewer: Viewer, frames: int, what: str) -> None:
    async def enough() -> bool:
        return len(viewer.video) >= frames
    await eventually(enough, 25, what)


async def test_a_burst_packet_lost_on_the_way_is_resent_with_the_header_it_first_had(
        parley_server: Callable[..., str], edge_relay: Start) -> None:  # noqa: F811
    """The retransmission of a replayed packet carries the squeezed timestamp its frame went out
    with, so the frame decodes (its original timestamp would split it: a broken frame, a PLI)."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = Publisher(base, "final", key("final", "cam1"), (256, 144))
    assert (await cam.publish()).status_code == 201
    edge, _ = edge_relay(f"{base}/live/final/whep", "edge")
    first = Viewer(f"{edge}/live/final/whep")
    late = WireViewer(f"{edge}/live/final/whep", drop=True)
    try:
        assert (await first.play()).status_code == 201
        await _decoding(first, 30, "the first viewer decoding")  # the edge holds a GOP
        assert (await late.play()).status_code == 201
        await _decoding(late, 30, "the late viewer decoding")
        assert late.dropped is not None, "no burst of several frames reached the late viewer"
        seq, ts = late.dropped
        resent = [t for s, t in late.repairs if s == seq]
        assert resent and set(resent) == {ts}, (late.dropped, late.repairs)
        assert set(late.sizes()) == {(256, 144)}
    finally:
        await late.close()
        await first.close()
        await cam.stop()


async def test_a_viewer_started_from_the_cache_asks_upstream_for_no_keyframe_at_first(
        parley_server: Callable[..., str], edge_relay: Start) -> None:  # noqa: F811
    """Viewers joining from the cached GOP, each sending a PLI as it starts (before any receiver
    report of theirs covers the burst), reach the source with no keyframe request; a PLI after
    the viewer reported the burst received goes upstream (its keyframe did not decode)."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = Publisher(base, "final", key("final", "cam1"), (256, 144))
    asked = _camera_keyframe_requests(cam)
    assert (await cam.publish()).status_code == 201
    edge, _ = edge_relay(f"{base}/live/final/whep", "edge")
    first = Viewer(f"{edge}/live/final/whep")
    joiners = [WireViewer(f"{edge}/live/final/whep", holding=True) for _ in range(3)]
    try:
        assert (await first.play()).status_code == 201
        await _decoding(first, 30, "the first viewer decoding")
        before = len(asked)
        for viewer in joiners:
            assert (await viewer.play()).status_code == 201
            await _decoding(viewer, 1, "a joining viewer's first frame")
            await viewer.send_pli()
        await asyncio.sleep(0.5)  # two of the edge's and the ingest's coalescing intervals
        assert len(asked) == before, [round(t - asked[0], 2) for t in asked]
        reporter = joiners[0]
        reporter.holding = False  # its next receiver report covers the burst

        async def reported() -> bool:
            return bool(reporter.reports)
        await eventually(reported, 5, "a receiver report of the viewer")
        await reporter.send_pli()  # real loss: a keyframe is asked for upstream

        async def asked_again() -> bool:
            return len(asked) > before
        await eventually(asked_again, 5, "the later PLI reaching the camera")
    finally:
        for viewer in joiners:
            await viewer.close()
        await first.close()
        await cam.stop()

"""VP9 publishers on the call server (RFC 9628): the node reads VP9 payload descriptors
(keyframes, the frame height, PictureID continuity) and never decodes; a subscriber that decodes
VP9 gets the publisher's payloads byte for byte, one that decodes H.264 only gets them through a
real meeting transcoder process (FFmpeg's vp9 decoder); malformed descriptors in the stream kill
neither. A VP9 subscriber whose budget is below the camera gets a VP9 rung (libvpx-vp9 in the
transcoder) and back, one continuous VP9 stream across both switches.

The publisher is an aiortc peer that negotiated VP9 alone and writes real libvpx-vp9
frames as RTP itself (aiortc has no VP9 encoder); the Chromium case is
tests/sfu/test_h264_receiver.py."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import av
import httpx
import pytest
from aiortc import MediaStreamTrack

from parley.media.meeting_transcoder import Output, packetize_vp9
from parley.media.meeting_transcoder_wire import OutputSpec, parse_rtp
from parley.media.node import CallServer
from parley.media.rtp import vp9_height, vp9_ids, vp9_keyframe, vp9_rewrite
from parley.media.transcoding import RungLayer
from parley.recorder.depacketize import Depacketizer, Frame, vp9_descriptor

from .client import Client, wait_for
from .test_transcoding import Transcoder, Viewer, call_server, transcoder  # noqa: F401

SIZE = (320, 240)
GOP = 15  # frames per keyframe in the looped VP9 source
MALFORMED = [
    b"",
    b"\x80",  # I set, no PictureID
    b"\x80\x80",  # 15-bit PictureID cut short... then nothing: a frame with no data
    b"\xa8\x80\x01",  # I, L, B: no layer indices
    b"\xba\x80\x01\x00\x00\x10\x01",  # I, L, B, V: N_S=0, Y, sizes cut off
    b"\xda\x80\x01\x00\xff\xff\xff\xff",  # I, P, F, B, V: four chained P_DIFFs (3 allowed)
    b"\x0a\xf8",  # B, V: N_S=7 with sizes and no room for them
    b"\x0b\x18\x00\x00",  # B, V, Z: picture groups announced, none there
    b"\xff" * 40,
]


def encode_gop(size: tuple[int, int] = SIZE, frames: int = GOP, bitrate: int = 300_000,
               noise: bool = False) -> list[tuple[bytes, bool]]:
    """One GOP of real VP9 (libvpx-vp9, profile 0): (frame, keyframe) pairs, keyframe first;
    ``noise`` in a quarter of the picture makes it cost about ``bitrate``, like a busy camera."""
    ctx = av.CodecContext.create("libvpx-vp9", "w")
    ctx.width, ctx.height = size
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = fractions.Fraction(1, 15)
    ctx.bit_rate = bitrate
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = random.Random(7)
    out: list[tuple[bytes, bool]] = []
    for n in range(frames):
        frame = av.VideoFrame(*size, "yuv420p")
        luma = bytes(((x * 3 + y + n * 5) & 0xFF) for y in range(size[1]) for x in range(size[0]))
        if noise:
            luma = rng.randbytes(len(luma) // 4) + luma[len(luma) // 4:]
        frame.planes[0].update(luma)
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts = n
        frame.pict_type = av.video.frame.PictureType.I if n == 0 else \
            av.video.frame.PictureType.NONE
        out += [(bytes(p), p.is_keyframe) for p in ctx.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in ctx.encode(None)]
    assert out[0][1] and len(out) == frames
    return out


def packetize(frame: bytes, key: bool, pid: int, tl0: int,
              size: tuple[int, int] = SIZE, mtu: int = 900) -> list[bytes]:
    """RFC 9628 payloads of one frame as Chromium sends an L1T1 layer: non-flexible mode, 15-bit
    PictureID, layer indices and TL0PICIDX; a keyframe's first packet has the scalability
    structure with the frame size."""
    chunks = [frame[i:i + mtu] for i in range(0, len(frame), mtu)]
    out = []
    for i, chunk in enumerate(chunks):
        b0 = 0xA0 | (0 if key else 0x40) | (0x08 if i == 0 else 0) | (
            0x04 if i == len(chunks) - 1 else 0)
        head = bytes([b0, 0x80 | (pid >> 8), pid & 0xFF, 0x00, tl0])
        if key and i == 0:
            head = bytes([head[0] | 0x02]) + head[1:] + bytes([0x10]) + size[0].to_bytes(
                2, "big") + size[1].to_bytes(2, "big")
        out.append(head + chunk)
    return out


def test_vp9_descriptor_fields() -> None:
    gop = encode_gop()
    key = packetize(*gop[0], pid=0x1234, tl0=7)
    delta = packetize(*gop[1], pid=0x1235, tl0=8)
    assert vp9_keyframe(key[0]) and not vp9_keyframe(delta[0])
    assert len(key) > 1 and not vp9_keyframe(key[1])  # B=0: not where a frame starts
    assert vp9_height(key[0]) == SIZE[1] and vp9_height(delta[0]) == 0
    assert vp9_descriptor(key[0]) == (10, 5) and vp9_descriptor(delta[0]) == (5, -1)
    assert vp9_ids(delta[0]) == (0x1235, 8)
    moved = vp9_rewrite(delta[0], 0x0042, 200)
    assert vp9_ids(moved) == (0x0042, 200) and moved[5:] == delta[0][5:]
    assert moved[0] == delta[0][0] and moved[3] == delta[0][3]
    # flexible mode (F=1) has no TL0PICIDX: it is neither read nor written
    flexible = bytes([0xB8, 0x80, 0x05, 0x00]) + b"data"
    assert vp9_ids(flexible) == (5, -1) and vp9_rewrite(flexible, 9, 3)[3:] == flexible[3:]
    # a spatial layer above 0 is no starting point even without inter-picture prediction
    assert not vp9_keyframe(bytes([0xA8, 0x80, 0x01, 0x02, 0x00]) + b"x")


def test_malformed_vp9_descriptors_are_read_without_error() -> None:
    for payload in MALFORMED + [bytes([b]) + bytes(range(n)) for b in range(256)
                                for n in (0, 1, 2, 5)]:
        vp9_keyframe(payload)
        vp9_height(payload)
        pid, tl0 = vp9_ids(payload)
        if pid >= 0:
            vp9_rewrite(payload, pid, tl0)
        size, ss = vp9_descriptor(payload)
        assert size <= len(payload) and ss < max(size, 1)


def test_depacketized_vp9_decodes_and_damage_waits_for_a_keyframe() -> None:
    """The transcoder's path: RFC 9628 packets -> whole frames -> FFmpeg's vp9 decoder; a frame
    with a malformed packet or a gap is dropped and decoding resumes on the next keyframe."""
    gop = encode_gop()
    frames: list[Frame] = []
    asked = []
    d = Depacketizer("video/vp9", frames.append, lambda: asked.append(1))
    seq, sent = 100, 0
    for loop in range(2):
        for n, (data, key) in enumerate(gop):
            packets = packetize(data, key, pid=loop * GOP + n, tl0=(loop * GOP + n) & 0xFF,
                                mtu=200)
            if loop == 0 and n == 5:  # a malformed packet inside a delta frame
                packets.insert(1, MALFORMED[3])
            for i, p in enumerate(packets):
                d.push(seq, 3000 * (loop * GOP + n), i == len(packets) - 1, p)
                seq += 1
            sent += 1
    assert asked == [1] and d.dropped >= 1
    assert [f.keyframe for f in frames] == [True] * 1 + [False] * 4 + [True] + [False] * 14
    decoder = av.CodecContext.create("vp9", "r")
    pictures = [p for f in frames for p in decoder.decode(av.Packet(f.data))]
    assert len(pictures) == len(frames) and {(p.width, p.height) for p in pictures} == {SIZE}


class SilentVideo(MediaStreamTrack):
    """The VP9 publisher's track: it never yields, the test writes the RTP itself."""

    kind = "video"

    def __init__(self, track_id: str) -> None:
        super().__init__()
        self._id = track_id

    async def recv(self) -> Any:
        await asyncio.Event().wait()


class Vp9Viewer(Viewer):
    """A subscriber that announces one video codec only (VP9 unless told) and keeps the payloads
    it receives (aiortc cannot decode VP9 nor AV1: they are compared with what the publisher
    sent)."""

    def __init__(self, name: str, meeting: str, codec: str = "video/vp9") -> None:
        super().__init__(name, meeting)
        self.video_codecs = [codec]
        self.payloads: list[bytes] = []
        self.rtp: list[tuple[int, int, bool, bytes]] = []  # (sequence, timestamp, marker, payload)

    async def _consume(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self.pc is None:
            return
        for t in self.pc.getTransceivers():
            if t.receiver.track is track:
                async def keep(packet: Any, arrival_time_ms: int = 0) -> None:
                    self.payloads.append(packet.payload)
                    self.rtp.append((packet.sequence_number, packet.timestamp,
                                     bool(packet.marker), packet.payload))
                t.receiver._handle_rtp_packet = keep  # type: ignore[method-assign]


async def send_camera(pub: Client, stop: asyncio.Event, sent: list[bytes], mime: str,
                      payloads: Callable[[int], list[bytes]]) -> None:
    """Write frame n's ``payloads(n)`` as RTP on the publisher's video sender, 15 frames a
    second (timestamps 6000 apart, the marker on each frame's last packet), until ``stop``."""
    assert pub.pc is not None
    sender = next(t.sender for t in pub.pc.getTransceivers() if t.kind == "video")
    await wait_for(lambda: pub.pc is not None and pub.pc.connectionState == "connected", 20,
                   "the publisher connected")
    codec = next(t._codecs[0] for t in pub.pc.getTransceivers() if t.sender is sender)
    assert codec.mimeType.lower() == mime, codec
    transport = sender.transport
    seq, n = 1000, 0
    while not stop.is_set():
        packets = payloads(n)
        for i, payload in enumerate(packets):
            marker = 0x80 if i == len(packets) - 1 else 0
            header = bytes([0x80, marker | codec.payloadType]) + seq.to_bytes(2, "big") + (
                (n * 6000) & 0xFFFFFFFF).to_bytes(4, "big") + sender._ssrc.to_bytes(4, "big")
            await transport._send_rtp(header + payload)
            sent.append(payload)
            seq = (seq + 1) & 0xFFFF
        n += 1
        await asyncio.sleep(1 / 15)


async def stop_camera(stop: asyncio.Event, writer: asyncio.Task[None] | None,
                      clients: list[Client]) -> None:
    """End a test's RTP writer (``send_camera``) and close its clients."""
    stop.set()
    if writer is not None:
        await asyncio.gather(writer, return_exceptions=True)
    for c in clients:
        await c.close()


async def send_vp9(pub: Client, stop: asyncio.Event, sent: list[bytes],
                   gop: list[tuple[bytes, bool]] | None = None, malformed: bool = True) -> None:
    """Write the looped GOP as RTP on the publisher's VP9 sender, with a malformed packet in
    every third frame (its own sequence number: the frame it sits in is then broken for a
    depacketizer) unless ``malformed`` is False."""
    frames = gop or encode_gop()

    def payloads(n: int) -> list[bytes]:
        data, key = frames[n % len(frames)]
        packets = packetize(data, key, pid=n & 0x7FFF, tl0=n & 0xFF)
        if malformed and n % 3 == 2:
            packets.insert(1, MALFORMED[(n // 3) % len(MALFORMED)])
        return packets

    await send_camera(pub, stop, sent, "video/vp9", payloads)


@pytest.mark.redis
async def test_vp9_camera_forwarded_to_vp9_and_transcoded_for_h264_despite_bad_descriptors(
        call_server: tuple[CallServer, str], transcoder: Transcoder) -> None:  # noqa: F811
    server, url = call_server
    meeting = f"vp9-{secrets.token_hex(4)}"
    pub = Client("a", meeting, video=False, audio=False)
    pub.extra = [SilentVideo("a-camera")]
    pub.send_codecs = ["video/vp9"]
    h264, vp9 = Viewer("h264", meeting), Vp9Viewer("vp9", meeting)
    h264.video_codecs = ["video/h264"]
    clients = [pub, h264, vp9]
    stop = asyncio.Event()
    sent: list[bytes] = []
    writer: asyncio.Task[None] | None = None
    try:
        for c in clients:
            await c.join(url)
        writer = asyncio.ensure_future(send_vp9(pub, stop, sent))
        await wait_for(lambda: len(h264.seen["a-camera"]) >= 30 and len(vp9.payloads) >= 200,
                       40, "H.264 frames of the VP9 camera and VP9 packets forwarded")
        assert not writer.done(), writer
        up = next(u for p in server.participants.values() for u in p.uptracks)
        assert up.codec.mimeType.lower() == "video/vp9" and up.layers[0].height == SIZE[1]
        # the VP9 subscriber: the original, untranscoded, every payload as the publisher sent
        # it (the malformed ones too: the node forwards what it cannot read as it is)
        leg = server.participants[vp9.pid].downtracks[id(up)]
        assert leg.layer is up.layers[0] and not leg.munge
        assert not any(e["type"] == "layer" and e.get("transcoded")
                       for e in server.participants[vp9.pid].events)
        got = set(vp9.payloads)
        assert got <= set(sent) and any(m in got for m in MALFORMED if m)
        # the H.264 subscriber: decoded once by the transcoder, encoded once at the source height
        me = server.participants[h264.pid]
        dt = me.downtracks[id(up)]
        assert isinstance(dt.layer, RungLayer) and dt.layer.codec == "video/h264"
        assert h264.height("a-camera") == SIZE[1]
        remote = (await transcoder.status())["sources"]
        assert [(s["codec"], s["height"], [o["codec"] for o in s["outputs"]])
                for s in remote] == [("video/vp9", SIZE[1], ["video/h264"])], remote
        assert remote[0]["decoded"] >= 30
        route = server.transcoding.routes[(id(up), 0)].status(None)
        assert route["sourceCodec"] == "video/vp9"
        assert transcoder.proc.poll() is None
        # and the node goes on: a later joiner still gets the camera
        late = Viewer("late", meeting)
        late.video_codecs = ["video/h264"]
        clients.append(late)
        await late.join(url)
        await wait_for(lambda: len(late.seen["a-camera"]) >= 10, 20, "a late H.264 joiner")
        print(f"\nVP9 camera: {len(vp9.payloads)} packets forwarded as sent, "
              f"{len(h264.seen['a-camera'])} H.264 frames via the transcoder "
              f"({remote[0]['decoded']} decoded, {remote[0]['errors']} decoder errors, "
              f"{remote[0]['cpuPercent']} % of a core)")
    finally:
        await stop_camera(stop, writer, clients)


def test_transcoder_vp9_output_is_one_layer_rfc9628_a_leg_can_continue() -> None:
    """The VP9 rung's packets as the meeting transcoder sends them (libvpx-vp9 realtime, then
    ``packetize_vp9``): the call server's keyframe gate and height reader see the first
    packet of a keyframe, PictureID and TL0PICIDX count up by one per frame, B and E mark each
    frame's ends, and the frames decode at the rung's size with no hidden (superframe) ones."""
    out = Output(OutputSpec(1, "video/vp9", 180, 120), "veryfast")
    rng = random.Random(3)
    firsts: list[bytes] = []
    frames: list[Frame] = []
    d = Depacketizer("video/vp9", frames.append)
    for n in range(20):
        picture = av.VideoFrame(640, 360, "yuv420p")
        luma = picture.planes[0]
        luma.update(rng.randbytes(luma.buffer_size // 4) + bytes(luma.buffer_size * 3 // 4))
        for plane in picture.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        encoded = out.encoder.encode(picture, n * 3000, n in (0, 12))
        assert len(encoded) == 1  # no look-ahead: one encoded frame per picture, at once
        for data, ts, key in encoded:
            assert key == (n in (0, 12))
            packets = [parse_rtp(p) for p in out.packets(data, ts, key)]
            assert all(p is not None for p in packets)
            payloads = [p[4] for p in packets]  # type: ignore[index]
            assert [bool(p[0] & 0x08) for p in payloads] == [True] + [False] * (
                len(payloads) - 1)
            assert [bool(p[0] & 0x04) for p in payloads] == [False] * (
                len(payloads) - 1) + [True]
            assert [p[3] for p in packets] == [0] * (len(packets) - 1) + [1]  # type: ignore[index]
            assert {vp9_ids(p) for p in payloads} == {vp9_ids(payloads[0])}
            assert vp9_keyframe(payloads[0]) == key
            assert vp9_height(payloads[0]) == (180 if key else 0)
            firsts.append(payloads[0])
            for seq, ts_, marker, payload in (p[1:] for p in packets):  # type: ignore[index]
                d.push(seq, ts_, bool(marker), payload)
    ids = [vp9_ids(p) for p in firsts]
    assert all(((b[0] - a[0]) & 0x7FFF, (b[1] - a[1]) & 0xFF) == (1, 1)
               for a, b in itertools.pairwise(ids))
    decoder = av.CodecContext.create("vp9", "r")
    pictures = [p for f in frames for p in decoder.decode(av.Packet(f.data))]
    assert len(pictures) == 20 and {(p.width, p.height) for p in pictures} == {(320, 180)}
    assert [f.keyframe for f in frames].count(True) == 2
    # a frame bigger than one packet is cut in equal parts, none above 1200 bytes of VP9
    big = packetize_vp9(bytes(3000), 5, 9, False, (320, 180))
    assert [len(p) - 5 for p in big] == [1000, 1000, 1000]


class DecodingVp9Viewer(Viewer):
    """A subscriber that announces VP9 only and decodes what it gets as a browser would: one
    RFC 9628 depacketizer and one FFmpeg vp9 decoder for the whole leg, whatever layer or rung
    the node feeds it (aiortc has no VP9 decoder), a PLI when a frame breaks. Per decoded frame:
    (arrival, height, PictureID, TL0PICIDX, first sequence number, RTP timestamp)."""

    def __init__(self, name: str, meeting: str) -> None:
        super().__init__(name, meeting)
        self.video_codecs = ["video/vp9"]
        self.decoded: list[tuple[float, int, int, int, int, int]] = []
        self.errors = 0

    def height_now(self) -> int:
        return self.decoded[-1][1] if self.decoded else 0

    def first_after(self, track: str, since: float, test: Any) -> float | None:
        return next((t for t, h, *_ in self.decoded if t > since and test(h)), None)

    async def _consume(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self.pc is None:
            return
        receiver = next(t.receiver for t in self.pc.getTransceivers()
                        if t.receiver.track is track)
        decoder = av.CodecContext.create("vp9", "r")
        heads: dict[int, tuple[int, int, int]] = {}  # frame timestamp -> pid, tl0, first seq
        ssrc = [0]

        def on_frame(frame: Frame) -> None:
            head = heads.pop(frame.rtp_ts & 0xFFFFFFFF, (-1, -1, -1))
            try:
                pictures = decoder.decode(av.Packet(frame.data))
            except av.FFmpegError:
                self.errors += 1
                return
            for picture in pictures:
                self.decoded.append((time.monotonic(), picture.height, *head,
                                     frame.rtp_ts & 0xFFFFFFFF))

        def ask() -> None:
            self._tasks.append(asyncio.ensure_future(receiver._send_rtcp_pli(ssrc[0])))

        depacketizer = Depacketizer("video/vp9", on_frame, ask)

        async def keep(packet: Any, arrival_time_ms: int = 0) -> None:
            ssrc[0] = packet.ssrc
            payload = packet.payload
            if payload and payload[0] & 0x08:  # B: the frame's first packet
                heads[packet.timestamp] = (*vp9_ids(payload), packet.sequence_number)
            depacketizer.push(packet.sequence_number, packet.timestamp, bool(packet.marker),
                              payload)

        receiver._handle_rtp_packet = keep  # type: ignore[method-assign]


@pytest.mark.redis
async def test_a_capped_vp9_subscriber_gets_a_vp9_rung_and_back_in_one_continuous_stream(
        call_server: tuple[CallServer, str], transcoder: Transcoder) -> None:  # noqa: F811
    """Gap 1 of issue 12 item 3 for VP9: a one-layer 320x240 VP9 camera (about 400 kbit/s) and
    a VP9-only subscriber that caps what it receives at 150 kbit/s: it gets the 180p rung in
    VP9 from the meeting transcoder (never VP8: its leg negotiated VP9), decodes it with the
    same decoder it decoded the original with, and gets the original back when the cap is
    lifted; across both switches the leg's sequence numbers, PictureID and TL0PICIDX run on
    by one per frame and the RTP timestamps never go back. An H.264-only subscriber capped the
    same gets the 180p rung in H.264 from the same source decoder."""
    server, url = call_server
    meeting = f"vp9r-{secrets.token_hex(4)}"
    pub = Client("a", meeting, video=False, audio=False)
    pub.extra = [SilentVideo("a-camera")]
    pub.send_codecs = ["video/vp9"]
    vp9 = DecodingVp9Viewer("vp9", meeting)
    h264 = Viewer("h264", meeting)
    h264.video_codecs = ["video/h264"]
    clients = [pub, vp9, h264]
    stop = asyncio.Event()
    writer: asyncio.Task[None] | None = None
    gop = encode_gop(frames=30, bitrate=400_000, noise=True)
    try:
        for c in clients:
            await c.join(url)
        writer = asyncio.ensure_future(send_vp9(pub, stop, [], gop, malformed=False))
        await wait_for(lambda: sum(1 for r in vp9.decoded if r[1] == SIZE[1]) >= 20
                       and h264.height("a-camera") == SIZE[1], 30,
                       "the VP9 original decoded, and the H.264 subscriber's codec rung")
        up = next(u for p in server.participants.values() for u in p.uptracks)
        assert up.codec.mimeType.lower() == "video/vp9" and not up.simulcast
        me = server.participants[vp9.pid]
        leg = me.downtracks[id(up)]
        assert leg.layer is up.layers[0] and not leg.munge

        capped_at = time.monotonic()
        async with httpx.AsyncClient(headers=vp9.http.headers) as http:
            for v in (vp9, h264):
                r = await http.post(f"{v.me}/view", json={"maxBitrate": 150_000})
                assert r.status_code == 204
        await wait_for(lambda: vp9.first_after("a-camera", capped_at, lambda h: h < SIZE[1])
                       and vp9.height_now() < SIZE[1]
                       and h264.first_after("a-camera", capped_at, lambda h: h < SIZE[1]),
                       15, "both capped subscribers decoding a rung")
        assert isinstance(leg.layer, RungLayer) and leg.layer.codec == "video/vp9"
        assert leg.munge  # the plain leg continues PictureIDs from the rung's first keyframe
        moves = [e for e in me.events if e["type"] == "layer" and e.get("transcoded")]
        assert [(e["reason"], e["codec"], e["rid"], e["height"]) for e in moves] == [
            ("transcoded", "video/vp9", "180p", 180)], moves
        h_leg = server.participants[h264.pid].downtracks[id(up)]
        assert isinstance(h_leg.layer, RungLayer)
        assert (h_leg.layer.codec, h_leg.layer.rung.name) == ("video/h264", "180p")
        # one source decoder, one encoder per distinct output
        remote = (await transcoder.status())["sources"]
        assert [(s["codec"], sorted((o["codec"], o["height"]) for o in s["outputs"]))
                for s in remote] == [("video/vp9", [("video/h264", 180), ("video/vp9", 180)])]
        n = len(vp9.decoded)
        await wait_for(lambda: len(vp9.decoded) >= n + 30, 10, "30 more frames of the VP9 rung")
        rung_cpu = remote[0]["cpuPercent"]

        lifted_at = time.monotonic()
        async with httpx.AsyncClient(headers=vp9.http.headers) as http:
            r = await http.post(f"{vp9.me}/view", json={"maxBitrate": None})
            assert r.status_code == 204
        await wait_for(lambda: vp9.first_after("a-camera", lifted_at, lambda h: h == SIZE[1])
                       and sum(1 for r in vp9.decoded if r[0] > lifted_at
                               and r[1] == SIZE[1]) >= 10, 15, "the VP9 original again")
        assert leg.layer is up.layers[0]
        assert [e["reason"] for e in me.events if e["type"] == "layer"][-1] == "fits"
        remote = (await transcoder.status())["sources"]
        assert [[o["codec"] for o in s["outputs"]] for s in remote] == [["video/h264"]]

        # one continuous stream: the decoder never failed, and frame by frame the leg's numbers
        # ran on (a gap in sequence numbers, a lost frame on loopback, allows as many frames)
        assert vp9.errors == 0
        heights = [h for _, h, *_ in vp9.decoded]
        assert 180 in heights and heights[0] == heights[-1] == SIZE[1]
        switches = sum(1 for a, b in itertools.pairwise(heights) if a != b)
        assert switches == 2, heights
        for a, b in itertools.pairwise(vp9.decoded):
            _, _, pid_a, tl0_a, seq_a, ts_a = a
            _, _, pid_b, tl0_b, seq_b, ts_b = b
            lost = ((seq_b - seq_a) & 0xFFFF) - 1  # packets between two frames' starts
            assert 1 <= (pid_b - pid_a) & 0x7FFF <= 1 + lost, (a, b)
            assert 1 <= (tl0_b - tl0_a) & 0xFF <= 1 + lost, (a, b)
            assert 0 < (ts_b - ts_a) & 0xFFFFFFFF < 0x80000000, (a, b)
        down = vp9.first_after("", capped_at, lambda h: h < SIZE[1]) or capped_at
        back = vp9.first_after("", lifted_at, lambda h: h == SIZE[1]) or lifted_at
        print(f"\nVP9 rung: 180p VP9 decoded {down - capped_at:.2f} s after the cap, the "
              f"original {back - lifted_at:.2f} s after it was lifted; {len(vp9.decoded)} "
              f"frames, PictureID continuous; "
              f"source {up.layers[0].known / 1000:.0f} kbit/s; transcoder {rung_cpu} % of a "
              f"core (decode 240p VP9, encode 180p VP9 + 180p H.264, 15 fps)")
    finally:
        await stop_camera(stop, writer, clients)

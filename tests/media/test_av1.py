"""AV1 over RTP (parley.media.av1) on real AV1: the keyframe and height the call server reads,
and the temporal units the meeting transcoder rebuilds for libdav1d, from packets cut the way
libwebrtc's AV1 packetizer cuts them; damaged and malformed packets are read safely.

The frames are ``data/av1-160x120.ivf``, 24 temporal units from libaom (the encoder Chromium
uses), keyframes at 0 and 12, made once with
``ffmpeg -f lavfi -i testsrc2=size=160x120:rate=15 -frames:v 24 -c:v libaom-av1 -usage realtime
-cpu-used 8 -g 12 -lag-in-frames 0 -b:v 150k -pix_fmt yuv420p -threads 1``: no encoder runs in
the test process (SVT-AV1 hung in one)."""

from __future__ import annotations

import asyncio
import random
import secrets
from pathlib import Path

import av
import pytest
from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from parley.media import codecs as _codecs  # noqa: F401  (AV1 in aiortc's table, 35-63 dynamic)
from parley.media.av1 import (
    Av1Depacketizer,
    av1_height,
    av1_keyframe,
    leb128,
    obu_elements,
    packetize,
    rtp_obus,
    sequence_header_height,
)
from parley.media.node import CallServer
from parley.media.rtp import height_reader, keyframe_detector
from parley.media.transcoding import RungLayer
from parley.recorder.depacketize import Frame

from .client import Client, wait_for
from .test_transcoding import Transcoder, Viewer, call_server, transcoder  # noqa: F401
from .test_vp9 import SilentVideo, Vp9Viewer, send_camera, stop_camera

CLIP = Path(__file__).parent / "data" / "av1-160x120.ivf"
SIZE = (160, 120)


def temporal_units() -> list[tuple[bytes, bool]]:
    """The clip's temporal units (low-overhead format) and keyframe flags, demuxed only."""
    with av.open(str(CLIP)) as clip:
        return [(bytes(p), bool(p.is_keyframe)) for p in clip.demux(video=0) if p.size]


def rtp_stream(mtu: int) -> list[tuple[int, int, bool, bytes]]:
    """(sequence, timestamp, marker, payload) of the whole clip at 15 frames/s, the sequence
    numbers wrapping on the way."""
    out = []
    seq = 0xFFF0
    for n, (unit, key) in enumerate(temporal_units()):
        payloads = packetize(unit, key, mtu)
        for i, payload in enumerate(payloads):
            out.append((seq, (0xFFFF0000 + n * 6000) & 0xFFFFFFFF, i == len(payloads) - 1,
                        payload))
            seq = (seq + 1) & 0xFFFF
    return out


def decode(units: list[bytes]) -> list[bytes]:
    """libdav1d's pictures of ``units`` (their luma planes, without the lines' padding)."""
    decoder = av.CodecContext.create("libdav1d", "r")
    decoder.thread_count = 1
    pictures = [p for u in units for p in decoder.decode(av.Packet(u))]
    pictures += decoder.decode(None)
    assert {(p.width, p.height) for p in pictures} == {SIZE}
    return [b"".join(bytes(p.planes[0])[y * p.planes[0].line_size:][:p.width]
                     for y in range(p.height)) for p in pictures]


class Collect:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.asked = 0
        self.depacketizer = Av1Depacketizer("video/AV1", self.frames.append, self.ask)

    def ask(self) -> None:
        self.asked += 1

    def push(self, packets: list[tuple[int, int, bool, bytes]]) -> None:
        for packet in packets:
            self.depacketizer.push(*packet)


def test_keyframe_and_height_of_real_packets() -> None:
    assert keyframe_detector("video/AV1") is av1_keyframe
    assert height_reader("video/AV1") is av1_height
    for mtu in (1200, 300):
        stream = rtp_stream(mtu)
        keys = [n for n, (_, _, _, p) in enumerate(stream) if av1_keyframe(p)]
        starts = [0] + [n + 1 for n, (_, _, m, _) in enumerate(stream[:-1]) if m]
        assert len(starts) == 24 and keys == [starts[0], starts[12]], (mtu, keys)
        assert [av1_height(p) for _, _, _, p in stream if av1_height(p)] == [SIZE[1]] * 2
        # the keyframes' first packets: W = 2 at 1200 bytes (sequence header + frame), W = 0 or
        # 1 when the header fills a 300-byte packet; either way the height is read
        assert {(stream[k][3][0] >> 4) & 3 for k in keys} <= {0, 1, 2}
    # a sequence header with its obu_size, and one W = 0 element with a length
    header = rtp_obus(temporal_units()[0][0])[0]
    assert sequence_header_height(header) == SIZE[1]
    sized = bytes([header[0] | 0x02]) + leb128(len(header) - 1) + header[1:]
    assert sequence_header_height(sized) == SIZE[1]
    assert av1_height(bytes([0x08]) + leb128(len(header)) + header) == SIZE[1]


def test_depacketized_units_decode_as_the_clip() -> None:
    """Every temporal unit rebuilt from RTP decodes to the same pictures as the clip itself."""
    clip = decode([u for u, _ in temporal_units()])
    for mtu in (1200, 300, 60):
        got = Collect()
        got.push(rtp_stream(mtu))
        assert [f.keyframe for f in got.frames] == [n % 12 == 0 for n in range(24)], mtu
        assert got.asked == 0 and got.depacketizer.dropped == 0
        assert [f.rtp_ts - got.frames[0].rtp_ts for f in got.frames] == \
            [n * 6000 for n in range(24)]  # unwrapped across the 32-bit wrap
        assert decode([f.data for f in got.frames]) == clip, mtu


def test_a_lost_packet_drops_its_unit_until_the_next_keyframe() -> None:
    stream = rtp_stream(300)
    markers = [n for n, (_, _, m, _) in enumerate(stream) if m]
    lost = markers[4] + 1  # the first packet of unit 5: the unit must not start mid-way
    got = Collect()
    got.push(stream[:lost] + stream[lost + 1:])
    assert got.asked == 1
    assert [f.rtp_ts - got.frames[0].rtp_ts for f in got.frames] == \
        [n * 6000 for n in [*range(5), *range(12, 24)]]
    # a late duplicate of an earlier packet is ignored, and a unit without its marker packet
    # is dropped when the next one starts
    got = Collect()
    got.push(stream[:markers[2]] + stream[markers[2] + 1:] + [stream[3]])
    assert got.asked == 1 and len(got.frames) == 2 + 12


def test_malformed_payloads_are_read_safely() -> None:
    """Client bytes: nothing raises, a keyframe is never read from garbage, a unit with a bad
    packet is dropped (and a keyframe asked for), and decoding resumes on the next keyframe."""
    bad = [b"", b"\x08", b"\x18", b"\x28\x05\x0a", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\x01",
           b"\x08\x7f\x0a", b"\x30\x01\x0a", b"\x10\x80", b"\x90\x0a\x00", b"\x18\x0a",
           b"\x08\x02\x0a"]
    for payload in bad:
        assert av1_height(payload) == 0, payload
        obu_elements(payload)
    assert obu_elements(b"\x28\x05\x0a") is None  # W=2: a length past the end
    assert obu_elements(b"\x30\x01\x0a") is None  # W=3: two elements, not three
    key = rtp_stream(1200)[0][3]
    assert all(av1_height(key[:n]) in (0, SIZE[1]) for n in range(len(key) + 1))
    assert (key[0] >> 4) & 3 == 2 and av1_height(key[:1 + 1 + key[1] - 1]) == 0  # header cut
    stream = rtp_stream(300)
    markers = [n for n, (_, _, m, _) in enumerate(stream) if m]
    broken = {5: bad[5], markers[13] + 2: bad[8]}  # in unit 0 (the keyframe) and unit 14
    got = Collect()
    for n, (seq, ts, marker, payload) in enumerate(stream):
        got.depacketizer.push(seq, ts, marker, broken.get(n, payload))
    # unit 0 dropped while it waited for its first keyframe anyway (nothing asked), unit 14
    # after decoding began: a keyframe asked for, nothing decoded until one comes
    assert got.asked == 1
    assert [f.rtp_ts - stream[0][1] for f in got.frames] == [12 * 6000, 13 * 6000]
    assert decode([f.data for f in got.frames])[0] == decode([u for u, _ in
                                                              temporal_units()[12:13]])[0]
    # random bytes in valid RTP numbering: never an exception
    rng = random.Random(12)
    got = Collect()
    for n in range(3000):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        got.depacketizer.push(n & 0xFFFF, (n // 4) * 6000, n % 4 == 3, payload)
        av1_height(payload)
        av1_keyframe(payload)
    for frame in got.frames:  # whatever came through is a unit in the low-overhead format
        assert frame.data[:2] == b"\x12\x00"


def test_an_answer_keeps_chromiums_av1_payload_type() -> None:
    """Chromium numbers AV1 45 (RTX 46): the call server's answer keeps both, or the browser
    switches to 45 at the next offer under the publisher's feet and its RTX is refused."""
    offer = [RTCRtpCodecParameters(mimeType="video/AV1", clockRate=90000, payloadType=45,
                                   parameters={"level-idx": 5, "profile": 0, "tier": 0}),
             RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=46,
                                   parameters={"apt": 45})]
    common = find_common_codecs(CODECS["video"], offer)
    assert [(c.mimeType, c.payloadType, c.parameters.get("apt")) for c in common] == [
        ("video/AV1", 45, None), ("video/rtx", 46, 45)]


MALFORMED = b"\x28\x05\x0a"  # W=2, a first element longer than the packet


@pytest.mark.redis
async def test_av1_camera_forwarded_to_av1_viewers_and_transcoded_for_h264(
        call_server: tuple[CallServer, str], transcoder: Transcoder) -> None:  # noqa: F811
    """An aiortc publisher that negotiated AV1 alone sends the clip (looped, 15 frames/s, a
    malformed packet before each keyframe); an AV1 viewer gets every payload as sent from a
    keyframe (N) on, and one joining mid-GOP starts on the next keyframe, both decodable with
    libdav1d; an H.264-only viewer decodes the camera as H.264 made by the transcoder from
    libdav1d's pictures (the malformed packet costs it the unit before a keyframe, never a
    decoder error)."""
    server, url = call_server
    meeting = f"av1-{secrets.token_hex(4)}"
    pub = Client("a", meeting, video=False, audio=False)
    pub.extra = [SilentVideo("a-camera")]
    pub.send_codecs = ["video/av1"]
    first, h264 = Vp9Viewer("first", meeting, "video/av1"), Viewer("h264", meeting)
    h264.video_codecs = ["video/h264"]
    clients: list[Client] = [pub, first, h264]
    units = temporal_units()
    stop = asyncio.Event()
    sent: list[bytes] = []
    writer: asyncio.Task[None] | None = None

    def payloads(n: int) -> list[bytes]:
        unit, key = units[n % len(units)]
        return packetize(unit, key, 300) + ([MALFORMED] if n % 12 == 11 else [])

    try:
        for c in clients:
            await c.join(url)
        writer = asyncio.ensure_future(send_camera(pub, stop, sent, "video/av1", payloads))
        await wait_for(lambda: len(h264.seen["a-camera"]) >= 30 and len(first.payloads) >= 100
                       and MALFORMED in first.payloads, 40,
                       "H.264 frames of the AV1 camera and AV1 packets forwarded")
        # a second AV1 viewer joins mid-GOP: its leg waits for the next keyframe (N)
        await wait_for(lambda: len(sent) > 0 and not av1_keyframe(sent[-1]), 5, "mid-GOP")
        late = Vp9Viewer("late", meeting, "video/av1")
        clients.append(late)
        await late.join(url)
        await wait_for(lambda: len(late.payloads) >= 60 and MALFORMED in late.payloads, 30,
                       "the late AV1 viewer, past a malformed packet")
        assert not writer.done(), writer
        up = next(u for p in server.participants.values() for u in p.uptracks)
        assert up.codec.mimeType.lower() == "video/av1" and up.layers[0].height == SIZE[1]
        for viewer in (first, late):
            assert av1_keyframe(viewer.payloads[0]), viewer.payloads[0][:4]
            assert set(viewer.payloads) <= set(sent) and MALFORMED in viewer.payloads
            leg = server.participants[viewer.pid].downtracks[id(up)]
            assert leg.layer is up.layers[0]
            got = Collect()  # what the viewer got, rebuilt and decoded as a browser would
            got.push(viewer.rtp)
            assert got.frames[0].keyframe and len(got.frames) >= 4
            assert len(decode([f.data for f in got.frames])) == len(got.frames)
        # the H.264 subscriber: decoded once by the transcoder, encoded at the source height
        dt = server.participants[h264.pid].downtracks[id(up)]
        assert isinstance(dt.layer, RungLayer) and dt.layer.codec == "video/h264"
        assert h264.height("a-camera") == SIZE[1]
        remote = (await transcoder.status())["sources"]
        assert [(s["codec"], s["height"], [o["codec"] for o in s["outputs"]])
                for s in remote] == [("video/av1", SIZE[1], ["video/h264"])], remote
        assert remote[0]["decoded"] >= 30 and remote[0]["errors"] == 0, remote
        assert (await transcoder.status())["badDatagrams"] == 0
        print(f"\nAV1 camera: {len(first.payloads)} + {len(late.payloads)} packets forwarded "
              f"as sent, {len(h264.seen['a-camera'])} H.264 frames via the transcoder "
              f"({remote[0]['decoded']} decoded with libdav1d, {remote[0]['cpuPercent']} % of "
              "a core)")
    finally:
        await stop_camera(stop, writer, clients)

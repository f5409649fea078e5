"""Frame assembly from RTP (RFC 7741 / 7587) and the chunk format, on hand-built packets."""

from __future__ import annotations

import struct

from parley.recorder.chunks import ChunkWriter, Record, decode, encode
from parley.recorder.depacketize import Depacketizer, Frame, vp8_descriptor_size, vp8_size

KEY = b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", 640, 360) + b"K" * 20  # P=0: keyframe
DELTA = b"\x11" + b"D" * 30  # P=1: interframe


def vp8(frame: bytes, parts: int = 2) -> list[bytes]:
    """Split a frame into packets; the first has S=1, PID=0 and an extended picture id."""
    n = -(-len(frame) // parts)
    out = []
    for i in range(parts):
        desc = bytes([0x90 if i == 0 else 0x80, 0x80, 0x80 | 0x12, 0x34])  # X, I, M: 15-bit
        out.append(desc + frame[i * n:(i + 1) * n])
    return out


def test_vp8_frames_are_reassembled_and_a_gap_waits_for_a_keyframe() -> None:
    frames: list[Frame] = []
    asked: list[int] = []
    d = Depacketizer("video/VP8", frames.append, lambda: asked.append(1))
    assert vp8_descriptor_size(vp8(KEY)[0]) == 4
    seq = 100
    d.push(seq, 1000, False, vp8(DELTA)[0])  # before any keyframe: not recordable
    d.push(seq + 1, 1000, True, vp8(DELTA)[1])
    seq += 2
    for ts, frame in ((4000, KEY), (7000, DELTA)):
        p0, p1 = vp8(frame)
        d.push(seq, ts, False, p0)
        d.push(seq + 1, ts, True, p1)
        seq += 2
    assert [(f.rtp_ts, f.keyframe, f.data) for f in frames] == [(4000, True, KEY),
                                                              (7000, False, DELTA)]
    assert vp8_size(frames[0].data) == (640, 360)
    p0, p1 = vp8(DELTA)
    d.push(seq, 10000, False, p0)
    d.push(seq + 2, 10000, True, p1)  # seq + 1 lost: the frame is broken
    d.push(seq + 3, 13000, False, vp8(DELTA)[0])
    d.push(seq + 4, 13000, True, vp8(DELTA)[1])  # whole, but references the broken one
    assert len(frames) == 2 and asked == [1] and d.need_keyframe
    d.push(seq + 5, 16000, False, vp8(KEY)[0])
    d.push(seq + 6, 16000, True, vp8(KEY)[1])
    assert frames[-1].keyframe and frames[-1].rtp_ts == 16000 and not d.need_keyframe


def test_opus_one_packet_is_one_frame_and_timestamps_unwrap() -> None:
    frames: list[Frame] = []
    d = Depacketizer("audio/opus", frames.append)
    d.push(65535, 0xFFFFFC40, False, b"\x01a")
    d.push(0, 0x00000000, False, b"\x01b")  # sequence and timestamp both wrap (RFC 3550 5.1)
    d.push(65535, 0xFFFFFC40, False, b"\x01a")  # a duplicate is ignored
    assert [(f.rtp_ts, f.data) for f in frames] == [(0xFFFFFC40, b"\x01a"), (1 << 32, b"\x01b")]


def test_chunks_seal_on_time_and_survive_a_truncated_tail() -> None:
    put: dict[str, bytes] = {}
    w = ChunkWriter({"recording": "r", "participant": "p 1", "track": "t/1", "node": "n"}, 2.0,
                    put.__setitem__)
    for i in range(50):  # 5 s of 10 fps
        w.add(i * 9000, bytes([i]) * 10, i % 10 == 0, now_us=1_000_000 + i * 100_000)
    w.seal()
    assert len(put) == 3 and all("/chunks/p_1~t_1/" in k for k in put)
    got = [r.data for k in sorted(put) for r in decode(put[k])[1]]
    assert got == [bytes([i]) * 10 for i in range(50)]
    blob = encode({"x": 1}, [Record(1, 2, True, b"abc"), Record(2, 3, False, b"defg")])
    header, records = decode(blob[:-2])
    assert header == {"x": 1} and [r.data for r in records] == [b"abc"]

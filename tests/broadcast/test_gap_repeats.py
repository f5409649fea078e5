"""The transcoder across a programme gap, alone (no services): the last picture is repeated every
frame interval on the programme's timeline, the same whether the repeats were made live (as the
gap went on) or when the next frame came, so every rung and every transcoder process has the same
frame timeline and the same GOP boundaries; the AAC is padded with silence the same way."""

from __future__ import annotations

import fractions
import itertools

import av
import numpy as np

from parley.media.broadcast.aac import AacEncoder
from parley.media.broadcast.feed import Feed
from parley.media.broadcast.frames import Frame, h264_is_keyframe
from parley.media.broadcast.ladder import parse_ladder
from parley.media.broadcast.transcoder import BRIDGE_S, FRAME_TICKS, HOLD_S, Transcoder

GAP_AT, GAP_TICKS = 50, 2 * 90000  # the camera stops 2 s after its 50th frame


def _source(n: int) -> list[bytes]:
    """``n`` H.264 access units of a 64x48 picture (an IDR first, then P frames)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 48, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 90000)
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency",
                   "x264-params": "keyint=100000:scenecut=0"}
    ctx.open()
    out = []
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.full((72, 64), i % 200, np.uint8), format="yuv420p")
        frame.pts, frame.time_base = i * 3000, ctx.time_base
        out += [bytes(p) for p in ctx.encode(frame)]
    return out


def _times(tx: Transcoder, frames: list[tuple[bytes, int, float]],
           live: list[float]) -> list[tuple[int, bool]]:
    """Feed ``frames`` (access unit, ts, arrival) to ``tx``'s decoder, asking for the live repeats
    at each moment of ``live`` that falls before the next frame; (pts, key) of every picture."""
    out = []
    checks = iter(sorted(live))
    check = next(checks, None)
    for data, ts, arrived in frames:
        while check is not None and check < arrived:
            out += tx.repeat_until(check)
            check = next(checks, None)
        out += tx.decode(Frame("video", data, ts, h264_is_keyframe(data)), arrived)
    return [(pts, key) for p in out for pts, key, _ in p.times()]


def _transcoder() -> Transcoder:
    return Transcoder("t", Feed("t", lambda: None), parse_ladder("120p:100"), 2.0)


def test_repeats_fill_a_gap_on_the_programme_timeline_live_or_not() -> None:
    data = _source(150)
    frames = [(d, i * 3000 + (GAP_TICKS if i > GAP_AT else 0),
               i / 30 + (GAP_TICKS / 90000 if i > GAP_AT else 0)) for i, d in enumerate(data)]
    stopped = frames[GAP_AT][2]  # arrival of the last frame before the gap
    live = [stopped + 0.01 * n for n in range(1, 200)]  # a timer checking every 10 ms
    made_live, after = _transcoder(), _transcoder()
    a = _times(made_live, frames, live)
    b = _times(after, frames, [])  # the next frame came before any timer: repeats made then
    assert a == b, "live repeats and repeats made on the next frame differ"
    assert made_live.repeated == after.repeated > 0
    pts = [t for t, _ in a]
    steps = {y - x for x, y in itertools.pairwise(pts)}
    assert steps == {FRAME_TICKS}, steps  # no frame holds the gap: the ladder's 30 fps on
    keys = [t for t, k in a if k]
    assert keys == [0, 180000, 360000, 540000], keys  # the 2 s grid, through the gap too


def test_live_repeats_trail_the_clock_stop_after_the_bridge_and_a_late_frame_is_left_out() -> None:
    data = _source(80)
    tx = _transcoder()
    for i in range(31):
        tx.decode(Frame("video", data[i], i * 3000, h264_is_keyframe(data[i])), i / 30)
    last = 30 / 30
    assert tx.repeat_until(last + 0.2) == []  # within the hold: maybe a late frame, not a gap
    one_s = tx.repeat_until(last + 1.0 + HOLD_S)
    assert [t for p in one_s for t, _, _ in p.times()][-1] == 30 * 3000 + 90000
    tx.repeat_until(last + 60)
    assert tx.repeated == int(BRIDGE_S * 30)  # then the source is gone: the stream stalls
    # a frame that comes later than the repeats made in its place is left out, the next is not
    late = tx.decode(Frame("video", data[31], 31 * 3000, False), last + 61)
    assert late == []
    on = tx.decode(Frame("video", data[32], 30 * 3000 + int(BRIDGE_S * 90000) + 3000, False),
                   last + 61)
    assert [p.pts for p in on] == [30 * 3000 + int(BRIDGE_S * 90000) + 3000]


def test_aac_pads_a_quiet_source_and_leaves_out_what_comes_after_its_silence() -> None:
    enc = AacEncoder(fill_s=30)
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate, opus.layout, opus.format = 48000, "stereo", "s16"
    opus.time_base = fractions.Fraction(1, 48000)
    opus.open()
    packets = []
    for i in range(100):
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16",
                                       layout="stereo")
        f.sample_rate, f.pts = 48000, i * 960
        packets += [bytes(p) for p in opus.encode(f)]
    pts = [p for i in range(50) for p, _ in enc.encode(packets[i], i * 960)]
    pts += [p for p, _ in enc.pad(1.0)]  # quiet for 1 s after packet 49
    assert enc.pad(0.5) == []  # already padded that far
    late = [p for i in range(50, 60) for p, _ in enc.encode(packets[i], i * 960)]
    assert late == []  # their time is silence already
    pts += [p for i in range(60, 100) for p, _ in enc.encode(packets[i], 50 * 960 + 48000
                                                              + (i - 60) * 960)]
    assert {b - a for a, b in itertools.pairwise(pts)} == {1024}  # no hole, no overlap

"""Opus -> AAC across lost packets: the AAC timeline has no hole (a hole in the audio stalls the
video of an LL-HLS player in MSE); a long pause still re-anchors on the input's clock."""

from __future__ import annotations

import fractions
import itertools

import av
import numpy as np

from parley.media.broadcast.aac import AacEncoder
from parley.media.broadcast.cmaf import AAC_SAMPLES


def _opus_packets(count: int) -> list[bytes]:
    """``count`` 20 ms Opus packets of a 440 Hz stereo tone (libopus through PyAV)."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    enc.time_base = fractions.Fraction(1, 48000)
    enc.open()
    out: list[bytes] = []
    for i in range(count + 5):
        t = np.arange(960 * i, 960 * (i + 1))
        tone = (np.sin(t * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone[None, :], 2, 0).reshape(1, -1),
                                           format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 960 * i
        out.extend(bytes(p) for p in enc.encode(frame))
    return out[:count]


def _pts(enc: AacEncoder, packets: list[tuple[int, bytes]]) -> list[int]:
    return [pts for ts, data in packets for pts, _ in enc.encode(data, ts)]


def test_lost_opus_packets_leave_no_hole_and_a_pause_re_anchors() -> None:
    opus = _opus_packets(100)
    base = 3_000_000
    lost = set(range(40, 43)) | {70}  # three in a row (60 ms), then one
    pts = _pts(AacEncoder(), [(base + 960 * i, p) for i, p in enumerate(opus) if i not in lost])
    assert base - AAC_SAMPLES <= pts[0] <= base  # the encoder's priming frame comes first
    assert all(b - a == AAC_SAMPLES for a, b in itertools.pairwise(pts)), pts
    assert len(pts) >= (100 * 960 - 2 * AAC_SAMPLES) // AAC_SAMPLES  # the lost time is there

    # a 2 s pause (longer than what is filled) starts again on the input's clock
    enc = AacEncoder()
    first = _pts(enc, [(base + 960 * i, p) for i, p in enumerate(opus[:50])])
    later = base + 960 * 50 + 96000
    second = _pts(enc, [(later + 960 * i, p) for i, p in enumerate(opus[50:])])
    both = first + second
    jump = max(range(1, len(both)), key=lambda i: both[i] - both[i - 1])
    assert both[jump] - both[jump - 1] > 96000, both  # not filled: re-anchored
    assert later - AAC_SAMPLES <= both[jump] <= later, (both[jump], later)

"""Opus -> AAC for LL-HLS: the programme's audio decoded once and encoded once per transcoder
(every rung carries the same audio), because Opus in fMP4 does not play everywhere.

Opus packets (48 kHz RTP clock) are decoded, resampled to 48 kHz stereo planar float (what
FFmpeg's ``aac`` encoder takes) and re-blocked into 1024-sample AAC frames. Output timestamps
follow the input's RTP clock: a gap of lost packets (Opus is not retransmitted), or a source
that went quiet, is filled with silence, so the AAC timeline has no hole (in MSE a hole in the
audio stalls the video too: hls.js waited up to 4 s before seeking over one under load). While a
gap goes on the transcoder pads it live (``pad``), as it repeats the picture; an Opus packet that
comes later than the silence made in its place is left out. A gap longer than ``fill_s`` (an
ingest restarted) or a step back re-anchors the timeline instead of compressing it, so audio
stays in step with video.
"""

from __future__ import annotations

import fractions

import av

from .cmaf import AAC_SAMPLES, AUDIO_TIMESCALE

_WRAP = 1 << 32
_GAP = 3 * 960  # a step back of more than two Opus frames: re-anchor
_FRAME = 960  # one 20 ms Opus frame: a gap of at least this much is a lost packet


class AacEncoder:
    """Feed Opus packets with their 48 kHz timestamps, get AAC packets (pts, raw frame)."""

    def __init__(self, bitrate: int = 96000, fill_s: float = 1.0) -> None:
        self.bitrate = bitrate
        self.fill = int(fill_s * AUDIO_TIMESCALE)
        self._decoder = av.CodecContext.create("opus", "r")
        self._decoder.sample_rate = AUDIO_TIMESCALE
        self._decoder.layout = "stereo"
        self._resampler = av.AudioResampler(format="fltp", layout="stereo",
                                            rate=AUDIO_TIMESCALE)
        self._encoder = self._open()
        self.config = bytes(self._encoder.extradata or b"")  # AudioSpecificConfig for the init
        self._fifo = av.AudioFifo()
        self._next_in: int | None = None  # expected timestamp of the next Opus packet
        self._next_out = 0  # pts of the next 1024-sample frame given to the encoder
        self._heard: int | None = None  # where the last Opus packet's sound ended
        self._epoch = 0
        self._last: int | None = None

    def _open(self) -> av.CodecContext:
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate = AUDIO_TIMESCALE
        ctx.layout = "stereo"
        ctx.format = "fltp"
        ctx.bit_rate = self.bitrate
        ctx.time_base = fractions.Fraction(1, AUDIO_TIMESCALE)
        ctx.open()
        return ctx

    def _unwrap(self, ts: int) -> int:
        if self._last is not None and ts < self._last and self._last - ts > _WRAP // 2:
            self._epoch += _WRAP
        self._last = ts
        return ts + self._epoch

    def encode(self, opus: bytes, ts: int) -> list[tuple[int, bytes]]:
        """One Opus packet in; the AAC frames (pts in 1/48000 s, bytes) that became ready."""
        ts = self._unwrap(ts)
        gap = None if self._next_in is None else ts - self._next_in
        padded = self._heard is not None and self._next_in is not None and (
            self._next_in > self._heard)
        if gap is not None and padded and -self.fill <= gap < 0:
            return []  # its time was padded with silence already (a gap going on)
        if gap is None or gap < -_GAP or gap > self.fill:
            self._fifo = av.AudioFifo()  # start (again) on this packet's clock
            self._next_out = ts
        elif gap >= _FRAME:
            self._fifo.write(_silence(gap))
        packet = av.Packet(opus)
        samples = 0
        for frame in self._decoder.decode(packet):
            for chunk in self._resampler.resample(frame):
                chunk.pts = None
                samples += chunk.samples
                self._fifo.write(chunk)
        self._next_in = self._heard = ts + (samples or 960)
        return self._drain()

    def pad(self, seconds: float) -> list[tuple[int, bytes]]:
        """The source has been quiet ``seconds`` past where its last packet's sound ended:
        silence up to there, and the AAC frames that became ready."""
        if self._heard is None or self._next_in is None:
            return []
        more = self._heard + int(seconds * AUDIO_TIMESCALE) - self._next_in
        if more < AAC_SAMPLES:
            return []
        self._fifo.write(_silence(more))
        self._next_in += more
        return self._drain()

    def _drain(self) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        while self._fifo.samples >= AAC_SAMPLES:
            block = self._fifo.read(AAC_SAMPLES)
            block.pts, self._next_out = self._next_out, self._next_out + AAC_SAMPLES
            block.time_base = fractions.Fraction(1, AUDIO_TIMESCALE)
            out.extend((int(p.pts), bytes(p)) for p in self._encoder.encode(block)
                       if p.pts is not None)
        return out


def _silence(samples: int) -> av.AudioFrame:
    """``samples`` of stereo planar float silence at 48 kHz (what the resampler gives)."""
    frame = av.AudioFrame(format="fltp", layout="stereo", samples=samples)
    frame.sample_rate = AUDIO_TIMESCALE
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    return frame

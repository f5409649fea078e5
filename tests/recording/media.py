"""Test media: aiortc participants that publish a moving pattern and a real tone, and probes of
the files a recording produced."""

from __future__ import annotations

import fractions
import math
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import AudioStreamTrack

from tests.media.client import Client


class SineAudio(AudioStreamTrack):
    """A 440 Hz tone (aiortc's own audio track is silence, which would hide a broken mix)."""

    def __init__(self, track_id: str, hz: float = 440.0) -> None:
        super().__init__()
        self._id = track_id
        self.hz = hz
        self.n = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()  # paces in real time, 20 ms of 8 kHz mono
        rate, samples = frame.sample_rate, frame.samples
        t = (np.arange(samples) + self.n) / rate
        self.n += samples
        pcm = (np.sin(2 * math.pi * self.hz * t) * 8000).astype(np.int16)
        out = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts = rate, frame.pts
        out.time_base = fractions.Fraction(1, rate)
        return out


TONES = {"a": 440.0, "b": 660.0}  # different per participant: equal tones could cancel out


class ToneClient(Client):
    """tests/media's participant with a real tone as its microphone; a fresh tone track per
    (re)join, because closing a peer connection ends its tracks."""

    async def join(self, url: str) -> None:
        self.extra = [SineAudio(f"{self.name}-mic", TONES.get(self.name, 550.0))]
        await super().join(url)


def participant(name: str, meeting: str) -> Client:
    return ToneClient(name, meeting, audio=False)


def tone_levels(path: Path, freqs: list[float]) -> list[float]:
    """Share of the audio's energy within 10 Hz of each frequency (the mix holds both tones)."""
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].rate
        x = np.concatenate([f.to_ndarray().astype(np.float64).reshape(
            len(f.layout.channels), -1).mean(axis=0) for f in c.decode(audio=0)])
    power = np.abs(np.fft.rfft(x)) ** 2
    hz = np.fft.rfftfreq(len(x), 1 / rate)
    return [float(power[np.abs(hz - f) < 10].sum() / power.sum()) for f in freqs]


def probe(path: Path) -> dict[str, Any]:
    """Streams, duration, luma variance of sampled video frames and audio RMS."""
    with av.open(str(path)) as c:
        info: dict[str, Any] = {
            "streams": sorted(s.type for s in c.streams),
            "duration": c.duration / 1e6 if c.duration else 0.0,
            "codecs": {s.type: s.codec_context.name for s in c.streams},
        }
    variances, tiles = [], []
    with av.open(str(path)) as c:
        if c.streams.video:
            # from frame 20 (1.3 s at the composite's 15 fps), then every 2 s: a tile shows its
            # participant from that track's first keyframe, asked for when the recording starts;
            # under CI load one came later than frame 5 (0.33 s) and that sample's tile was blank
            for i, frame in enumerate(c.decode(video=0)):
                if i % 30 == 20:
                    y = frame.to_ndarray(format="gray").astype(np.float32)
                    variances.append(float(y.var()))
                    tiles.append([float(y[:, : y.shape[1] // 2].var()),
                                  float(y[:, y.shape[1] // 2:].var())])
    info["variances"], info["tile_variances"] = variances, tiles
    with av.open(str(path)) as c:
        if c.streams.audio:
            pcm = [f.to_ndarray().astype(np.float32).ravel() for f in c.decode(audio=0)]
            info["audio_rms"] = float(np.sqrt(np.mean(np.concatenate(pcm) ** 2))) if pcm else 0
    return info


def packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams[0]) if p.size]

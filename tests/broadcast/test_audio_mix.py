"""Programme audio mixing through a real `parley up`: two aiortc cameras send tones of different
pitch; a WHEP viewer decodes the programme audio and finds both tones (FFT) while program.audio
names both, only one after the programme names one (a pass-through), both again, and the one
still sending when the other goes silent without leaving (the mix does not stall)."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import Callable

import av
import httpx
import numpy as np
from aiortc import AudioStreamTrack, MediaStreamTrack

from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually

RATE = 48000
LOW, HIGH = 500.0, 1300.0  # cam1's and cam2's tones (no harmonic of one near the other)
WINDOW = RATE // 2  # the viewer's last 0.5 s is analysed


class Tone(AudioStreamTrack):
    """A sine at ``freq`` and ``amplitude`` (20 ms frames, paced like aiortc's own tracks);
    ``silent.set()`` stops sending (the connection stays up)."""

    def __init__(self, freq: float, amplitude: float = 0.5) -> None:
        super().__init__()
        self.freq = freq
        self.amplitude = amplitude
        self.n = 0
        self.silent = asyncio.Event()
        self._start = 0.0

    async def recv(self) -> av.AudioFrame:
        if self.silent.is_set():
            await asyncio.Event().wait()  # never: no more packets from this source
        samples = 960
        if self.n == 0:
            self._start = time.time()
        else:
            await asyncio.sleep(max(0.0, self._start + self.n * samples / RATE - time.time()))
        t = (np.arange(samples) + self.n * samples) / RATE
        pcm = (self.amplitude * 32767 * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, self.n * samples
        frame.time_base = fractions.Fraction(1, RATE)
        self.n += 1
        return frame


class Listener(Viewer):
    """A WHEP viewer that keeps the decoded programme audio (mono, 48 kHz)."""

    def __init__(self, url: str) -> None:
        self.pcm: list[np.ndarray] = []
        super().__init__(url)

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind == "audio":
                    data = frame.to_ndarray().astype(np.float32).reshape(-1, len(
                        frame.layout.channels)).mean(axis=1)
                    self.pcm.append(data)
                    del self.pcm[:-100]

    def bands(self) -> dict[float, float]:
        """Share of the last 0.5 s's energy within 30 Hz of each tone (0 before 0.5 s came)."""
        pcm = np.concatenate(self.pcm)[-WINDOW:] if self.pcm else np.zeros(0)
        if len(pcm) < WINDOW:
            return {LOW: 0.0, HIGH: 0.0}
        power = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm)))) ** 2
        freqs = np.fft.rfftfreq(len(pcm), 1 / RATE)
        total = float(power.sum()) or 1.0
        return {f: float(power[np.abs(freqs - f) < 30].sum()) / total for f in (LOW, HIGH)}


async def test_program_audio_mixes_named_sources_and_passes_one_through(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    http = httpx.AsyncClient(base_url=base, timeout=10)
    director = {"Authorization": f"Bearer {key('mix', 'director', 'admin')}"}
    low, high = Tone(LOW), Tone(HIGH)
    cam1 = Publisher(base, "mix", key("mix", "cam1"), (192, 144), audio=low)
    cam2 = Publisher(base, "mix", key("mix", "cam2"), (160, 120), audio=high)
    viewer = Listener(f"{base}/live/mix/whep")

    async def hears(want: set[float]) -> dict[float, float]:
        bands = viewer.bands()  # a tone heard: > 20% of the energy; not heard: < 1%
        ok = all((bands[f] > 0.2) == (f in want) and (f in want or bands[f] < 0.01)
                 for f in bands)
        return bands if ok else {}

    async def program(audio: list[str]) -> dict:
        r = await http.put("/live/mix/program", json={"video": "cam1", "audio": audio},
                           headers=director)
        assert r.status_code == 200, r.text
        return r.json()

    try:
        for cam in (cam1, cam2):
            assert (await cam.publish()).status_code == 201
        status = await program(["cam1", "cam2"])
        assert status["onAir"]["audio"] == "cam1+cam2" and status["mix"]["sources"] == [
            "cam1", "cam2"], status
        assert (await viewer.play()).status_code == 201
        print("mixed:", await eventually(lambda: hears({LOW, HIGH}), 20, "both tones mixed"))

        status = await program(["cam2"])  # one source: passed through, the mixer gone
        assert status["onAir"]["audio"] == "cam2" and status["mix"] is None, status
        print("cam2 alone:", await eventually(lambda: hears({HIGH}), 10, "cam2's tone only"))

        await program(["cam1", "cam2"])
        await eventually(lambda: hears({LOW, HIGH}), 10, "both tones mixed again")
        low.silent.set()  # cam1 stays connected but sends nothing: the mix goes on without it
        print("cam1 silent:", await eventually(lambda: hears({HIGH}), 10,
                                                "cam2's tone only, from the mix"))
        status = (await http.get("/live/mix")).json()
        mix = status["mix"]
        assert mix is not None and mix["sources"] == ["cam1", "cam2"], status
        assert mix["inputs"]["cam1"]["underruns"] >= 1, mix
        print("mix status:", mix)
    finally:
        for c in (cam1, cam2):
            await c.stop(delete=False)
        await viewer.close()
        await http.aclose()

"""Programme audio mixing: several sources' Opus decoded, summed, encoded as one Opus stream.

Only when ``program.audio`` names two or more connected sources; one source stays a pass-through
(programme.py, no decode). The RTP side only appends each packet's bytes to its source's bounded
inbox (a deque append, no lock); everything else runs in the mixer's own thread on a 20 ms clock:

- **Alignment on arrival**: each source's decoded PCM goes to its own small jitter buffer; a
  source joins the mix once it holds ``JITTER_S`` (40 ms) and is mixed from then on at the
  clock's pace. Sources are aligned by when their audio arrives, not by their RTP clocks (which
  are unrelated: independent publishers).
- **A source that stops does not stall the mix**: the clock never waits for input; a source
  whose buffer runs dry contributes silence (padding what it had) and buffers again.
- **Real time**: a buffer that grows past ``MAX_BUFFER_S`` (a source whose clock runs fast, a
  burst after a stall) is cut back to the jitter target, oldest samples first; a tick that comes
  over 60 ms late skips the missed frames (the output timeline moves on, a gap the players and
  the AAC encoder fill) instead of producing a burst.
- **Clipping protection**: the sum is scaled by a limiter gain (instant attack to keep the
  frame's peak under full scale, release over about half a second), then clipped.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import av
import numpy as np

from .frames import AUDIO_CLOCK, Frame

FRAME = 960  # samples per 20 ms Opus frame at 48 kHz
TICK_S = FRAME / AUDIO_CLOCK
JITTER_S = 0.04
MAX_BUFFER_S = 0.2
LATE_S = 0.06  # a tick this late skips the frames it missed
INBOX = 50  # packets (1 s) a source may have waiting for the mix thread
CEILING = 0.98  # the limiter keeps a frame's peak under this
RELEASE = 0.05  # gain recovered per frame (1.0 in 20 frames = 0.4 s)
BITRATE = 96000

log = logging.getLogger("parley.broadcast.mixer")


class _Input:
    """One source's side of the mix: its inbox, decoder and jitter buffer."""

    def __init__(self) -> None:
        self.inbox: collections.deque[bytes] = collections.deque(maxlen=INBOX)
        self.decoder: Any = None
        self.resampler: Any = None
        self.pcm = np.zeros((0, 2), dtype=np.float32)
        self.playing = False
        self.packets = 0
        self.underruns = 0
        self.trimmed = 0  # samples cut to keep real time
        self.errors = 0

    def take_in(self) -> None:
        """Decode what arrived (in the mix thread)."""
        if self.decoder is None:
            self.decoder = av.CodecContext.create("opus", "r")
            self.decoder.sample_rate = AUDIO_CLOCK
            self.decoder.layout = "stereo"
            self.resampler = av.AudioResampler(format="flt", layout="stereo", rate=AUDIO_CLOCK)
        chunks = [self.pcm]
        while self.inbox:
            data = self.inbox.popleft()
            self.packets += 1
            try:
                for frame in self.decoder.decode(av.Packet(data)):
                    for out in self.resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1, 2))
            except av.error.FFmpegError:  # a corrupt packet: skip it, keep the source
                self.errors += 1
        if len(chunks) > 1:
            self.pcm = np.concatenate(chunks)
        if len(self.pcm) > MAX_BUFFER_S * AUDIO_CLOCK:
            keep = int(JITTER_S * AUDIO_CLOCK)
            self.trimmed += len(self.pcm) - keep
            self.pcm = self.pcm[-keep:]

    def take_out(self) -> np.ndarray | None:
        """This source's next 20 ms for the mix, or None while it buffers."""
        if not self.playing:
            if len(self.pcm) < JITTER_S * AUDIO_CLOCK:
                return None
            self.playing = True
        out = self.pcm[:FRAME]
        self.pcm = self.pcm[FRAME:]
        if len(out) < FRAME:  # ran dry: pad, then buffer again
            self.underruns += 1
            self.playing = False
            out = np.concatenate([out, np.zeros((FRAME - len(out), 2), dtype=np.float32)])
        return out


class AudioMixer:
    """Mixes the named sources' Opus into one Opus stream handed to ``emit`` on the loop."""

    def __init__(self, name: str, emit: Callable[[Frame], None]) -> None:
        self.name = name
        self.emit = emit
        self.inputs: dict[str, _Input] = {}
        self.names: frozenset[str] = frozenset()
        self.frames = 0
        self.skipped = 0  # 20 ms frames skipped because the mix thread was late
        self.limited = 0  # frames the limiter turned down
        self.gain = 1.0
        self._ts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- on the event loop ---------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=f"mix {self.name}", daemon=True)
        self._thread.start()

    def set_sources(self, names: Iterable[str]) -> None:
        wanted = frozenset(names)
        inputs = {n: self.inputs.get(n) or _Input() for n in wanted}
        self.inputs, self.names = inputs, wanted  # swapped whole: the thread reads a snapshot

    def put(self, source: str, data: bytes) -> None:
        """One Opus packet of ``source`` (the RTP side: an append, nothing else)."""
        i = self.inputs.get(source)
        if i is not None:
            i.inbox.append(data)

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        return {"sources": sorted(self.names), "frames": self.frames, "skipped": self.skipped,
                "limited": self.limited, "gain": round(self.gain, 3),
                "inputs": {n: {"packets": i.packets, "underruns": i.underruns,
                               "trimmedMs": i.trimmed * 1000 // AUDIO_CLOCK,
                               "bufferedMs": len(i.pcm) * 1000 // AUDIO_CLOCK,
                               "errors": i.errors}
                           for n, i in sorted(self.inputs.items())}}

    # -- in the mix thread -----------------------------------------------------------------------
    def _run(self) -> None:
        encoder = _encoder()
        deadline = time.monotonic() + TICK_S
        while not self._stop.is_set():
            delay = deadline - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
                continue
            late = -delay
            if late > LATE_S:  # the thread was starved: skip, do not catch up in a burst
                missed = int(late / TICK_S)
                self.skipped += missed
                self._ts += missed * FRAME
                deadline += missed * TICK_S
            deadline += TICK_S
            try:
                self._tick(encoder)
            except Exception:  # never let one bad frame end the programme's audio
                log.exception("mix %s: a frame failed", self.name)

    def _tick(self, encoder: Any) -> None:
        total = np.zeros((FRAME, 2), dtype=np.float32)
        for i in list(self.inputs.values()):
            i.take_in()
            part = i.take_out()
            if part is not None:
                total += part
        peak = float(np.max(np.abs(total))) if total.size else 0.0
        target = min(1.0, CEILING / peak) if peak > 0 else 1.0
        if target < self.gain:
            self.gain = target
            self.limited += 1
        else:
            self.gain = min(target, self.gain + RELEASE)
        if self.gain < 1.0:
            total *= self.gain
        np.clip(total, -1.0, 1.0, out=total)
        frame = av.AudioFrame.from_ndarray(total.reshape(1, -1), format="flt", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = self._ts
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        ts = self._ts
        self._ts += FRAME
        for packet in encoder.encode(frame):
            self.frames += 1
            out = Frame("audio", bytes(packet), ts & 0xFFFFFFFF, True)
            if self._loop is not None and not self._stop.is_set():
                self._loop.call_soon_threadsafe(self.emit, out)


def _encoder() -> Any:
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_CLOCK
    ctx.layout = "stereo"
    ctx.format = "flt"
    ctx.bit_rate = BITRATE
    ctx.time_base = fractions.Fraction(1, AUDIO_CLOCK)
    ctx.options = {"application": "audio", "frame_duration": "20"}
    ctx.open()
    return ctx

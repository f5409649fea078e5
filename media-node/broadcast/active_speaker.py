"""Who is talking in a meeting a broadcast takes as a source (meeting_source.py).

The call server forwards RTP without its header extensions (rtp.py), so the publishers' RFC 6464
audio levels do not reach the ingest; the ingest decodes each participant's Opus instead, in a
thread of its own (the RTP side only appends packets to a bounded deque), and measures the RMS
level every 100 ms. The talker is the loudest participant above ``SPEAKING`` (the web client's
threshold); a new talker takes over only when the current one has gone quiet or the new one is
clearly louder (1.5x), for ``HOLD_S`` in a row, so a cough does not cut the camera. When nobody
talks the last talker stays.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

import av
import numpy as np

SPEAKING = 0.02  # RMS of samples in -1..1
LOUDER = 1.5
HOLD_S = 0.3
PERIOD_S = 0.1
SMOOTH = 0.5  # weight of the newest period's level


class _Voice:
    def __init__(self) -> None:
        self.inbox: collections.deque[bytes] = collections.deque(maxlen=50)
        self.decoder: Any = None
        self.level = 0.0

    def measure(self) -> None:
        if self.decoder is None:
            self.decoder = av.CodecContext.create("opus", "r")
            self.decoder.sample_rate = 48000
            self.decoder.layout = "stereo"
        sums, count = 0.0, 0
        while self.inbox:
            try:
                for frame in self.decoder.decode(av.Packet(self.inbox.popleft())):
                    pcm = frame.to_ndarray().astype(np.float32)
                    if frame.format.name.startswith("s16"):
                        pcm /= 32768.0
                    sums += float(np.square(pcm).sum())
                    count += pcm.size
            except av.error.FFmpegError:
                continue
        rms = (sums / count) ** 0.5 if count else 0.0
        self.level = SMOOTH * rms + (1 - SMOOTH) * self.level


class ActiveSpeaker:
    """Feeds ``on_change(participant)`` on the event loop when the talker changes."""

    def __init__(self, name: str, on_change: Callable[[str], None]) -> None:
        self.name = name
        self.on_change = on_change
        self.voices: dict[str, _Voice] = {}
        self.current: str | None = None
        self._candidate: str | None = None
        self._held = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, name=f"speaker {self.name}", daemon=True).start()

    def put(self, who: str, data: bytes) -> None:
        """One Opus packet of ``who`` (the RTP side: an append)."""
        voice = self.voices.get(who)
        if voice is None:
            voice = self.voices[who] = _Voice()
        voice.inbox.append(data)

    def forget(self, who: str) -> None:
        self.voices = {k: v for k, v in self.voices.items() if k != who}
        if self.current == who:
            self.current = None

    def stop(self) -> None:
        self._stop.set()

    def levels(self) -> dict[str, float]:
        return {k: round(v.level, 4) for k, v in self.voices.items()}

    def _run(self) -> None:
        while not self._stop.wait(PERIOD_S):
            voices = dict(self.voices)
            for v in voices.values():
                v.measure()
            self._decide({k: v.level for k, v in voices.items()})

    def _decide(self, levels: dict[str, float]) -> None:
        loudest = max(levels, key=lambda k: levels[k], default=None)
        if loudest is None or levels[loudest] < SPEAKING or loudest == self.current:
            self._candidate, self._held = None, 0.0
            return
        now = levels.get(self.current or "", 0.0)
        if now >= SPEAKING and levels[loudest] < LOUDER * now:
            self._candidate, self._held = None, 0.0
            return
        if loudest != self._candidate:
            self._candidate, self._held = loudest, 0.0
        self._held += PERIOD_S
        if self._held + 1e-9 >= HOLD_S or self.current is None:
            self.current, self._candidate, self._held = loudest, None, 0.0
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.on_change, loudest)

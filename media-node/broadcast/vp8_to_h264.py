"""VP8 -> H.264 for a meeting source whose participant publishes VP8 (what browsers in a meeting
send; the broadcast path carries H.264 only). Only the participant on air is converted, in the
ingest (the call server still only forwards), in a thread of its own: the RTP side queues the
encoded VP8 frame, the thread decodes it (libvpx) and encodes H.264 with the transcoder's rung
encoder (libx264 zerolatency, constrained baseline) at the source's size, and hands the access
unit back to the event loop. Real time: past ``QUEUE`` frames waiting, the queue is dropped and
the thread waits for the next VP8 keyframe (the caller asks for one). IDRs only when asked: on
the first frame, on a switch of participant and on the programme's keyframe requests, and every
``IDR_EVERY_S`` so a transcoder pulling the programme never waits long.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import av

from .frames import VIDEO_CLOCK, Frame
from .ladder import Rung
from .meeting_source import vp8_is_keyframe
from .transcoder import RungEncoder

QUEUE = 15  # frames (0.5 s at 30 fps)
IDR_EVERY_S = 2.0
log = logging.getLogger("parley.broadcast.vp8")


class Vp8ToH264:
    """Converts one participant's VP8 frames at a time; ``emit(owner, frame)`` on the loop."""

    def __init__(self, name: str, emit: Callable[[str, Frame], None],
                 ask_keyframe: Callable[[str], None]) -> None:
        self.emit = emit
        self.ask_keyframe = ask_keyframe
        self.encoder = RungEncoder(Rung("meeting", 1080, 2500), "veryfast", 1)
        self.frames = 0
        self.dropped = 0
        self.errors = 0
        self._queue: queue.Queue[tuple[str, Frame] | None] = queue.Queue()
        self._owner: str | None = None
        self._decoder: Any = None
        self._force = True
        self._waiting_key = True
        self._last_idr: int | None = None
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, name=f"vp8 {name}", daemon=True).start()

    def put(self, owner: str, frame: Frame) -> None:
        """One VP8 frame of the participant on air (the RTP side)."""
        if self._queue.qsize() >= QUEUE:  # fell behind: drop, restart on a keyframe
            self.dropped += self._queue.qsize()
            with self._queue.mutex:
                self._queue.queue.clear()
            self._waiting_key = True
            self.ask_keyframe(owner)
            return
        self._queue.put_nowait((owner, frame))

    def keyframe(self) -> None:
        """The next output is an IDR (a viewer or a cut asked)."""
        self._force = True

    def close(self) -> None:
        self._queue.put_nowait(None)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            owner, frame = item
            try:
                self._convert(owner, frame)
            except Exception:  # one bad frame never ends the source
                self.errors += 1
                self._waiting_key = True
                log.exception("VP8 frame of %s", owner)

    def _convert(self, owner: str, frame: Frame) -> None:
        key_in = vp8_is_keyframe(frame.data)
        if owner != self._owner:  # another participant: a fresh decoder from its keyframe
            self._owner, self._decoder, self._waiting_key = owner, None, True
        if self._waiting_key:
            if not key_in:
                return
            self._waiting_key, self._force = False, True
        if self._decoder is None:
            self._decoder = av.CodecContext.create("vp8", "r")
        for picture in self._decoder.decode(av.Packet(frame.data)):
            idr = self._force or self._last_idr is None or (
                (frame.ts - self._last_idr) & 0xFFFFFFFF) >= IDR_EVERY_S * VIDEO_CLOCK
            if idr:
                self._force, self._last_idr = False, frame.ts
            for out in self.encoder.encode(picture, frame.ts, idr, frame.ts):
                self.frames += 1
                self._loop.call_soon_threadsafe(self.emit, owner, Frame(
                    "video", out.data, frame.ts, out.key))

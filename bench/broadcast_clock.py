"""The wall clock drawn into a source frame as a bar code, and read back from a decoded frame.

Glass-to-glass latency needs a timestamp that survives every hop: encode, transcode (scaling to
each rung), relay and decode. Metadata does not survive a transcoder, pixels do. The clock
(milliseconds of ``time.time()`` modulo 2^24, about 4.7 hours) is drawn as 24 vertical bands over
the whole width: white = 1 in the top 40 % of the picture, the complement in the bottom 40 %, so a
band is still 13 pixels wide at 320 pixels and every bit is checked twice (a frame whose halves
disagree or whose bands are grey is rejected, not guessed). The middle 20 % is a smooth random
texture panning 5 pixels a frame, so the encoders have detail and motion to code, not flat bars
only (per-pixel noise there made a 720p x264 encode several times costlier than camera content).

The same decoding runs in Chromium on a canvas (``READ_JS``) for the LL-HLS benchmark.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import av
import numpy as np
from aiortc import VideoStreamTrack

BITS = 24
MOD = 1 << BITS
TOP, BOTTOM = 0.2, 0.8  # rows (fractions of the height) where the two halves are read
MARGIN = 40  # a band must be this far from mid-grey (128) to count as a bit


def now_ms() -> int:
    return int(time.time() * 1000) % MOD


def latency_ms(stamp: int, at_ms: int | None = None) -> int:
    """Milliseconds from ``stamp`` (drawn) to ``at_ms`` (now), modulo the clock's wrap."""
    return ((now_ms() if at_ms is None else at_ms) - stamp) % MOD


class ClockVideo(VideoStreamTrack):
    """A camera at ``size`` and 30 fps whose every frame shows the wall clock of its capture."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        w, h = size
        self.band = w / BITS
        self.top = int(h * 0.4)
        self.bottom = h - self.top
        rng = np.random.default_rng(7)
        coarse = rng.integers(16, 236, (max(2, (self.bottom - self.top) // 12),
                                        max(2, w * 2 // 12)), np.uint8)
        self.texture = av.VideoFrame.from_ndarray(coarse, format="gray").reformat(
            width=w * 2, height=self.bottom - self.top,
            interpolation="BICUBIC").to_ndarray()  # smooth detail, like a scene, not snow
        self.n = 0
        self.columns = [(int(i * self.band), int((i + 1) * self.band)) for i in range(BITS)]

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        w, h = self.size
        stamp = now_ms()  # taken when the frame is captured, after the pacing sleep
        row = np.empty(w, np.uint8)
        for i, (a, b) in enumerate(self.columns):
            row[a:b] = 235 if stamp >> (BITS - 1 - i) & 1 else 16
        img = np.empty((h * 3 // 2, w), np.uint8)
        img[:self.top] = row
        shift = (self.n * 5) % w  # a pan
        img[self.top:self.bottom] = self.texture[:, shift:shift + w]
        img[self.bottom:h] = 251 - row
        img[h:] = 128
        frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


def read_stamp(frame: av.VideoFrame) -> int | None:
    """The clock drawn in a decoded frame, or None when the bar code does not read cleanly."""
    h, w = frame.height, frame.width
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    top, bottom = y[int(h * TOP)], y[int(h * BOTTOM)]
    band = w / BITS
    value = 0
    for i in range(BITS):
        x = int((i + 0.5) * band)
        a, b = int(top[x]), int(bottom[x])
        if abs(a - 128) < MARGIN or abs(b - 128) < MARGIN or (a > 128) == (b > 128):
            return None
        value = value << 1 | (a > 128)
    return value


# In a page: read the clock from a canvas holding the current video frame (RGB, so luma is
# approximated by the green channel, which carries most of it).
READ_JS = """
function readStamp(ctx, w, h) {
  const BITS = @BITS@, MARGIN = @MARGIN@;
  const top = ctx.getImageData(0, Math.floor(h * @TOP@), w, 1).data;
  const bottom = ctx.getImageData(0, Math.floor(h * @BOTTOM@), w, 1).data;
  let value = 0;
  for (let i = 0; i < BITS; i++) {
    const x = Math.floor((i + 0.5) * w / BITS);
    const a = top[x * 4 + 1], b = bottom[x * 4 + 1];
    if (Math.abs(a - 128) < MARGIN || Math.abs(b - 128) < MARGIN || (a > 128) === (b > 128))
      return null;
    value = value * 2 + (a > 128 ? 1 : 0);
  }
  return value;
}
""".replace("@BITS@", str(BITS)).replace("@MARGIN@", str(MARGIN)).replace(
    "@TOP@", str(TOP)).replace("@BOTTOM@", str(BOTTOM))

# On every frame the page presents: draw it, read the clock, record (performance.now(), latency
# in ms) in ``bench.samples`` (``bench.unreadable`` counts frames without a readable code).
PRESENTED_JS = READ_JS + """
function readPresented(video, canvas, bench) {
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  function onFrame() {
    const now = Date.now();
    const w = video.videoWidth, h = video.videoHeight;
    if (w && h) {
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
      ctx.drawImage(video, 0, 0, w, h);
      const stamp = readStamp(ctx, w, h);
      bench.height = h;
      if (stamp === null) bench.unreadable += 1;
      else bench.samples.push([performance.now(), (now % @MOD@ - stamp + @MOD@) % @MOD@]);
    }
    video.requestVideoFrameCallback(onFrame);
  }
  video.requestVideoFrameCallback(onFrame);
}
""".replace("@MOD@", str(MOD))


async def publish_clock(ingest: str, size: tuple[int, int]) -> Any:
    """The benches' camera (tests' WHIP publisher, its video this clock, its audio a tone),
    published to ``ingest``'s broadcast; the caller stops it."""
    from tests.broadcast.clients import Publisher

    from .broadcast_chain import BROADCAST, stream_key

    cam = Publisher(ingest, BROADCAST, stream_key(), size)
    cam.pc.getTransceivers()[0].sender.replaceTrack(ClockVideo(size))
    r = await cam.publish()
    if r.status_code != 201:
        await cam.stop()
        raise RuntimeError(f"WHIP publish: {r.status_code} {r.text}")
    return cam


async def presented_window(page: Any, chain: Any, warm: float, seconds: float
                           ) -> tuple[dict[str, Any], list[int], dict[str, float]]:
    """After ``warm`` s, ``seconds`` of a page's presented-frame latencies (``PRESENTED_JS``'s
    ``window.bench``): the bench object, the window's latencies (ms) and each role's CPU in
    cores over it."""
    from .load import cpu_seconds

    await asyncio.sleep(warm)
    cpu0 = {n: cpu_seconds(chain.pid(n)) for n in chain.procs}
    mark = await page.evaluate("performance.now()")
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    t1 = time.monotonic()
    b = await page.evaluate("window.bench")
    values = [int(v) for at, v in b["samples"] if mark <= at < mark + seconds * 1000]
    cores = {n: round((cpu_seconds(chain.pid(n)) - cpu0[n]) / (t1 - t0), 3)
             for n in chain.procs}
    return b, values, cores

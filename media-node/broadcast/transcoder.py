"""The transcoder: decodes the programme once and encodes each rung of the ladder (H.264).

It is a viewer of a source feed (the ingest's programme pulled over WHEP, or in `parley up` the
programme feed itself) and a producer of one feed per rung, which viewers, relays and edges play
over WHEP at ``/live/{b}/{rung}/whep``. Video is decoded once per source frame, scaled per rung and
encoded by libx264 (zerolatency, baseline, packetization-mode 1 on the wire); Opus is passed
through to every rung undecoded. With ``hls`` the Opus is also decoded once and encoded once to
AAC (aac.py), and every rung's H.264 frames plus that AAC are packaged for LL-HLS (hls.py):
remuxed, not encoded again.

Keyframes: every rung's encoder is forced to an IDR on the first source frame at or after each
multiple of the keyframe interval (2 s by default) of the programme's timeline, and nowhere else,
so all rungs have their GOP boundaries on the same source frames and a viewer can switch rungs at
any boundary. The timeline is the ingest's, read from each frame (timeline.py), so separate
transcoder processes (one per rendition) cut on the same frames, and a rung's first LL-HLS
segment is numbered by the programme time of its first keyframe divided by the interval: the
rungs' segment numbers match across processes too. A viewer's keyframe request is not forwarded
(an extra IDR in one process would break the alignment): a new viewer, or an edge pulling again
after a restart, waits for the next boundary (at most one interval).

Real time: decoding (a few ms a frame) runs in one thread, in order, for every source frame (each
is a reference for the next); each rung encodes in a thread of its own from a queue of pictures at
most ``RUNG_LIMIT_S`` old (and ``RUNG_QUEUE`` long). A rung that falls behind (short of CPU, or a
preset too slow for it) drops its oldest waiting picture that is not a GOP boundary, so it sends
fewer frames, never older ones, and the other rungs are not held up by it; boundaries are never
dropped (alignment). Only when the decoder itself is starved does the intake drop to the next
keyframe (``INTAKE_LIMIT_S``). How far behind: per rendition
``parley_transcoder_rendition_behind_seconds`` (arrival of the source frame to its encoded output,
last frame) and ``parley_transcoder_rendition_dropped_frames_total``.

Source gaps (a camera or uplink that stops for a while, a cut to a camera whose keyframe comes
late, this process stalling): the programme's timeline goes on, so the ladder's does too. Across a
programme step longer than ``GAP_S`` the last decoded picture is shown again every frame interval
of the ladder (30 fps), as broadcast encoders repeat frames: every repeat's timestamp is the last
real frame's programme timestamp plus a whole number of frame intervals, so every rung, and every
transcoder process, repeats on the same timestamps and forces its GOP boundaries on the same
(repeated) frames; no sample is longer than ``GAP_S`` and so no LL-HLS part longer than its target
(RFC 8216bis 4.4.4.9). Live, the repeats are made as the gap goes on, ``HOLD_S`` behind the
programme clock (a late frame is not mistaken for a gap), for at most ``BRIDGE_S`` (a source that
stays away is gone: the stream stalls instead); the rest of a gap is filled when the next frame
comes. The AAC for LL-HLS is padded with silence the same way (aac.py). A rung's own drops (its
queue, above) are not gaps: its previous frame lasts longer, nothing moves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import av
from av.video.reformatter import VideoReformatter
from prometheus_client import Counter, Gauge

from . import timeline
from .aac import AacEncoder
from .feed import Feed
from .frames import VIDEO_CLOCK, Frame, FrameTrack, h264_is_keyframe
from .hls import AUDIO_BITRATE, Ladder
from .ladder import DEFAULT_LADDER, Rung, parse_ladder, parse_presets, parse_rung, preset_for

log = logging.getLogger("parley.broadcast.transcoder")
BEHIND = Gauge("parley_transcoder_behind_seconds",
               "Source frame arrival to encoded output, last frame, worst rendition",
               ["broadcast"])
RUNG_BEHIND = Gauge("parley_transcoder_rendition_behind_seconds",
                    "Source frame arrival to this rendition's encoded output, last frame",
                    ["broadcast", "rendition"])
RUNG_DROPPED = Counter("parley_transcoder_rendition_dropped_frames_total",
                       "Decoded pictures a rendition skipped because it was behind",
                       ["broadcast", "rendition"])
INTAKE_DROPPED = Counter("parley_transcoder_intake_dropped_frames_total",
                         "Source frames dropped before decoding (decoder starved; restarts on "
                         "a keyframe)", ["broadcast"])
FRAMES = Counter("parley_transcoder_frames_total", "Source frames decoded", ["broadcast"])
ERRORS = Counter("parley_transcoder_decode_errors_total",
                 "Source frames the decoder refused (restarts on the next keyframe)",
                 ["broadcast"])
_TB = fractions.Fraction(1, VIDEO_CLOCK)
_WRAP = 1 << 32
# A rung whose oldest waiting picture arrived this long ago is behind: it drops pictures. Time, not
# a count: a loaded machine's scheduling hiccups (tens of ms) pass without a drop, a rung short of
# CPU still never falls further behind than this.
RUNG_LIMIT_S = 0.25
RUNG_QUEUE = 8  # at most this many decoded pictures wait per rung (memory: 25 MB at 1080p)
INTAKE_LIMIT_S = 0.5  # source frames waiting longer than this to be decoded: drop to a keyframe
FRAME_TICKS = VIDEO_CLOCK // 30  # the ladder's frame interval (the encoders' 30 fps)
GAP_S = 0.1  # a programme step longer than this is a gap, filled with repeats (3 frames at 30 fps)
HOLD_S = 0.25  # live repeats trail the programme clock by this much (arrival jitter)
BRIDGE_S = 4.0  # repeats made live for at most this long after the last frame (then: source gone)
FILL_MAX_S = 30.0  # a longer step (an ingest restarted, a clock jump) is not filled
_GAP, _FILL_MAX = int(GAP_S * VIDEO_CLOCK), int(FILL_MAX_S * VIDEO_CLOCK)


class Picture(NamedTuple):
    """A decoded source picture on its way to the rungs."""

    picture: av.VideoFrame
    pts: int  # this feed's timeline (90 kHz)
    key: bool  # a GOP boundary of the programme timeline: every rung makes an IDR here
    source_ts: int  # the programme timestamp
    arrived: float  # monotonic, when the encoded source frame reached the transcoder
    repeats: tuple[tuple[int, bool, int], ...] = ()  # the same picture again: (pts, key, source)

    def times(self) -> tuple[tuple[int, bool, int], ...]:
        """Every (pts, key, source_ts) this picture is encoded at, in order."""
        return ((self.pts, self.key, self.source_ts), *self.repeats)


class RungQueue:
    """The pictures waiting for one rung's encoder thread. ``put`` never blocks: while the oldest
    waiting picture arrived over ``limit_s`` ago, or ``depth`` pictures wait, it drops the oldest
    that is not a GOP boundary (a boundary kept is an IDR on the same source frame in every rung
    and process) nor a gap's repeats (they keep the rung's timeline at the ladder's pace)."""

    def __init__(self, limit_s: float = RUNG_LIMIT_S, depth: int = RUNG_QUEUE) -> None:
        self.limit_s = limit_s
        self.depth = depth
        self.waiting: deque[Picture] = deque()
        self.dropped = 0
        self.closed = False
        self._ready = threading.Condition()

    def put(self, item: Picture, now: float | None = None) -> int:
        """Queue ``item`` at ``now`` (monotonic); returns how many pictures were dropped for it."""
        now = time.monotonic() if now is None else now
        dropped = 0
        with self._ready:
            if self.closed:
                return 0
            while self.waiting and (len(self.waiting) >= self.depth
                                    or now - self.waiting[0].arrived > self.limit_s):
                old = next((p for p in self.waiting if not p.key and not p.repeats), None)
                if old is None:
                    break
                self.waiting.remove(old)
                dropped += 1
            if len(self.waiting) >= self.depth and not item.key and not item.repeats:
                dropped += 1  # only boundaries wait: this one goes
            else:
                self.waiting.append(item)
                self._ready.notify()
            self.dropped += dropped
        return dropped

    def take(self) -> Picture | None:
        """The oldest waiting picture; blocks; None once closed."""
        with self._ready:
            while not self.waiting and not self.closed:
                self._ready.wait()
            return self.waiting.popleft() if self.waiting else None

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self.waiting.clear()
            self._ready.notify_all()


class SourceVideo(FrameTrack):
    """The transcoder's intake of the programme's video: each frame with its arrival time. Decode
    keeps up unless the process is starved; then frames waiting past ``INTAKE_LIMIT_S`` are
    dropped and decoding restarts on the next keyframe (asked for upstream)."""

    def __init__(self, on_keyframe_request: Callable[[], None]) -> None:
        super().__init__("video", on_keyframe_request)
        self.waiting: deque[tuple[Frame, float]] = deque()
        self._ready = asyncio.Event()

    def push(self, frame: Frame) -> None:
        if self.gated:
            if not frame.key:
                return
            self.gated = False
        now = time.monotonic()
        if self.waiting and now - self.waiting[0][1] > INTAKE_LIMIT_S:
            self.dropped += len(self.waiting)
            self.waiting.clear()
            self.gated = True
            self.ask()
            return
        self.waiting.append((frame, now))
        self._ready.set()

    async def take(self, within: float | None = None) -> tuple[Frame, float] | None:
        """The next frame and its arrival time; None once stopped; TimeoutError when none came
        within ``within`` seconds."""
        while not self.waiting:
            if self.readyState == "ended":
                return None
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), within)
        return self.waiting.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class RungEncoder:
    """libx264 for one rung; re-created when the output size changes."""

    def __init__(self, rung: Rung, preset: str, threads: int) -> None:
        self.rung = rung
        self.preset = preset
        self.threads = threads
        self.size: tuple[int, int] | None = None
        self.ctx: Any = None
        self.frames = 0
        self.keyframes: list[int] = []  # programme timestamps of the last IDRs (status, tests)
        self.scaler = VideoReformatter()  # keeps its swscale context from frame to frame

    def _open(self, size: tuple[int, int]) -> None:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = size
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = self.rung.bitrate_kbps * 1000
        ctx.time_base = _TB
        ctx.framerate = fractions.Fraction(30, 1)
        ctx.thread_count = self.threads
        ctx.profile = "Baseline"
        # no keyframes but the forced ones (keyint far away, no scene cuts), IDR when forced
        ctx.options = {"preset": self.preset, "tune": "zerolatency", "forced-idr": "1",
                       "x264-params": "keyint=100000:min-keyint=100000:scenecut=0"}
        ctx.open()
        self.ctx, self.size = ctx, size

    def encode(self, picture: av.VideoFrame, ts: int, key: bool, source_ts: int) -> list[Frame]:
        """Scale ``picture`` to this rung and encode it; IDR when ``key``. ``source_ts`` is the
        frame's programme timestamp (recorded for the keyframes)."""
        size = self.rung.size_for(picture.width, picture.height)
        if size != self.size:
            self._open(size)
            key = True
        # one thread: the rung is a thread of its own (swscale's default is one per CPU)
        out = self.scaler.reformat(picture, width=size[0], height=size[1], format="yuv420p",
                                   threads=1)
        out.pts, out.time_base = ts, _TB
        out.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
        frames = []
        for packet in self.ctx.encode(out):
            data = bytes(packet)
            is_key = h264_is_keyframe(data)
            if is_key:
                self.keyframes = [*self.keyframes[-19:], source_ts]
            frames.append(Frame("video", data, int(packet.pts) % _WRAP, is_key))
        self.frames += len(frames)
        return frames

    def status(self) -> dict[str, Any]:
        w, h = self.size or (0, 0)
        out: dict[str, Any] = {"name": self.rung.name, "height": self.rung.height,
                               "bitrateKbps": self.rung.bitrate_kbps, "preset": self.preset,
                               "frames": self.frames, "keyframes": self.keyframes}
        if self.size is not None:
            out.update(width=w, actualHeight=h, belowRung=h < self.rung.height)
            if h < self.rung.height:
                out["note"] = (f"source is {h} lines high: {self.rung.name} is made at the "
                               f"source's size ({w}x{h}), never upscaled")
        return out


class Transcoder:
    """Decode ``source`` once, encode every rung; ``feeds[rung]`` is what viewers play.
    ``preset`` is one x264 preset for every rung, or per rung name (ladder.preset_for by
    default)."""

    def __init__(self, broadcast: str, source: Feed, rungs: list[Rung],
                 keyframe_interval_s: float = 2.0, preset: str | dict[str, str] | None = None,
                 threads: int = 1, hls: bool = False) -> None:
        self.broadcast = broadcast
        self.source = source
        self.rungs = rungs
        self.interval = max(1, int(keyframe_interval_s * VIDEO_CLOCK))
        presets = preset if isinstance(preset, dict) else {}
        self.encoders = {r.name: RungEncoder(r, preset if isinstance(preset, str) else
                                             presets.get(r.name) or preset_for(r), threads)
                         for r in rungs}
        self.feeds = {r.name: Feed(f"{broadcast}/{r.name}", lambda: None) for r in rungs}
        self.queues = {r.name: RungQueue() for r in rungs}
        self.rung_behind = {r.name: 0.0 for r in rungs}
        self.source_size: tuple[int, int] | None = None
        self.decoded = 0
        self.errors = 0
        self.behind = 0.0
        self._origin = object()
        self._decoder = av.CodecContext.create("h264", "r")
        self._next_key = 0
        self._shown: Picture | None = None  # the last real (decoded) picture queued
        self._repeated = 0  # how many times it was repeated since (a gap's frames)
        self.repeated = 0  # repeats made in all (status)
        self._epoch = 0
        self._last_ts: int | None = None
        self._source_shift = 0  # programme timestamp - this feed's timestamp, from the stamps
        self._last_stamp: int | None = None
        self._stamp_epoch = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="decode")  # frames in order
        self._tasks: list[asyncio.Task[None]] = []
        self._tracks: list[FrameTrack] = []
        self._threads: list[threading.Thread] = []
        self.aac = AacEncoder(AUDIO_BITRATE, FILL_MAX_S) if hls else None
        self.hls = Ladder([(r.name, r.bitrate_kbps) for r in rungs], keyframe_interval_s,
                          self.aac.config) if self.aac is not None else None

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        video = SourceVideo(self.source.request_keyframe)  # Feed.track, with arrival times
        self.source.tracks["video"] = [*self.source.tracks["video"], video]
        self.source.request_keyframe()
        audio = self.source.track("audio")
        self._tracks = [video, audio]
        self._threads = [threading.Thread(target=self._encode_rung, args=(name, loop),
                                          name=f"encode-{name}", daemon=True)
                         for name in self.encoders]
        for t in self._threads:
            t.start()
        self._tasks = [asyncio.ensure_future(self._video(video)),
                       asyncio.ensure_future(self._audio(audio))]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for track in self._tracks:
            self.source.remove(track)
        for q in self.queues.values():
            q.close()
        for feed in self.feeds.values():
            feed.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _unwrap(self, ts: int) -> int:
        if self._last_ts is not None and ts < self._last_ts and self._last_ts - ts > _WRAP // 2:
            self._epoch += _WRAP
        self._last_ts = ts
        return ts + self._epoch

    async def _audio(self, track: FrameTrack) -> None:
        heard = time.monotonic()  # when the last Opus packet came
        while True:
            silent = time.monotonic() - heard
            if self.aac is None or not track.queue.empty() or silent > BRIDGE_S + HOLD_S:
                frame = await track.queue.get()
            else:  # LL-HLS: a gap in the programme's sound is silence, made as it goes on
                try:
                    frame = await asyncio.wait_for(track.queue.get(),
                                                   max(GAP_S + HOLD_S - silent, 1 / 30))
                except TimeoutError:
                    silent = time.monotonic() - heard
                    if silent >= GAP_S + HOLD_S:
                        self._pad_audio(min(silent - HOLD_S, BRIDGE_S))
                    continue
            if frame is None:
                return
            heard = time.monotonic()
            for feed in self.feeds.values():
                feed.push(frame, self._origin)
            if self.aac is not None and self.hls is not None:
                try:
                    for pts, data in self.aac.encode(frame.data, frame.ts):
                        self.hls.audio(pts, data)
                except av.FFmpegError as exc:  # a damaged Opus packet: skip it
                    log.warning("transcoder %s: audio decode error %s", self.broadcast, exc)

    def _pad_audio(self, seconds: float) -> None:
        if self.aac is not None and self.hls is not None:
            for pts, data in self.aac.pad(seconds):
                self.hls.audio(pts, data)

    async def _video(self, track: SourceVideo) -> None:
        loop = asyncio.get_running_loop()
        intake_dropped = 0
        while True:
            try:
                item = await track.take(self._next_repeat_due())
            except TimeoutError:  # a programme gap going on: its repeats, as it goes on
                self._queue(self.repeat_until(time.monotonic()))
                continue
            if item is None:
                return
            frame, arrived = item
            if track.dropped != intake_dropped:
                INTAKE_DROPPED.labels(self.broadcast).inc(track.dropped - intake_dropped)
                intake_dropped = track.dropped
            try:
                pictures = await loop.run_in_executor(self._pool, self.decode, frame, arrived)
            except av.FFmpegError as exc:  # a damaged frame: wait for the next keyframe
                self.errors += 1
                ERRORS.labels(self.broadcast).inc()
                log.warning("transcoder %s: decode error %s", self.broadcast, exc)
                track.gated = True
                track.ask()
                continue
            self._queue(pictures)

    def _queue(self, pictures: list[Picture]) -> None:
        for picture in pictures:
            for name, q in self.queues.items():
                if dropped := q.put(picture):
                    RUNG_DROPPED.labels(self.broadcast, name).inc(dropped)

    def _encode_rung(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        """One rung's thread: encode what its queue holds, hand the frames to the event loop."""
        enc, q = self.encoders[name], self.queues[name]
        while (p := q.take()) is not None:
            try:
                frames = [f for pts, key, source in p.times()
                          for f in enc.encode(p.picture, pts, key, source)]
            except av.FFmpegError as exc:
                log.warning("transcoder %s/%s: encode error %s", self.broadcast, name, exc)
                continue
            with contextlib.suppress(RuntimeError):  # the loop closed while encoding
                loop.call_soon_threadsafe(self._deliver, name, frames, p.arrived)

    def _deliver(self, name: str, frames: list[Frame], arrived: float) -> None:
        for f in frames:
            self.feeds[name].push(f, self._origin)
        if self.hls is not None:
            self._package({name: frames})
        behind = self.rung_behind[name] = time.monotonic() - arrived
        RUNG_BEHIND.labels(self.broadcast, name).set(behind)
        self.behind = max(self.rung_behind.values())
        BEHIND.labels(self.broadcast).set(self.behind)

    def _package(self, out: dict[str, list[Frame]]) -> None:
        """Hand each rung's encoded frames to its LL-HLS packager (remux only)."""
        assert self.hls is not None
        try:
            for name, frames in out.items():
                rendition, size = self.hls.renditions[name], self.encoders[name].size
                for f in frames:
                    if f.key and rendition.open is None and not rendition.segments:
                        # the first segment's number from the programme time: rungs made by
                        # other processes number the same GOP the same
                        keyframes = self.encoders[name].keyframes
                        rendition.next_msn = max(0, keyframes[-1] // self.interval)
                    rendition.video(f.data, f.ts, f.key, size or (0, 0))
        except Exception:  # a packaging bug must not stop WebRTC viewers: HLS stops instead
            log.exception("transcoder %s: LL-HLS packaging failed, HLS off", self.broadcast)
            self.hls = None

    def decode(self, frame: Frame, arrived: float = 0.0) -> list[Picture]:
        """Decode thread: the frame's pictures, each marked when it starts a GOP on every rung
        (the first frame at or after each boundary of the programme timeline, a size change, or
        a programme that jumped back: an ingest restarted), after a gap preceded by the repeats
        that fill it (one Picture carrying them all)."""
        ts = self._unwrap(frame.ts)
        stamped = timeline.read(frame.data)
        if stamped is not None:
            self._source_shift = self._unwrap_stamp(stamped) - ts
        packet = av.Packet(frame.data)
        packet.pts, packet.time_base = ts, _TB
        out: list[Picture] = []
        for picture in self._decoder.decode(packet):
            self.decoded += 1
            FRAMES.labels(self.broadcast).inc()
            size = (picture.width, picture.height)
            pts = ts if picture.pts is None else int(picture.pts)
            source = pts + self._source_shift
            shown = self._shown
            if shown is not None:
                newest = shown.source_ts + self._repeated * FRAME_TICKS
                if shown.source_ts < source <= newest:
                    continue  # later than the repeats made live in its place: left out
                if _GAP < source - shown.source_ts <= _FILL_MAX:
                    out += self._repeats(source - FRAME_TICKS // 2, arrived)
            key = self._boundary(source, size)
            self._shown, self._repeated = Picture(picture, pts, key, source, arrived), 0
            out.append(self._shown)
        return out

    def _boundary(self, source: int, size: tuple[int, int]) -> bool:
        """Does the frame at programme time ``source`` start a GOP (on every rung)?"""
        key = (source >= self._next_key or source < self._next_key - self.interval
               or size != self.source_size)
        if key:
            self._next_key = (source // self.interval + 1) * self.interval
        self.source_size = size
        return key

    def _repeats(self, until: int, arrived: float) -> list[Picture]:
        """The last picture again every frame interval after it, up to programme time ``until``:
        one Picture holding them all (or none)."""
        shown = self._shown
        if shown is None:
            return []
        size = (shown.picture.width, shown.picture.height)
        times = []
        while (k := self._repeated + 1) * FRAME_TICKS <= until - shown.source_ts:
            source = shown.source_ts + k * FRAME_TICKS
            times.append((shown.pts + k * FRAME_TICKS, self._boundary(source, size), source))
            self._repeated = k
        if not times:
            return []
        self.repeated += len(times)
        (pts, key, source), *rest = times
        return [Picture(shown.picture, pts, key, source, arrived, tuple(rest))]

    def _next_repeat_due(self) -> float | None:
        """Seconds until the next live repeat of a gap going on is due (None: none will be)."""
        shown = self._shown
        if shown is None:
            return None
        k = self._repeated + 1
        if k * FRAME_TICKS > BRIDGE_S * VIDEO_CLOCK:
            return None
        due = shown.arrived + max(k * FRAME_TICKS / VIDEO_CLOCK, GAP_S) + HOLD_S + 0.001
        return max(0.0, due - time.monotonic())

    def repeat_until(self, now: float) -> list[Picture]:
        """A programme gap going on at ``now`` (monotonic): the repeats due by then, each
        ``HOLD_S`` after its time on the programme clock (anchored on the last frame's arrival),
        for at most ``BRIDGE_S`` after that frame."""
        shown = self._shown
        if shown is None or now - shown.arrived < GAP_S + HOLD_S:
            return []
        behind = min(now - shown.arrived - HOLD_S, BRIDGE_S)
        return self._repeats(shown.source_ts + int(behind * VIDEO_CLOCK), now)

    def _unwrap_stamp(self, ts: int) -> int:
        """The stamped programme timestamp (32 bits) made monotonic across its wrap."""
        last = self._last_stamp
        if last is not None and ts < last and last - ts > _WRAP // 2:
            self._stamp_epoch += _WRAP
        self._last_stamp = ts
        return ts + self._stamp_epoch

    def status(self) -> dict[str, Any]:
        w, h = self.source_size or (0, 0)
        return {"broadcast": self.broadcast,
                "source": {"width": w, "height": h} if self.source_size else None,
                "keyframeIntervalS": self.interval / VIDEO_CLOCK,
                "decoded": self.decoded, "decodeErrors": self.errors,
                "repeated": self.repeated,
                "intakeDropped": self._tracks[0].dropped if self._tracks else 0,
                "behindSeconds": round(self.behind, 4),
                "renditions": [{**self.encoders[r.name].status(),
                                "behindSeconds": round(self.rung_behind[r.name], 4),
                                "dropped": self.queues[r.name].dropped,
                                "viewers": self.feeds[r.name].viewers()} for r in self.rungs]}


def rungs_from_env() -> list[Rung]:
    """PARLEY_LADDER (``180p:200,120p:100``), else one rung from PARLEY_RENDITION with
    PARLEY_HEIGHT / PARLEY_BITRATE_KBPS (what the operator sets per transcoder Deployment)."""
    env = os.environ.get
    if env("PARLEY_LADDER"):
        return parse_ladder(env("PARLEY_LADDER", ""))
    name = env("PARLEY_RENDITION")
    if not name:
        return parse_ladder(DEFAULT_LADDER)
    height = env("PARLEY_HEIGHT") or (name[:-1] if name.endswith("p") else "")
    if not height.isdigit():
        raise ValueError(f"PARLEY_RENDITION={name}: set PARLEY_HEIGHT (lines)")
    rung = parse_rung(f"{height}p" + (f":{env('PARLEY_BITRATE_KBPS')}"
                                      if env("PARLEY_BITRATE_KBPS") else ""))
    return [Rung(name, rung.height, rung.bitrate_kbps)]


async def serve_transcoder(args: argparse.Namespace) -> None:
    """`parley media-node --role transcoder`: pulls PARLEY_UPSTREAM_URL (the ingest's programme
    over WHEP), serves each rung at /live/{PARLEY_BROADCAST}/{rung}/whep and, unless
    PARLEY_HLS=0, over LL-HLS at /live/{b}/{rung}.m3u8 (index.m3u8: all rungs); /v1/status."""
    from .hls import add_routes
    from .live import create_app as live_app
    from .pull import Pull
    from .roles import broadcast_key, node_app
    from .serving import serve_role
    from .whep import Playback

    upstream = os.environ.get("PARLEY_UPSTREAM_URL", "")
    key = broadcast_key(os.environ.get("PARLEY_BROADCAST", ""))
    if not upstream.startswith(("http://", "https://")) or not key:
        raise SystemExit("transcoder needs PARLEY_UPSTREAM_URL (a WHEP URL) and PARLEY_BROADCAST")
    try:
        rungs = rungs_from_env()
        presets = parse_presets(os.environ.get("PARLEY_X264_PRESET", ""))
    except ValueError as exc:
        raise SystemExit(f"transcoder: {exc}") from exc
    pull = Pull(upstream, key)
    tx = Transcoder(key, pull.feed, rungs,
                    float(os.environ.get("PARLEY_KEYFRAME_INTERVAL_S", "2") or 2),
                    presets,
                    int(os.environ.get("PARLEY_X264_THREADS", "1") or 1),
                    hls=os.environ.get("PARLEY_HLS", "1") != "0")

    def lookup(broadcast: str, rendition: str | None) -> Feed | None:
        return tx.feeds.get(rendition or "") if broadcast == key else None

    def status(broadcast: str | None = None) -> dict[str, Any] | None:
        if broadcast is not None and broadcast != key:
            return None
        return {**tx.status(), "upstream": upstream, "connected": pull.connected,
                "upstreamSessions": pull.sessions}

    playback = Playback(lookup)
    live = live_app(playback, None, status)
    add_routes(live, lambda b: tx.hls if b == key else None)
    app = node_app(live)
    app.add_api_route("/v1/status", lambda: status(), methods=["GET"])
    pull.start()
    tx.start()
    print(f"transcoder for {key} pulling {upstream}: "
          f"{', '.join(f'{r.name} ({r.bitrate_kbps} kbps)' for r in rungs)}", flush=True)

    async def close() -> None:
        await playback.close()
        await tx.close()
        await pull.close()  # DELETEs the upstream WHEP session
    await serve_role(app, args.host, args.port, close)

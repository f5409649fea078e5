"""The transcoder: decodes the programme once and encodes each rung of the ladder (H.264).

It is a viewer of a source feed (the ingest's programme pulled over WHEP, or in `parley up` the
programme feed itself) and a producer of one feed per rung, which viewers, relays and edges play
over WHEP at ``/live/{b}/{rung}/whep``. Video is decoded once per source frame, scaled per rung and
encoded by libx264 (zerolatency, baseline, packetization-mode 1 on the wire); Opus is passed
through to every rung undecoded. With ``hls`` the Opus is also decoded once and encoded once to
AAC (aac.py), and every rung's H.264 frames plus that AAC are packaged for LL-HLS (hls.py):
remuxed, not encoded again.

Keyframes: every rung's encoder is forced to an IDR on the first source frame at or after each
multiple of the keyframe interval (2 s by default) on the source timeline, and nowhere else, so
all rungs of one transcoder have their GOP boundaries on the same source frames and a viewer can
switch rungs at any boundary. A viewer's keyframe request is not forwarded: a new viewer waits for
the next boundary (at most one interval). Real time: the source track drops frames and restarts on
a keyframe when more than about 1 s is queued (``FrameTrack``); the lag of the last frame (arrival
to encoded) is ``parley_transcoder_behind_seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
from prometheus_client import Counter, Gauge

from .aac import AacEncoder
from .feed import Feed
from .frames import VIDEO_CLOCK, Frame, FrameTrack, h264_is_keyframe
from .hls import AUDIO_BITRATE, Ladder
from .ladder import DEFAULT_LADDER, Rung, parse_ladder, parse_rung

log = logging.getLogger("parley.broadcast.transcoder")
BEHIND = Gauge("parley_transcoder_behind_seconds",
               "Source frame arrival to encoded output, last frame", ["broadcast"])
FRAMES = Counter("parley_transcoder_frames_total", "Source frames decoded", ["broadcast"])
ERRORS = Counter("parley_transcoder_decode_errors_total",
                 "Source frames the decoder refused (restarts on the next keyframe)",
                 ["broadcast"])
_TB = fractions.Fraction(1, VIDEO_CLOCK)
_WRAP = 1 << 32


class RungEncoder:
    """libx264 for one rung; re-created when the output size changes."""

    def __init__(self, rung: Rung, preset: str, threads: int) -> None:
        self.rung = rung
        self.preset = preset
        self.threads = threads
        self.size: tuple[int, int] | None = None
        self.ctx: Any = None
        self.frames = 0
        self.keyframes: list[int] = []  # source timestamps of the last IDRs (status, tests)

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

    def encode(self, picture: av.VideoFrame, ts: int, key: bool) -> list[Frame]:
        """Scale ``picture`` to this rung and encode it; IDR when ``key``."""
        size = self.rung.size_for(picture.width, picture.height)
        if size != self.size:
            self._open(size)
            key = True
        out = picture.reformat(width=size[0], height=size[1], format="yuv420p")
        out.pts, out.time_base = ts, _TB
        out.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
        frames = []
        for packet in self.ctx.encode(out):
            data = bytes(packet)
            is_key = h264_is_keyframe(data)
            if is_key:
                self.keyframes = [*self.keyframes[-19:], int(packet.pts)]
            frames.append(Frame("video", data, int(packet.pts) % _WRAP, is_key))
        self.frames += len(frames)
        return frames

    def status(self) -> dict[str, Any]:
        w, h = self.size or (0, 0)
        out: dict[str, Any] = {"name": self.rung.name, "height": self.rung.height,
                               "bitrateKbps": self.rung.bitrate_kbps, "frames": self.frames,
                               "keyframes": self.keyframes}
        if self.size is not None:
            out.update(width=w, actualHeight=h, belowRung=h < self.rung.height)
            if h < self.rung.height:
                out["note"] = (f"source is {h} lines high: {self.rung.name} is made at the "
                               f"source's size ({w}x{h}), never upscaled")
        return out


class Transcoder:
    """Decode ``source`` once, encode every rung; ``feeds[rung]`` is what viewers play."""

    def __init__(self, broadcast: str, source: Feed, rungs: list[Rung],
                 keyframe_interval_s: float = 2.0, preset: str = "veryfast",
                 threads: int = 1, hls: bool = False) -> None:
        self.broadcast = broadcast
        self.source = source
        self.rungs = rungs
        self.interval = max(1, int(keyframe_interval_s * VIDEO_CLOCK))
        self.encoders = {r.name: RungEncoder(r, preset, threads) for r in rungs}
        self.feeds = {r.name: Feed(f"{broadcast}/{r.name}", lambda: None) for r in rungs}
        self.source_size: tuple[int, int] | None = None
        self.decoded = 0
        self.errors = 0
        self.behind = 0.0
        self._origin = object()
        self._decoder = av.CodecContext.create("h264", "r")
        self._next_key = 0
        self._epoch = 0
        self._last_ts: int | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="transcode")  # frames in order
        self._tasks: list[asyncio.Task[None]] = []
        self._tracks: list[FrameTrack] = []
        self.aac = AacEncoder(AUDIO_BITRATE) if hls else None
        self.hls = Ladder([(r.name, r.bitrate_kbps) for r in rungs], keyframe_interval_s,
                          self.aac.config) if self.aac is not None else None

    def start(self) -> None:
        if self._tasks:
            return
        video, audio = self.source.track("video"), self.source.track("audio")
        self._tracks = [video, audio]
        self._tasks = [asyncio.ensure_future(self._video(video)),
                       asyncio.ensure_future(self._audio(audio))]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for track in self._tracks:
            self.source.remove(track)
        for feed in self.feeds.values():
            feed.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _unwrap(self, ts: int) -> int:
        if self._last_ts is not None and ts < self._last_ts and self._last_ts - ts > _WRAP // 2:
            self._epoch += _WRAP
        self._last_ts = ts
        return ts + self._epoch

    async def _audio(self, track: FrameTrack) -> None:
        while (frame := await track.queue.get()) is not None:
            for feed in self.feeds.values():
                feed.push(frame, self._origin)
            if self.aac is not None and self.hls is not None:
                try:
                    for pts, data in self.aac.encode(frame.data, frame.ts):
                        self.hls.audio(pts, data)
                except av.FFmpegError as exc:  # a damaged Opus packet: skip it
                    log.warning("transcoder %s: audio decode error %s", self.broadcast, exc)

    async def _video(self, track: FrameTrack) -> None:
        loop = asyncio.get_running_loop()
        while (frame := await track.queue.get()) is not None:
            arrived = time.monotonic()
            try:
                out = await loop.run_in_executor(self._pool, self._transcode, frame)
            except av.FFmpegError as exc:  # a damaged frame: wait for the next keyframe
                self.errors += 1
                ERRORS.labels(self.broadcast).inc()
                log.warning("transcoder %s: decode error %s", self.broadcast, exc)
                track.gated = True
                track.ask()
                continue
            for name, frames in out.items():
                for f in frames:
                    self.feeds[name].push(f, self._origin)
            if self.hls is not None:
                self._package(out)
            self.behind = time.monotonic() - arrived
            BEHIND.labels(self.broadcast).set(self.behind)

    def _package(self, out: dict[str, list[Frame]]) -> None:
        """Hand each rung's encoded frames to its LL-HLS packager (remux only)."""
        assert self.hls is not None
        try:
            for name, frames in out.items():
                rendition, size = self.hls.renditions[name], self.encoders[name].size
                for f in frames:
                    rendition.video(f.data, f.ts, f.key, size or (0, 0))
        except Exception:  # a packaging bug must not stop WebRTC viewers: HLS stops instead
            log.exception("transcoder %s: LL-HLS packaging failed, HLS off", self.broadcast)
            self.hls = None

    def _transcode(self, frame: Frame) -> dict[str, list[Frame]]:
        """Worker thread: decode once, then encode every rung of each decoded picture."""
        ts = self._unwrap(frame.ts)
        packet = av.Packet(frame.data)
        packet.pts, packet.time_base = ts, _TB
        out: dict[str, list[Frame]] = {name: [] for name in self.encoders}
        for picture in self._decoder.decode(packet):
            self.decoded += 1
            FRAMES.labels(self.broadcast).inc()
            size = (picture.width, picture.height)
            pts = ts if picture.pts is None else int(picture.pts)
            key = pts >= self._next_key or size != self.source_size
            if key:  # the first frame at or after the boundary, on every rung
                self._next_key = (pts // self.interval + 1) * self.interval
            self.source_size = size
            for name, enc in self.encoders.items():
                out[name].extend(enc.encode(picture, pts, key))
        return out

    def status(self) -> dict[str, Any]:
        w, h = self.source_size or (0, 0)
        return {"broadcast": self.broadcast,
                "source": {"width": w, "height": h} if self.source_size else None,
                "keyframeIntervalS": self.interval / VIDEO_CLOCK,
                "decoded": self.decoded, "decodeErrors": self.errors,
                "behindSeconds": round(self.behind, 4),
                "renditions": [{**self.encoders[r.name].status(),
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
    import uvicorn

    from .hls import add_routes
    from .live import create_app as live_app
    from .pull import Pull
    from .roles import broadcast_key, node_app
    from .whep import Playback

    upstream = os.environ.get("PARLEY_UPSTREAM_URL", "")
    key = broadcast_key(os.environ.get("PARLEY_BROADCAST", ""))
    if not upstream.startswith(("http://", "https://")) or not key:
        raise SystemExit("transcoder needs PARLEY_UPSTREAM_URL (a WHEP URL) and PARLEY_BROADCAST")
    try:
        rungs = rungs_from_env()
    except ValueError as exc:
        raise SystemExit(f"transcoder: {exc}") from exc
    pull = Pull(upstream, key)
    tx = Transcoder(key, pull.feed, rungs,
                    float(os.environ.get("PARLEY_KEYFRAME_INTERVAL_S", "2") or 2),
                    os.environ.get("PARLEY_X264_PRESET", "veryfast"),
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
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level="warning"))
    pull.start()
    tx.start()
    print(f"transcoder for {key} pulling {upstream}: "
          f"{', '.join(f'{r.name} ({r.bitrate_kbps} kbps)' for r in rungs)}", flush=True)
    try:
        await server.serve()
    finally:
        await playback.close()
        await tx.close()
        await pull.close()

"""Low-Latency HLS (RFC 8216bis + Apple's LL-HLS): packaging each rung the transcoder encoded
(H.264 remuxed, AAC from aac.py) into CMAF parts and segments, and the playlists that list them.

Cutting: a segment starts on each keyframe (the ladder forces one every 2 s, on the same source
frame for every rung, so segments of all rungs line up). Inside a segment, a part is closed when
the next frame would make it reach the part target (1/3 s = 10 frames at 30 fps); a part never
exceeds the target, because a frame that would overshoot starts the next part instead. A part is
published once its last frame is known (when the next frame arrives) and the audio up to its end
has come (the AAC encoder's delay: about 70 ms; at most ``AUDIO_WAIT_S``), as one fMP4 fragment
(video + that audio, muxed); a segment is the concatenation of its parts' fragments, so nothing is
muxed twice.

Window: the playlist keeps the last ``WINDOW`` segments; parts are listed (and kept) only for the
last ``PART_SEGMENTS`` segments (more than three target durations, as the spec asks) and the open
one. Older bytes are dropped from memory.

Blocking playlist reload (``_HLS_msn``/``_HLS_part``) waits on an event fired for each new part;
URLs carry a run id so a restarted packager never reuses a cached part URL. Playlist delta updates
(``_HLS_skip=YES``, RFC 8216bis 6.2.5.1): the segments older than the skip boundary (six target
durations, the least the spec allows) are replaced by one ``EXT-X-SKIP`` line, so a player that
reloads every part reads a few lines rather than the whole 24 s window.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import Response

from . import cmaf
from .sessions import SessionError
from .whip import check_name

PART_TARGET = 1 / 3  # seconds; declared with 5 decimals, rounded up
WINDOW = 12  # segments in a media playlist (24 s: twice the skip boundary, so deltas skip)
HOLD_TARGETS = 3  # a blocking reload is held at most this many target durations (6.2.5.2)
SKIP_TARGETS = 6  # CAN-SKIP-UNTIL in target durations (RFC 8216bis 4.4.3.8: at least six)
PART_SEGMENTS = 3  # complete segments whose parts stay listed (>= 3 target durations of 2 s)
AUDIO_WAIT_S = 0.25  # the longest a finished part waits for the audio up to its end
AUDIO_SKEW = cmaf.AUDIO_TIMESCALE  # audio further behind than this is off the timeline: no wait
AUDIO_BITRATE = 96000
PLAYLIST = "application/vnd.apple.mpegurl"
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Age, Date"}
IMMUTABLE = "public, max-age=31536000, immutable"
_WRAP = 1 << 32
_FILE = re.compile(r"^(?:init-(\d{1,6})\.mp4|(\d{1,9})\.m4s|(\d{1,9})\.(\d{1,4})\.m4s)$")


def _target_decimal() -> str:
    return f"{math.ceil(PART_TARGET * 1e5) / 1e5:.5f}"


@dataclass
class Part:
    msn: int
    index: int
    duration: float
    independent: bool
    data: bytes


@dataclass
class Segment:
    msn: int
    init: int  # which init segment (generation) its fragments need
    started: float  # wall clock of its first frame (EXT-X-PROGRAM-DATE-TIME)
    parts: list[Part] = field(default_factory=list)
    duration: float = 0.0
    data: bytes = b""
    complete: bool = False


@dataclass
class _Video:
    dts: int
    au: cmaf.AccessUnit
    key: bool


@dataclass
class _Closing:
    """A part whose frames are all known, to be published once its audio is in."""
    frames: list[_Video]
    end: int  # 90 kHz: where the part ends (the next frame's dts)
    end_segment: bool
    since: float  # monotonic: when its last frame became known

    @property
    def audio_limit(self) -> int:
        return self.end * cmaf.AUDIO_TIMESCALE // cmaf.VIDEO_TIMESCALE


@dataclass
class _Opening:
    """A segment starting on a keyframe, after the parts queued before it."""
    au: cmaf.AccessUnit
    size: tuple[int, int]


class Rendition:
    """One rung's LL-HLS stream: fed encoded frames, holds the window, answers playlists."""

    def __init__(self, name: str, run: str, bitrate_kbps: int, interval_s: float) -> None:
        self.name = name
        self.run = run
        self.bitrate = bitrate_kbps * 1000 + AUDIO_BITRATE
        self.interval_s = interval_s
        self.target_ticks = int(float(_target_decimal()) * cmaf.VIDEO_TIMESCALE)
        self.inits: dict[int, bytes] = {}
        self.codec = ""
        self.size = (0, 0)
        self.audio_config = b""
        self.segments: deque[Segment] = deque()
        self.open: Segment | None = None
        self.next_msn = 0
        self.discontinuities = 0  # EXT-X-DISCONTINUITY-SEQUENCE (dropped ones)
        self.target_duration = max(1, round(interval_s))
        self.peak = 0
        self._sps: tuple[bytes, bytes] | None = None
        self._pending: list[_Video] = []
        self._audio: deque[tuple[int, bytes]] = deque()
        self._audio_started = False
        self._audio_end: int | None = None  # 48 kHz: where the newest AAC frame's sound ends
        self._steps: deque[_Closing | _Opening] = deque()
        self._sequence = 0
        self._last_ts: int | None = None
        self._epoch = 0
        self._changed = asyncio.Event()

    # ---- input -------------------------------------------------------------------------

    def _unwrap(self, ts: int) -> int:
        if self._last_ts is not None and ts < self._last_ts and self._last_ts - ts > _WRAP // 2:
            self._epoch += _WRAP
        self._last_ts = ts
        return ts + self._epoch

    def audio(self, pts: int, data: bytes) -> None:
        """An AAC frame (pts at 48 kHz on the programme's audio timeline)."""
        if self.open is not None or self._pending or self._steps:
            self._audio.append((pts, data))
            self._audio_end = max(self._audio_end or 0, pts + cmaf.AAC_SAMPLES)
            self._publish()

    def video(self, annexb: bytes, ts: int, key: bool, size: tuple[int, int]) -> None:
        """An encoded frame of this rung (90 kHz timestamp, possibly wrapped)."""
        dts = self._unwrap(ts)
        if not self._pending and self.open is None and not key:
            return  # start on a keyframe
        au = cmaf.to_avcc(annexb)
        if self._pending:
            start, now = self._pending[0].dts, time.monotonic()
            if key:
                self._steps.append(_Closing(self._pending, dts, True, now))
                self._pending = []
            elif dts - start > self.target_ticks and len(self._pending) > 1:
                last = self._pending.pop()
                self._steps.append(_Closing(self._pending, last.dts, False, now))
                self._pending = [last]
            elif dts - start >= self.target_ticks - max(1, dts - self._pending[-1].dts) // 2:
                self._steps.append(_Closing(self._pending, dts, False, now))
                self._pending = []
        if key:
            self._steps.append(_Opening(au, size))
        self._pending.append(_Video(dts, au, key))
        self._publish()

    def _publish(self) -> None:
        """Carry out the queued steps in order. A part waits for the audio up to its end (the
        audio path runs on its own clock: 100+ ms behind the video on a loaded machine, and a
        part published before its audio came would push that audio into the next part), at
        most ``AUDIO_WAIT_S``: a stalled audio path must not hold the pictures back."""
        now = time.monotonic()
        while self._steps:
            step = self._steps[0]
            if isinstance(step, _Opening):
                self._start_segment(step.au, step.size)
            elif self._waits_for_audio(step, now):
                return
            else:
                self._close_part(step.frames, step.end, step.end_segment)
            self._steps.popleft()

    def _waits_for_audio(self, step: _Closing, now: float) -> bool:
        heard, limit = self._audio_end, step.audio_limit
        return (heard is not None and heard < limit and limit - heard < AUDIO_SKEW
                and now - step.since < AUDIO_WAIT_S)

    def _start_segment(self, au: cmaf.AccessUnit, size: tuple[int, int]) -> None:
        init = max(self.inits, default=0)
        if (au.sps and au.pps and (au.sps, au.pps) != self._sps) or size != self.size:
            if au.sps and au.pps:
                self._sps = (au.sps, au.pps)
            if self._sps is not None:
                init = len(self.inits)
                self.inits[init] = cmaf.init_segment(size[0], size[1], *self._sps,
                                                     self.audio_config, audio_bitrate=AUDIO_BITRATE)
                self.codec, self.size = cmaf.avc_codec(self._sps[0]), size
        self.open = Segment(self.next_msn, init, time.time())
        self.next_msn += 1

    def _close_part(self, frames: list[_Video], end: int, end_segment: bool = False) -> None:
        seg = self.open
        if seg is None or not frames:
            return
        video = [cmaf.Sample(f.au.sample, b.dts - f.dts, f.key)
                 for f, b in zip(frames, [*frames[1:], _Video(end, frames[0].au, False)],
                                 strict=True)]
        limit = end * cmaf.AUDIO_TIMESCALE // cmaf.VIDEO_TIMESCALE
        first_video = frames[0].dts * cmaf.AUDIO_TIMESCALE // cmaf.VIDEO_TIMESCALE
        audio: list[tuple[int, bytes]] = []
        while self._audio and self._audio[0][0] < limit:
            pts, data = self._audio.popleft()
            if self._audio_started or pts >= first_video:  # nothing before the first frame
                audio.append((pts, data))
                self._audio_started = True
        self._sequence += 1
        data = cmaf.fragment(self._sequence, [
            (cmaf.VIDEO_TRACK, frames[0].dts, video),
            (cmaf.AUDIO_TRACK, audio[0][0] if audio else 0,
             [cmaf.Sample(d, cmaf.AAC_SAMPLES) for _, d in audio])])
        duration = (end - frames[0].dts) / cmaf.VIDEO_TIMESCALE
        seg.parts.append(Part(seg.msn, len(seg.parts), duration, frames[0].key, data))
        seg.duration += duration
        if end_segment:
            self._finish(seg)
        self._changed.set()
        self._changed = asyncio.Event()

    def _finish(self, seg: Segment) -> None:
        seg.data = b"".join(p.data for p in seg.parts)
        seg.complete = True
        self.peak = max(self.peak, int(len(seg.data) * 8 / max(seg.duration, 0.1)))
        self.target_duration = max(self.target_duration, round(seg.duration))
        self.segments.append(seg)
        self.open = None
        while len(self.segments) > WINDOW:
            old = self.segments.popleft()
            if self.segments[0].init != old.init:
                self.discontinuities += 1
        for s in list(self.segments)[:-PART_SEGMENTS]:
            s.parts = [Part(p.msn, p.index, p.duration, p.independent, b"") for p in s.parts]

    # ---- state for requests ------------------------------------------------------------

    @property
    def last_msn(self) -> int:
        """Media sequence number of the last complete segment (-1: none yet)."""
        return self.segments[-1].msn if self.segments else -1

    def has(self, msn: int, part: int | None) -> bool:
        """Is what a blocking reload asked for in the playlist? (A part index past the end of a
        complete segment means the first part of the next one.)"""
        if part is None:
            return msn <= self.last_msn
        if msn <= self.last_msn:
            seg = self.find(msn)
            if seg is None or part < len(seg.parts):
                return True
            return self.has(msn + 1, 0)
        return self.open is not None and self.open.msn == msn and part < len(self.open.parts)

    def settled(self, msn: int, index: int) -> bool:
        """Part ``index`` of segment ``msn`` exists, or never will (its segment ended first)."""
        seg = self.find(msn)
        if seg is None:
            return msn < self.next_msn
        return index < len(seg.parts) or seg.complete

    def find(self, msn: int) -> Segment | None:
        if self.open is not None and self.open.msn == msn:
            return self.open
        return next((s for s in self.segments if s.msn == msn), None)

    def last_part(self) -> tuple[int, int]:
        """(MSN, part index) of the newest part, for rendition reports."""
        if self.open is not None and self.open.parts:
            return self.open.msn, len(self.open.parts) - 1
        if self.segments:
            return self.segments[-1].msn, len(self.segments[-1].parts) - 1
        return 0, 0

    def ready(self) -> bool:
        return bool(self.segments) or (self.open is not None and bool(self.open.parts))

    async def wait(self, done: Callable[[], bool], within: float) -> bool:
        """Wait until ``done()`` holds, checked on each new part; False after ``within`` s."""
        deadline = time.monotonic() + within
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return done()
        return True

    # ---- playlists ---------------------------------------------------------------------

    def uri(self, name: str) -> str:
        return f"{self.name}/{self.run}/{name}"

    @property
    def skip_until(self) -> int:
        """The skip boundary (CAN-SKIP-UNTIL) in seconds: six target durations."""
        return SKIP_TARGETS * self.target_duration

    def skippable(self, segs: list[Segment]) -> int:
        """How many leading segments a delta update may leave out: complete ones that start
        more than the skip boundary before the playlist's end (never one with parts listed)."""
        left = sum(s.duration for s in segs)
        n = 0
        for seg in segs:
            if not seg.complete or left <= self.skip_until or any(p.data for p in seg.parts):
                break
            left -= seg.duration
            n += 1
        return n

    def playlist(self, others: list[Rendition], skip: bool = False) -> str:
        """The media playlist; ``skip``: a delta update (``_HLS_skip=YES``)."""
        part_target = _target_decimal()
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{self.target_duration}",
                 f"#EXT-X-PART-INF:PART-TARGET={part_target}",
                 "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
                 f"CAN-SKIP-UNTIL={self.skip_until:.1f},"
                 f"PART-HOLD-BACK={math.ceil(3000 * float(part_target)) / 1000:.3f}"]
        segs = [*self.segments, *([self.open] if self.open is not None else [])]
        if not segs:
            return "\n".join(lines) + "\n"
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{segs[0].msn}")
        if self.discontinuities:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuities}")
        init: int | None = None
        skipped = self.skippable(segs) if skip else 0
        if skipped:  # the first segment after the skip gets its EXT-X-MAP again
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
            init = segs[skipped - 1].init  # a change of init right after the skip still shows
            segs = segs[skipped:]
        for i, seg in enumerate(segs):
            if init is not None and seg.init != init:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.init != init or (skipped and i == 0):
                lines.append(f'#EXT-X-MAP:URI="{self.uri(f"init-{seg.init}.mp4")}"')
            init = seg.init
            stamp = datetime.fromtimestamp(seg.started, UTC).isoformat(timespec="milliseconds")
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp.replace('+00:00', 'Z')}")
            for p in seg.parts:
                if p.data:
                    lines.append(f"#EXT-X-PART:DURATION={p.duration:.5f},"
                                 f'URI="{self.uri(f"{p.msn}.{p.index}.m4s")}"'
                                 + (",INDEPENDENT=YES" if p.independent else ""))
            if seg.complete:
                lines += [f"#EXTINF:{seg.duration:.5f},", self.uri(f"{seg.msn}.m4s")]
        msn, index = self.next_part()
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{self.uri(f"{msn}.{index}.m4s")}"')
        for other in others:
            if other is not self and other.ready():
                last_msn, last_part = other.last_part()
                lines.append(f'#EXT-X-RENDITION-REPORT:URI="{other.name}.m3u8",'
                             f"LAST-MSN={last_msn},LAST-PART={last_part}")
        return "\n".join(lines) + "\n"

    def next_part(self) -> tuple[int, int]:
        """Where the next part will most likely be: the open segment's next index, or the first
        part of the next segment when the open one is about to reach the keyframe interval."""
        seg = self.open
        if seg is None:
            return self.next_msn, 0
        if seg.duration + PART_TARGET / 2 > self.interval_s:
            return seg.msn + 1, 0
        return seg.msn, len(seg.parts)


class Ladder:
    """The LL-HLS side of one transcoder: a Rendition per rung, one run id."""

    def __init__(self, rungs: list[tuple[str, int]], interval_s: float, audio_config: bytes,
                 ) -> None:
        self.run = secrets.token_hex(4)
        self.renditions = {name: Rendition(name, self.run, kbps, interval_s)
                           for name, kbps in rungs}
        for r in self.renditions.values():
            r.audio_config = audio_config

    def audio(self, pts: int, data: bytes) -> None:
        for r in self.renditions.values():
            r.audio(pts, data)

    def multivariant(self) -> str:
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
        for r in self.renditions.values():
            w, h = r.size
            lines += [f"#EXT-X-STREAM-INF:BANDWIDTH={max(r.bitrate, r.peak)},"
                      f'RESOLUTION={w}x{h},CODECS="{r.codec},mp4a.40.2",FRAME-RATE=30.000',
                      f"{r.name}.m3u8"]
        return "\n".join(lines) + "\n"


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 9:
        raise SessionError(400, "hls_bad_request", f"{name} must be a non-negative integer")
    return int(value)


def _skip(request: Request) -> bool:
    """``_HLS_skip=YES`` asks for a delta update (``v2`` also skips date ranges: there are
    none here, so it is the same)."""
    value = request.query_params.get("_HLS_skip")
    if value is None:
        return False
    if value not in ("YES", "v2"):
        raise SessionError(400, "hls_bad_request", "_HLS_skip must be YES or v2",
                           {"Cache-Control": "no-store"})
    return True


def _playlist_response(body: str, cache: str) -> Response:
    return Response(body, media_type=PLAYLIST, headers={**CORS, "Cache-Control": cache})


def add_routes(app: FastAPI, find: Callable[[str], Ladder | None]) -> None:
    """GET /{b}/index.m3u8, /{b}/{rendition}.m3u8 and /{b}/{rendition}/{run}/{file} on ``app``
    (the /live app). ``find`` returns the broadcast's Ladder, starting it if needed."""

    def ladder_of(broadcast: str) -> Ladder:
        check_name(broadcast)
        ladder = find(broadcast)
        if ladder is None:
            raise SessionError(404, "broadcast_unknown", f"no live broadcast {broadcast} here",
                               {"Cache-Control": "no-store"})
        return ladder

    def rendition_of(ladder: Ladder, name: str) -> Rendition:
        r = ladder.renditions.get(name)
        if r is None:
            raise SessionError(404, "rendition_unknown", f"no rendition {name[:40]!r}; this "
                               f"broadcast has {', '.join(ladder.renditions)}",
                               {"Cache-Control": "no-store"})
        return r

    def unavailable(what: str) -> SessionError:
        return SessionError(503, "hls_not_ready", what, {"Retry-After": "1",
                                                         "Cache-Control": "no-store"})

    @app.get("/{broadcast}/{name}.m3u8")
    async def playlist(broadcast: str, name: str, request: Request) -> Response:
        ladder = ladder_of(broadcast)
        if name == "index":
            rs = list(ladder.renditions.values())
            if not await rs[0].wait(lambda: all(r.ready() for r in rs), 10):
                raise unavailable("the renditions have not produced a segment yet")
            return _playlist_response(ladder.multivariant(), "public, max-age=1")
        r = rendition_of(ladder, name)
        msn, part = _int(request, "_HLS_msn"), _int(request, "_HLS_part")
        skip = _skip(request)
        others = list(ladder.renditions.values())
        if msn is None:
            if part is not None:
                raise SessionError(400, "hls_bad_request", "_HLS_part needs _HLS_msn")
            if not await r.wait(r.ready, 10):
                raise unavailable(f"{name} has not produced a part yet")
            return _playlist_response(r.playlist(others, skip), "public, max-age=1")
        # RFC 8216bis 6.2.5.2: too far ahead is a client error, answered at once
        parts_per_segment = math.ceil(r.interval_s / PART_TARGET)
        if msn > r.last_msn + 2 or (part is not None and part > 2 * parts_per_segment):
            raise SessionError(400, "hls_bad_request",
                               f"_HLS_msn={msn} _HLS_part={part} is too far ahead of the "
                               f"playlist (last segment {r.last_msn})",
                               {"Cache-Control": "no-store"})
        if not await r.wait(lambda: r.has(msn, part), HOLD_TARGETS * r.target_duration):
            # a stalled source: the playlist as it is, not an error (a player keeps its
            # session and asks again; 503s would end it). Not cacheable: this URL promises more.
            if not r.ready():
                raise unavailable(f"{name} has not produced a part yet")
            return _playlist_response(r.playlist(others, skip), "no-store")
        return _playlist_response(r.playlist(others, skip),
                                  f"public, max-age={r.target_duration * HOLD_TARGETS}")

    @app.get("/{broadcast}/{name}/{run}/{file}")
    async def media(broadcast: str, name: str, run: str, file: str) -> Response:
        ladder = ladder_of(broadcast)
        r = rendition_of(ladder, name)
        m = _FILE.match(file)
        if run != r.run or m is None:
            raise SessionError(404, "hls_gone", "no such part, segment or init (wrong run: "
                               "reload the playlist)", {"Cache-Control": "no-store"})
        init, seg_msn, part_msn, part_index = m.groups()
        body = b""
        if init is not None:
            body = r.inits.get(int(init), b"")
        elif seg_msn is not None:
            msn = int(seg_msn)
            # a segment still being made is awaited like a preload hint (at most one interval)
            await r.wait(lambda: msn <= r.last_msn or msn > r.next_msn, r.interval_s + 1)
            seg = r.find(msn)
            body = seg.data if seg is not None and seg.complete else b""
        else:
            msn, index = int(part_msn), int(part_index)
            if r.open is not None and r.open.msn <= msn <= r.next_msn and index <= 2 * math.ceil(
                    r.interval_s / PART_TARGET):  # a preload hint: answered when it is there
                await r.wait(lambda: r.settled(msn, index), 3 * PART_TARGET + 1)
            seg = r.find(msn)
            if seg is not None and index < len(seg.parts):
                body = seg.parts[index].data
        if not body:
            raise SessionError(404, "hls_gone", f"{file} is not (or no longer) in the window",
                               {"Cache-Control": "no-store"})
        kind = "video/mp4" if init is not None else "video/iso.segment"
        return Response(body, media_type=kind, headers={**CORS, "Cache-Control": IMMUTABLE})

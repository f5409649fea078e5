"""`parley media-node --role recorder`: the broadcast archived, as it runs, into the recording
store (the one meeting recordings use: a folder in `parley up`, S3 in a deployment).

Design: the recorder is one more LL-HLS client. It follows a rung's media playlist (blocking
reload on the next segment, so no busy polling) and copies each *complete* CMAF segment and its
init, byte for byte, into ``recordings/<id>/files/<rendition>/``: no decode, no encode, no remux.
At the end (the upstream produced nothing for ``PARLEY_RECORDER_IDLE_S`` or the process is told to
stop) it adds the open segment's published parts as a last, shorter segment, writes a VOD
playlist (``EXT-X-PLAYLIST-TYPE:VOD``, ``EXT-X-ENDLIST``) per rendition and ``programme.mp4``
(init + the segments, concatenated: fMP4 is a valid MP4) and ``index.m3u8`` (the multivariant
playlist over every archived rung: BANDWIDTH, RESOLUTION, CODECS), and marks the manifest ready: the
archive is then listed and notified like a meeting recording (``recordings/<id>/manifest.json``,
room ``broadcast:{b}``, the same webhook).

Crash safety: every object is written whole (rename / PUT) and its key carries everything the
playlist needs: ``{n:08d}_{run}_{msn}_{init}_{duration us}.m4s`` (archive number, the upstream
packager's run id and media sequence number, the archive's init, the duration). So the store *is*
the state: a restarted recorder lists the keys, finds the last upstream (run, msn) it has and goes
on from the next one, which the upstream still holds (its window is 12 segments, 24 s). A SIGKILL
loses the segment being copied at most, and in practice nothing when the restart comes within the
window; where the upstream sequence really has a hole (a longer outage, a restarted transcoder)
the VOD playlist says ``EXT-X-DISCONTINUITY``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from parley import reports
from parley.recorder import state, webhook
from parley.recorder.store import LocalStore, S3Store, Store, default_store_url, open_store
from parley.tokens import broadcast_room

from . import cmaf

log = logging.getLogger("parley.media.broadcast.recorder")
KIND = "broadcast"
PROGRAMME_FILE = "programme.mp4"
INDEX_FILE = "index.m3u8"  # the multivariant VOD playlist over every archived rung
_KEY = re.compile(r"^(\d{8})_([0-9a-f]+)_(\d+)_(\d+)_(\d+)\.m4s$")
_URI = re.compile(r"([^/]+)/(\d+)\.m4s$")
_PART = re.compile(r"([^/]+)/(\d+)\.(\d+)\.m4s$")


@dataclass(frozen=True)
class Archived:
    """One segment in the archive, as its key names it."""

    n: int
    run: str
    msn: int
    init: int
    duration_us: int

    @property
    def key(self) -> str:
        return f"{self.n:08d}_{self.run}_{self.msn}_{self.init}_{self.duration_us}.m4s"

    @classmethod
    def parse(cls, name: str) -> Archived | None:
        m = _KEY.match(name)
        if m is None:
            return None
        n, run, msn, init, dur = m.groups()
        return cls(int(n), run, int(msn), int(init), int(dur))

    def follows(self, prev: Archived | None) -> bool:
        """Continuous with ``prev`` (same packager run, next segment, same init)?"""
        return prev is not None and (prev.run, prev.msn + 1, prev.init) == (
            self.run, self.msn, self.init)


@dataclass
class Upstream:
    """What a media playlist says: complete segments and the open segment's parts."""

    segments: list[tuple[str, int, float, str]]  # (run, msn, duration, init uri)
    parts: list[tuple[str, int, int, float, str]]  # (run, msn, index, duration, init uri)
    started: dict[tuple[str, int], float]  # (run, msn) -> EXT-X-PROGRAM-DATE-TIME (unix s)


def parse_playlist(text: str) -> Upstream:
    segments: list[tuple[str, int, float, str]] = []
    parts: list[tuple[str, int, int, float, str]] = []
    started: dict[tuple[str, int], float] = {}
    init, duration, stamp = "", 0.0, None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            init = line.split('URI="', 1)[1].split('"', 1)[0]
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            with contextlib.suppress(ValueError):
                stamp = dt.datetime.fromisoformat(line[25:].replace("Z", "+00:00")).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line.startswith("#EXT-X-PART:"):
            uri = line.split('URI="', 1)[1].split('"', 1)[0]
            dur = float(line.split("DURATION=", 1)[1].split(",", 1)[0])
            m = _PART.search(uri)
            if m is not None:
                parts.append((m.group(1), int(m.group(2)), int(m.group(3)), dur, init))
        elif line and not line.startswith("#"):
            m = _URI.search(line)
            if m is not None:
                segments.append((m.group(1), int(m.group(2)), duration, init))
                parts = [p for p in parts if (p[0], p[1]) != (m.group(1), int(m.group(2)))]
                if stamp is not None:
                    started[(m.group(1), int(m.group(2)))] = stamp
            stamp = None
    return Upstream(segments, parts, started)


class RenditionArchive:
    """One rung's segments in the store: resumed from the keys, extended from the upstream."""

    def __init__(self, store: Store, recording: str, rendition: str, url: str) -> None:
        self.store, self.rendition, self.url = store, rendition, url
        self.prefix = f"recordings/{recording}/files/{rendition}/"
        self.segments: list[Archived] = []
        self.inits: dict[int, bytes] = {}
        self.upstream_inits: dict[str, int] = {}  # upstream init URL -> archive init
        self.sizes: dict[int, int] = {}  # archive number -> bytes (this process's copies)
        self.gaps = 0
        # the upstream's wall clock at the end of the last segment this process copied
        # (EXT-X-PROGRAM-DATE-TIME + duration): how long the upstream was really idle after it
        self.last_end: float | None = None

    def load(self) -> None:
        """What an earlier run of this recording (a killed recorder) left in the store."""
        for key in self.store.list(self.prefix):
            name = key[len(self.prefix):]
            a = Archived.parse(name)
            if a is not None:
                self.segments.append(a)
            elif name.startswith("init-") and name.endswith(".mp4"):
                self.inits[int(name[5:-4])] = self.store.get(key)
        self.segments.sort(key=lambda a: a.n)

    @property
    def last(self) -> Archived | None:
        return self.segments[-1] if self.segments else None

    async def _init(self, http: httpx.AsyncClient, uri: str) -> int:
        """The archive's init for an upstream init URL: an identical one is reused (a restarted
        recorder, a restarted transcoder with the same encoder settings)."""
        if uri in self.upstream_inits:
            return self.upstream_inits[uri]
        r = await http.get(urljoin(self.url, uri))
        r.raise_for_status()
        same = [k for k, v in self.inits.items() if v == r.content]
        if same:
            k = max(same)
        else:
            k = max(self.inits, default=-1) + 1
            await asyncio.to_thread(self.store.put, f"{self.prefix}init-{k}.mp4", r.content)
            self.inits[k] = r.content
        self.upstream_inits[uri] = k
        return k

    async def copy(self, http: httpx.AsyncClient, up: Upstream, after: Archived | None) -> int:
        """Copy every complete upstream segment newer than the last archived one (or ``after``,
        the end of the previous recording); returns how many."""
        last = self.last or after
        copied = 0
        for run, msn, duration, init_uri in up.segments:
            if last is not None and run == last.run and msn <= last.msn:
                continue
            r = await http.get(urljoin(self.url, f"{self.rendition}/{run}/{msn}.m4s"))
            if r.status_code == 404:
                continue  # slid out of the window meanwhile: a gap
            r.raise_for_status()
            init = await self._init(http, init_uri)
            a = Archived(self.last.n + 1 if self.last else 0, run, msn, init,
                         round(duration * 1e6))
            await asyncio.to_thread(self.store.put, self.prefix + a.key, r.content)
            self.sizes[a.n] = len(r.content)
            if self.last is not None and not a.follows(self.last):
                self.gaps += 1
            self.segments.append(a)
            stamp = up.started.get((run, msn))
            self.last_end = None if stamp is None else stamp + duration
            last = a
            copied += 1
        return copied

    async def tail(self, http: httpx.AsyncClient, up: Upstream) -> None:
        """The open segment's published parts as a last segment (the end is not on a keyframe
        boundary, so without this up to one segment interval would be lost at every end)."""
        last = self.last
        parts = [p for p in up.parts if last is None or p[0] != last.run or p[1] > last.msn]
        if not parts or parts[0][2] != 0 or any(p[:2] != parts[0][:2] for p in parts):
            log.info("%s: no tail (%d parts after segment %s)", self.rendition, len(parts),
                     last.msn if last else None)
            return
        data = b""
        for run, msn, index, _, _ in parts:
            r = await http.get(urljoin(self.url, f"{self.rendition}/{run}/{msn}.{index}.m4s"))
            if r.status_code != 200:
                return
            data += r.content
        run, msn, _, _, init_uri = parts[0]
        a = Archived(last.n + 1 if last else 0, run, msn, await self._init(http, init_uri),
                     round(sum(p[3] for p in parts) * 1e6))
        await asyncio.to_thread(self.store.put, self.prefix + a.key, data)
        self.sizes[a.n] = len(data)
        self.segments.append(a)

    def idle_before(self, up: Upstream, target_s: float) -> float | None:
        """How long the upstream made nothing between the last segment this process copied and
        the first newer one ``up`` lists, by the upstream's own clock (its segments' program
        date-times), so a recorder that was frozen or cut off does not count its own absence:
        segments it missed (slid out of the window) are allowed ``target_s`` each. None when
        nothing tells (no newer segment, no date-time, nothing copied by this process)."""
        last = self.last
        if last is None or self.last_end is None:
            return None
        newer = [s for s in up.segments if s[0] != last.run or s[1] > last.msn]
        if not newer:
            return None
        run, msn = newer[0][:2]
        stamp = up.started.get((run, msn))
        if stamp is None:
            return None
        missed = msn - last.msn - 1 if run == last.run else 0
        return stamp - self.last_end - missed * target_s

    def vod_playlist(self) -> str:
        """RFC 8216bis VOD playlist over what is archived (URIs relative to the playlist)."""
        target = max((round(a.duration_us / 1e6) for a in self.segments), default=1)
        lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{max(1, target)}",
                 "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-MEDIA-SEQUENCE:0",
                 "#EXT-X-INDEPENDENT-SEGMENTS"]
        prev: Archived | None = None
        for a in self.segments:
            if prev is not None and not a.follows(prev):
                lines.append("#EXT-X-DISCONTINUITY")
            if prev is None or prev.init != a.init:
                lines.append(f'#EXT-X-MAP:URI="init-{a.init}.mp4"')
            lines += [f"#EXTINF:{a.duration_us / 1e6:.5f},", a.key]
            prev = a
        return "\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n"

    def duration(self) -> float:
        return sum(a.duration_us for a in self.segments) / 1e6

    def stream_inf(self) -> tuple[int, str]:
        """This rung's ``EXT-X-STREAM-INF`` for the recording's multivariant playlist (blocking:
        a segment copied by an earlier, killed process is read back for its size).
        BANDWIDTH is the peak segment bit rate (RFC 8216bis 4.4.6.2), AVERAGE-BANDWIDTH the
        whole rung's; RESOLUTION the largest init's picture, CODECS read from the first init."""
        for a in self.segments:
            if a.n not in self.sizes:
                self.sizes[a.n] = len(self.store.get(self.prefix + a.key))
        rates = [self.sizes[a.n] * 8e6 / a.duration_us for a in self.segments
                 if a.duration_us >= 500_000]  # a short tail segment says little of the peak
        total = sum(self.sizes[a.n] for a in self.segments) * 8 / max(self.duration(), 0.001)
        described = [cmaf.describe_init(self.inits[k]) for k in sorted(self.inits)]
        width, height = max((w, h) for _, w, h in described)
        return height, (f"#EXT-X-STREAM-INF:BANDWIDTH={math.ceil(max(rates, default=total))},"
                        f"AVERAGE-BANDWIDTH={math.ceil(total)},RESOLUTION={width}x{height},"
                        f'CODECS="{described[0][0]},mp4a.40.2"')

    def write_mp4(self, key: str) -> int:
        """init + every segment of the first init, concatenated (bytes copied, not remuxed):
        one file any player opens. Segments after a size change (another init) are only in the
        HLS archive. Returns the segments included."""
        if not self.segments:
            return 0
        first = self.segments[0].init
        chosen = [a for a in self.segments if a.init == first]
        with tempfile.NamedTemporaryFile(prefix="parley-brec-", suffix=".mp4") as tmp:
            tmp.write(self.inits[first])
            for a in chosen:
                tmp.write(self.store.get(self.prefix + a.key))
            tmp.flush()
            self.store.put_file(key, Path(tmp.name))
        return len(chosen)


class BroadcastRecorder:
    """Records one broadcast: one RenditionArchive per archived rung, one manifest."""

    def __init__(self, store: Store, broadcast: str, urls: dict[str, str], *,
                 idle_s: float = 20.0, notify: webhook.Webhook | None = None,
                 link_secret: str = "", public_url: str = "", link_ttl_s: int = 86400,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport``: `parley up` reads its own /live app in-process (no socket)."""
        self.store, self.broadcast, self.urls = store, broadcast, urls
        self.transport = transport
        self.idle_s, self.webhook = idle_s, notify
        self.link_secret, self.public_url, self.link_ttl_s = link_secret, public_url, link_ttl_s
        self.room = broadcast_room(broadcast)
        self.manifest: dict[str, Any] | None = None
        self.archives: dict[str, RenditionArchive] = {}
        self.after: dict[str, Archived | None] = {}
        self.finished: list[dict[str, Any]] = []
        self.stopping = asyncio.Event()
        self.error: str | None = None  # the last failure (shown in the status)
        self.error_at: float | None = None
        self.archived_at: float | None = None  # wall time of this process's last copy
        self._task: asyncio.Task[None] | None = None

    # ---- the recording's manifest ------------------------------------------------------

    def _resume(self) -> None:
        """The running recording of this broadcast left by a killed recorder, if any; else
        remember where the last finished one ended, so it is not recorded twice."""
        found = [m for m in state.for_room(self.store, self.room) if m.get("kind") == KIND]
        self.after = {r: None for r in self.urls}
        done = [m for m in found if m["state"] != "recording"]
        for m in [*done[-1:], *(m for m in found if m["state"] == "recording")]:
            archives = {r: RenditionArchive(self.store, m["id"], r, u)
                        for r, u in self.urls.items()}
            for a in archives.values():
                a.load()
            if m["state"] == "recording":
                self.manifest, self.archives = m, archives
                log.info("broadcast %s: resuming recording %s", self.broadcast, m["id"])
            else:
                self.after = {r: a.last for r, a in archives.items()}

    def _open(self) -> None:
        m = state.new(self.room, "recorder")
        m.update(kind=KIND, broadcast=self.broadcast, renditions=list(self.urls))
        state.save(self.store, m)
        self.manifest = m
        self.archives = {r: RenditionArchive(self.store, m["id"], r, u)
                         for r, u in self.urls.items()}
        log.info("broadcast %s: recording %s started", self.broadcast, m["id"])

    # ---- running -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def close(self) -> None:
        """Stop (SIGTERM, the broadcast deleted): finish the recording in progress."""
        self.stopping.set()
        if self._task is not None:
            await self._task

    async def run(self) -> None:
        await asyncio.to_thread(self._resume)
        async with httpx.AsyncClient(timeout=15, transport=self.transport) as http:
            while not self.stopping.is_set():
                try:
                    restarted = await self._record(http)
                    if self.manifest is not None:
                        await self._finish(http, copy_rest=not restarted)
                except Exception as exc:  # the store or upstream failing: retry, never die
                    log.exception("broadcast %s: recording failed, retrying", self.broadcast)
                    self.error, self.error_at = f"{type(exc).__name__}: {exc}", time.time()
                    await self._wait(asyncio.sleep(1))

    async def _fetch(self, http: httpx.AsyncClient, rendition: str) -> Upstream | None:
        """The playlist, waiting (blocking reload) for the segment after the last archived."""
        url = self.urls[rendition]
        a = self.archives.get(rendition)
        last = (a.last if a is not None else None) or self.after.get(rendition)
        try:
            if last is not None:  # unchanged after 3 target durations, 400 for another run
                r = await http.get(url, params={"_HLS_msn": last.msn + 1})
                up = parse_playlist(r.text) if r.status_code == 200 else None
                if up is not None and any(s[0] == last.run for s in up.segments):
                    return up
            r = await http.get(url)  # a new run (restarted transcoder) or nothing yet
        except httpx.HTTPError as exc:
            log.debug("%s: %s", url, exc)
            return None
        return parse_playlist(r.text) if r.status_code == 200 else None

    async def _record(self, http: httpx.AsyncClient) -> bool:
        """Copy segments until this broadcast run ends or we are stopped. The run ends when
        the upstream made nothing for ``idle_s``: by this process's clock, confirmed by a fresh
        read (the clock also ran while the recorder was frozen or cut off, and the broadcast may
        have gone on meanwhile: then the same recording goes on, the missed stretch behind an
        EXT-X-DISCONTINUITY); or by the upstream's own clock, when the next segment's program
        date-time is more than ``idle_s`` after the last one archived (the broadcast stopped and
        started again while the recorder was not watching). True in that last case: the new
        segments are the next recording's."""
        quiet_since = time.monotonic()
        first = next(iter(self.urls))
        while not self.stopping.is_set():
            up = await self._wait(self._fetch(http, first))
            if up is None and self.stopping.is_set():
                return False
            ups = {first: up}
            for r in list(self.urls)[1:]:
                ups[r] = await self._fetch(http, r)
            fresh = [u for r, u in ups.items() if u is not None and self._new(r, u)]
            if fresh:
                if self.manifest is None:
                    await asyncio.to_thread(self._open)
                elif up is not None and self._restarted(up):
                    return True
                for r, u in ups.items():
                    if u is not None:
                        try:
                            if await self.archives[r].copy(http, u, self.after.get(r)):
                                self.archived_at = time.time()
                        except httpx.HTTPError as exc:
                            log.warning("broadcast %s %s: %s", self.broadcast, r, exc)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > self.idle_s and self.manifest is not None:
                if not await self._wait(self._went_on(http, first)):
                    return False
                quiet_since = time.monotonic()  # it did: the next round copies
            elif up is None or not fresh:
                await self._wait(asyncio.sleep(0.5))
        return False

    async def _went_on(self, http: httpx.AsyncClient, rendition: str) -> bool:
        """A fresh, plain read of the upstream: does it have segments newer than ours?"""
        try:
            r = await http.get(self.urls[rendition], timeout=5)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and self._new(rendition, parse_playlist(r.text))

    def _restarted(self, up: Upstream) -> bool:
        """The programme's next segment starts a new broadcast run (see :meth:`_record`)."""
        a = self.archives.get(next(iter(self.urls)))
        if a is None or not a.segments:
            return False
        target = max(x.duration_us for x in a.segments) / 1e6
        idle = a.idle_before(up, target)
        if idle is None or idle <= self.idle_s:
            return False
        log.info("broadcast %s: the upstream was idle %.1f s before its next segment: a new "
                 "run, a new recording", self.broadcast, idle)
        return True

    def _new(self, rendition: str, up: Upstream) -> bool:
        a = self.archives.get(rendition)
        last = (a.last if a is not None else None) or self.after.get(rendition)
        return any(last is None or s[0] != last.run or s[1] > last.msn for s in up.segments)

    async def _wait(self, aw: Any) -> Any:
        """``aw`` or None when stopped first (SIGTERM does not wait for a blocking reload)."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return None

    async def _finish(self, http: httpx.AsyncClient, copy_rest: bool = True) -> None:
        """The last parts (unless the upstream's next segments are another run's), the VOD
        playlists, programme.mp4, the manifest ready, the webhook."""
        m = self.manifest
        assert m is not None
        for r, a in self.archives.items() if copy_rest else ():
            with contextlib.suppress(httpx.HTTPError):
                r_ = await http.get(self.urls[r], timeout=3)
                if r_.status_code == 200:
                    up = parse_playlist(r_.text)
                    await a.copy(http, up, self.after.get(r))
                    await a.tail(http, up)
        programme = self.archives[next(iter(self.urls))]

        def write() -> dict[str, Any]:
            for a in self.archives.values():
                self.store.put(f"{a.prefix}playlist.m3u8", a.vod_playlist().encode())
            self.store.put(f"recordings/{m['id']}/files/{INDEX_FILE}", self.index().encode())
            included = programme.write_mp4(f"recordings/{m['id']}/files/{PROGRAMME_FILE}")
            m.update(state="ready", progress=1.0, stoppedAt=time.time(), stoppedBy="recorder",
                     duration=round(programme.duration(), 3),
                     files={"composite": PROGRAMME_FILE, "tracks": []},
                     hls={r: f"{r}/playlist.m3u8" for r in self.archives},
                     hlsIndex=INDEX_FILE,
                     segments={r: len(a.segments) for r, a in self.archives.items()},
                     seconds={r: round(a.duration(), 3) for r, a in self.archives.items()},
                     discontinuities={r: sum(1 for x, y in zip(a.segments, a.segments[1:],
                                                               strict=False) if not y.follows(x))
                                      for r, a in self.archives.items()},
                     programmeSegments=included)
            state.save(self.store, m)
            return m

        if any(a.segments for a in self.archives.values()):
            done = await asyncio.to_thread(write)
        else:
            m.update(state="failed", error="no segment was archived", stoppedAt=time.time())
            done = m
            await asyncio.to_thread(state.save, self.store, m)
        log.info("broadcast %s: recording %s %s, %.1f s", self.broadcast, m["id"],
                 m["state"], m.get("duration") or 0)
        self.after = {r: a.last for r, a in self.archives.items()}
        self.finished.append(done)
        self.manifest, self.archives = None, {}
        await self._notify(done)

    def index(self) -> str:
        """The recording's multivariant VOD playlist: every archived rung, tallest first,
        URIs relative to ``files/`` (so the folder plays as it is from a bucket or a CDN)."""
        lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
        rungs = sorted(((*a.stream_inf(), r) for r, a in self.archives.items() if a.segments),
                       key=lambda x: -x[0])
        for _, inf, r in rungs:
            lines += [inf, f"{r}/playlist.m3u8"]
        return "\n".join(lines) + "\n"

    async def _notify(self, m: dict[str, Any]) -> None:
        """The webhook a meeting recording's ``recording.ready`` goes to, with the same JSON."""
        if self.webhook is None or m["state"] != "ready":
            return
        from parley.signaling.recordings.notify import public_view

        body = {"type": "recording.ready", **public_view(m, self.link_secret, self.public_url,
                                                         self.link_ttl_s)}
        await webhook.send(self.webhook.url, self.webhook.secret, body)

    def report(self) -> dict[str, Any]:
        """What this recorder archives, in the shape of the Broadcast's ``status.recording``
        (:func:`parley.reports.recording_view`): ``state`` ``waiting`` (nothing archived yet
        by this recorder), ``recording``, or the last finished recording's ``ready``/``failed``;
        ``id``, ``segments`` and ``seconds`` of the programme rung, ``renditions`` (each rung's,
        when several are recorded), ``location`` (the recording's files in the store),
        ``lastSegmentAt`` and ``error`` (a failure newer than the last segment copied)."""
        programme = next(iter(self.urls))
        out: dict[str, Any] = {"state": "waiting", "rendition": programme}
        counts: dict[str, tuple[int, float]] = {}
        if self.manifest is not None:
            counts = {r: (len(a.segments), round(a.duration(), 3))
                      for r, a in self.archives.items()}
            out.update(state="recording", id=self.manifest["id"])
        elif self.finished:
            done = self.finished[-1]
            seconds = done.get("seconds") or {programme: float(done.get("duration") or 0.0)}
            counts = {r: (int((done.get("segments") or {}).get(r, 0)), float(seconds.get(r, 0)))
                      for r in self.urls}
            out.update(state=done["state"], id=done["id"])
            if done.get("error"):
                out["error"] = str(done["error"])
        if "id" in out:
            out["segments"], out["seconds"] = counts.get(programme, (0, 0.0))
            if len(self.urls) > 1:
                out["renditions"] = [{"name": r, "segments": n, "seconds": sec}
                                     for r, (n, sec) in counts.items()]
            out["location"] = f"{self.store.url.rstrip('/')}/recordings/{out['id']}/files/"
        if self.archived_at is not None:
            out["lastSegmentAt"] = rfc3339(self.archived_at)
        if self.error and (self.archived_at is None or (self.error_at or 0) > self.archived_at):
            out.setdefault("error", self.error)
        return out


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def urls_from_env(broadcast: str) -> dict[str, str]:
    """PARLEY_UPSTREAM_URL: a media playlist URL (``.../live/{b}/{rendition}.m3u8``, with
    ``{rendition}`` for several); PARLEY_RECORD_RENDITIONS (``720p,360p``; the first is the
    programme file) else PARLEY_RENDITION."""
    upstream = os.environ.get("PARLEY_UPSTREAM_URL", "")
    names = [r for r in (os.environ.get("PARLEY_RECORD_RENDITIONS") or
                         os.environ.get("PARLEY_RENDITION") or "").split(",") if r]
    if not upstream.startswith(("http://", "https://")) or not broadcast:
        raise SystemExit("recorder needs PARLEY_UPSTREAM_URL (an LL-HLS media playlist URL) "
                         "and PARLEY_BROADCAST")
    if not names:
        m = re.search(r"/([^/]+)\.m3u8$", upstream)
        if m is None or "{rendition}" in upstream:
            raise SystemExit("recorder needs PARLEY_RECORD_RENDITIONS with a {rendition} URL")
        names = [m.group(1)]
    return {r: upstream.replace("{rendition}", r) for r in names}


def store_from_env() -> LocalStore | S3Store:
    """The meeting recordings' store: PARLEY_RECORDING_STORE (``file://`` or ``s3://`` with
    PARLEY_S3_*), else ``$PARLEY_DATA_DIR/recordings``."""
    return open_store(default_store_url(Path(os.environ.get("PARLEY_DATA_DIR") or "var")))


def recorder_from_env(broadcast: str, urls: dict[str, str], store: Store | None = None
                      ) -> BroadcastRecorder:
    env = os.environ.get
    return BroadcastRecorder(store or store_from_env(), broadcast, urls,
                             idle_s=float(env("PARLEY_RECORDER_IDLE_S") or 20),
                             notify=webhook.from_env(),
                             link_secret=env("PARLEY_TOKEN_SECRET") or "",
                             public_url=env("PARLEY_PUBLIC_URL") or "",
                             link_ttl_s=int(env("PARLEY_RECORDING_LINK_TTL_S") or 86400))


async def serve_recorder(args: argparse.Namespace) -> None:
    """The role: records until SIGTERM; /livez, /readyz, /metrics, /v1/status."""
    from fastapi import FastAPI

    from .roles import broadcast_key, node_app
    from .serving import serve_role

    logging.basicConfig(level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    key = broadcast_key(os.environ.get("PARLEY_BROADCAST", ""))
    urls = urls_from_env(key)
    rec = recorder_from_env(key, urls)
    live = FastAPI()
    live.add_api_route("/" + key, rec.report, methods=["GET"])
    app = node_app(live)
    app.add_api_route("/v1/status", rec.report, methods=["GET"])

    from .recorder_report import RecorderReport

    rec.start()
    report = RecorderReport.from_env(rec, key)  # in a pod: what it archives, to the operator
    if report is not None:
        report.start()
    print(f"recorder for {key} into {rec.store.url}: {', '.join(urls.values())}", flush=True)

    async def close() -> None:
        await rec.close()
        if report is not None:
            await report.stop()  # the last report: the recording ready

    # SIGTERM ends the recording (serving.py); a failed start-up: it resumes next time
    await serve_role(app, args.host, args.port, close)


def embed(live: Any, ingest: Any, ladder: list[Any], app: Any) -> None:
    """`parley up`: ``PUT /live/{b}/recording {"enabled": true|false}`` with an admin token of
    ``b`` starts/stops a recorder of the top rung (``"renditions": "all"``: every rung) into
    the meeting recordings' store; ``GET /live/{b}/recording`` shows it. The recorder reads the
    /live app's own LL-HLS in-process (the same code as the role, without a socket)."""
    from fastapi import Body, Header
    from fastapi.responses import JSONResponse

    from .sessions import SessionError
    from .whip import check_name

    recorders: dict[str, BroadcastRecorder] = {}
    transport = httpx.ASGITransport(app=live)

    def store() -> Store:
        hub = getattr(app.state, "hub", None)
        rec = getattr(hub, "recordings", None)
        return rec.store if rec is not None else store_from_env()

    def view(b: str) -> JSONResponse:
        """The Broadcast's ``status.recording`` shape (``{}``: no recorder ever ran here)."""
        r = recorders.get(b)
        return JSONResponse(reports.recording_view(r.report()) if r is not None else {},
                            headers={"Cache-Control": "no-store"})

    @live.put("/{broadcast}/recording")
    async def recording(broadcast: str, body: dict[str, Any] = Body(...),  # noqa: B008
                        authorization: str | None = Header(None)) -> JSONResponse:
        check_name(broadcast)
        ingest.authorize(broadcast, (authorization or "").removeprefix("Bearer ").strip(),
                         "admin")
        enabled, which = body.get("enabled"), body.get("renditions", "top")
        if not isinstance(enabled, bool) or which not in ("top", "all"):
            raise SessionError(400, "bad_request", 'send {"enabled": true|false, '
                               '"renditions": "top"|"all"}')
        current = recorders.get(broadcast)
        if enabled and (current is None or current.stopping.is_set()):
            if ingest.programme(broadcast) is None:
                raise SessionError(404, "broadcast_unknown", f"no live broadcast {broadcast}")
            top = max(ladder, key=lambda r: r.height)
            names = [r.name for r in ladder] if which == "all" else [top.name]
            env = os.environ.get
            recorders[broadcast] = BroadcastRecorder(
                store(), broadcast, {n: f"http://parley-up/{broadcast}/{n}.m3u8" for n in names},
                idle_s=float(env("PARLEY_RECORDER_IDLE_S") or 20), notify=webhook.from_env(),
                link_secret=ingest.secret, public_url=env("PARLEY_PUBLIC_URL") or "",
                transport=transport)
            recorders[broadcast].start()
        elif not enabled and current is not None:
            await current.close()
        return view(broadcast)

    @live.get("/{broadcast}/recording")
    async def recording_status(broadcast: str) -> JSONResponse:
        check_name(broadcast)
        return view(broadcast)

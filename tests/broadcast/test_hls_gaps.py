"""LL-HLS across source gaps, through the real roles: the camera of an aiortc WHIP publisher stops
for 1.0 s and later for 2.2 s (no frame sent; the next one stamped with the time it was really
taken, so RTP time jumps like a stalled camera or uplink) while its microphone goes on. The
transcoder repeats the last picture on the programme's timeline across each gap, so:

- the playlists, read on every reload with the independent ``m3u8`` parser, keep every EXT-X-PART
  within PART-TARGET and every EXTINF within TARGETDURATION, which never changes (RFC 8216bis
  4.4.3.1, 4.4.4.9); INDEPENDENT exactly on parts that start with a keyframe;
- ffprobe (tfdt timestamps) reads one continuous timeline per rung, as long as the playlist says,
  AAC without a hole;
- the media timeline keeps pace with the wall clock (nothing of the gaps left out);
- the rungs of one process, and two transcoder processes (the operator's one per rendition), cut
  segments of the same numbers and the same durations (ABR switches on them)."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import m3u8

from tests.broadcast.clients import Publisher
from tests.broadcast.test_hls import LADDER, probe
from tests.broadcast.test_parley_up import SECRET, key
from tests.broadcast.test_transcoder import CounterVideo, Start
from tests.broadcast.test_transcoder import transcoder as transcoder  # the fixture
from tests.conftest import eventually

PAUSES = {90: 1.0, 240: 2.2}  # source frame number: seconds the camera stops before it
RUNGS = ("180p", "120p")


class PausingCamera(CounterVideo):
    """CounterVideo at 30 fps that stops before the frames named in ``pauses``; the frame after a
    pause carries the time it was really taken (the RTP timestamp jumps by the pause)."""

    def __init__(self, pauses: dict[int, float]) -> None:
        super().__init__()
        self.pauses = pauses
        self.started: float | None = None
        self.at = 0.0
        self.resumed: list[float] = []  # monotonic time each pause ended

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        now = time.monotonic()
        if self.started is None:
            self.started = self.at = now
        else:
            self.at += 1 / 30 + self.pauses.get(self.n, 0.0)
        await asyncio.sleep(max(0.0, self.at - now))
        if self.n in self.pauses:
            self.resumed.append(time.monotonic())
        return round((self.at - self.started) * 90000), fractions.Fraction(1, 90000)


async def publish_pausing(base: str, camera: PausingCamera) -> Publisher:
    cam = Publisher(base, "final", key("final", "cam1"), (320, 240))
    cam.pc.getTransceivers()[0].sender.replaceTrack(camera)
    r = await cam.publish()
    assert r.status_code == 201, r.text
    return cam


@dataclass
class Seen:
    """What a viewer of one rendition saw over every reload of its live playlist."""

    targets: set[tuple[int, float]] = field(default_factory=set)
    sequences: list[int] = field(default_factory=list)
    init: str = ""
    parts: dict[str, tuple[int, float, bool]] = field(default_factory=dict)  # uri: msn, s, indep.
    bodies: dict[str, bytes] = field(default_factory=dict)
    segments: dict[int, tuple[float, datetime]] = field(default_factory=dict)  # msn: EXTINF, PDT

    def check_playlists(self, rung: str) -> None:
        assert len(self.targets) == 1, self.targets  # TARGETDURATION and PART-TARGET never change
        ((target, part_target),) = self.targets
        assert target == 2 and 0.2 <= part_target <= 0.334
        assert self.sequences == sorted(self.sequences), self.sequences
        long_parts = {u: d for u, (_, d, _) in self.parts.items() if not 0 < d <= part_target}
        assert not long_parts, (rung, long_parts)
        assert all(round(d) <= target for d, _ in self.segments.values()), self.segments


async def _watch(http: httpx.AsyncClient, url: str, seen: Seen) -> None:
    """One reload of the media playlist at ``url``; fetches every part not seen yet."""
    pl = m3u8.loads((await http.get(url)).text)
    if not pl.segments:
        return
    seen.targets.add((pl.target_duration, pl.part_inf.part_target))
    seen.sequences.append(pl.media_sequence)
    base = url.rsplit("/", 1)[0]
    for i, seg in enumerate(pl.segments):
        msn = pl.media_sequence + i
        if seg.init_section is not None and not seen.init:
            seen.init = f"{base}/{seg.init_section.uri}"
        for p in seg.parts:
            if p.uri not in seen.parts:
                seen.parts[p.uri] = (msn, p.duration, p.independent == "YES")
                r = await http.get(f"{base}/{p.uri}")
                assert r.status_code == 200, (p.uri, r.status_code)
                seen.bodies[p.uri] = r.content
        if seg.uri:
            seen.segments[msn] = (seg.duration, seg.program_date_time)


async def _watch_through_pauses(urls: dict[str, str], camera: PausingCamera) -> dict[str, Seen]:
    """Reload every playlist every 0.25 s until both pauses are over and 8 s more went by."""
    seen = {rung: Seen() for rung in urls}
    async with httpx.AsyncClient(timeout=20) as http:
        while len(camera.resumed) < len(PAUSES) or time.monotonic() < camera.resumed[-1] + 8:
            for rung, url in urls.items():
                await _watch(http, url, seen[rung])
            await asyncio.sleep(0.25)
            assert camera.n < 900, "the camera's pauses never came"
    return seen


async def test_a_source_gap_keeps_parts_within_the_part_target_and_the_timeline_continuous(
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET, "PARLEY_BROADCAST_LADDER": LADDER})
    camera = PausingCamera(PAUSES)
    cam = await publish_pausing(base, camera)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            assert (await http.get("/live/final/index.m3u8")).status_code == 200
        seen = await _watch_through_pauses(
            {rung: f"{base}/live/final/{rung}.m3u8" for rung in RUNGS}, camera)
    finally:
        await cam.stop()
    for rung, s in seen.items():
        s.check_playlists(rung)
        # nothing left out: from the first complete segment to the last, the wall clock of
        # their first frames advanced as much as the media between them (the pauses: 3.2 s)
        msns = sorted(s.segments)
        wall = (s.segments[msns[-1]][1] - s.segments[msns[0]][1]).total_seconds()
        media = sum(s.segments[m][0] for m in msns[:-1])
        print(f"{rung}: {len(msns)} segments, media {media:.3f} s, wall clock {wall:.3f} s")
        assert abs(wall - media) < 1.0, (rung, wall, media)
    # the rungs cut the same segments (ABR): same numbers, same durations
    a, b = (seen[r].segments for r in RUNGS)
    both = sorted(set(a) & set(b))
    assert len(both) >= 6 and all(a[m][0] == b[m][0] for m in both), (a, b)
    await _check_media(seen, tmp_path)


async def _check_media(seen: dict[str, Seen], tmp_path: Path) -> None:
    """ffprobe the parts of each rung (from its first complete segment on) as one file:
    timestamps continuous, keyframes where the playlist says INDEPENDENT, video as long as the
    playlist says, AAC without a hole."""
    async with httpx.AsyncClient(timeout=20) as http:
        for rung, s in seen.items():
            first = min(s.segments)
            uris = sorted((u for u in s.parts if s.parts[u][0] >= first),
                          key=lambda u: (s.parts[u][0], int(u.rsplit(".", 2)[1])))
            init = (await http.get(s.init)).content
            bounds, at = [], len(init)
            for u in uris:
                bounds.append((at, at + len(s.bodies[u]), u))
                at += len(s.bodies[u])
            path = tmp_path / f"{rung}.mp4"
            path.write_bytes(init + b"".join(s.bodies[u] for u in uris))
            packets = probe(path, "-show_entries packet=codec_type,dts,duration,flags,pos")[
                "packets"]
            video = [p for p in packets if p["codec_type"] == "video"]
            audio = [p for p in packets if p["codec_type"] == "audio"]
            part_target = next(iter(s.targets))[1]
            vdts = [int(p["dts"]) for p in video]
            steps = [b - a for a, b in itertools.pairwise(vdts)]
            # a frame lasts at most the part target (a rung that dropped pictures under load
            # makes its frame before longer; the gaps themselves are repeats at 33 ms)
            assert all(0 < d <= part_target * 90000 for d in steps), (rung, max(steps))
            adts = [int(p["dts"]) for p in audio]
            asteps = {b - a for a, b in itertools.pairwise(adts)}
            assert asteps == {1024}, (rung, sorted(asteps))  # AAC: no hole, no overlap
            listed = sum(s.parts[u][1] for u in uris)
            media = (vdts[-1] + int(video[-1]["duration"]) - vdts[0]) / 90000
            print(f"{rung}: {len(uris)} parts, playlist {listed:.3f} s, video {media:.3f} s, "
                  f"frames {len(video)}, longest frame {max(steps) / 90:.1f} ms")
            assert abs(listed - media) < 0.001 * len(uris), (rung, listed, media)
            for lo, hi, u in bounds:
                keys = [p["flags"].startswith("K") for p in video if lo <= int(p["pos"]) < hi]
                assert keys and keys == [s.parts[u][2]] + [False] * (len(keys) - 1), (u, keys)


async def test_separate_transcoder_processes_cut_the_same_segments_across_source_gaps(
        parley_server: Callable[..., str], transcoder: Start) -> None:
    """The operator's wiring (one transcoder process per rendition, each pulling the programme
    over WHEP) while the camera pauses: both processes repeat on the same programme timestamps,
    so their segments have the same numbers and durations through the pauses, and their parts
    stay within the target."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    camera = PausingCamera({})
    cam = await publish_pausing(base, camera)
    upstream = f"{base}/live/final/whep"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            async def on_air() -> bool:
                return (await http.get(f"{base}/live/final")).json()["frames"]["video"] > 0
            await eventually(on_air, 20, "the programme's first frames")
        tx = {rung: await asyncio.to_thread(transcoder, upstream, env={
            "PARLEY_RENDITION": rung, "PARLEY_BITRATE_KBPS": kbps})
            for rung, kbps in (("180p", "200"), ("120p", "100"))}
        urls = {rung: f"{url}/live/final/{rung}.m3u8" for rung, url in tx.items()}
        async with httpx.AsyncClient(timeout=20) as http:
            async def playing() -> bool:
                lists = [m3u8.loads((await http.get(u)).text) for u in urls.values()]
                return all(any(s.uri for s in pl.segments) for pl in lists)
            await eventually(playing, 30, "a complete segment from each process")
        camera.pauses.update({camera.n + 40: 1.0, camera.n + 160: 2.2})
        seen = await _watch_through_pauses(urls, camera)
    finally:
        await cam.stop()
    for rung, s in seen.items():
        s.check_playlists(rung)
    a, b = (seen[r].segments for r in RUNGS)
    first = max(min(a), min(b))  # a process's first segment is partial
    both = sorted(m for m in set(a) & set(b) if m > first)
    print("segments:", {m: (a[m][0], b[m][0]) for m in both})
    assert len(both) >= 5 and all(a[m][0] == b[m][0] for m in both), (a, b)
    async with httpx.AsyncClient(timeout=10) as http:
        statuses = [(await http.get(f"{url}/v1/status")).json() for url in tx.values()]
    assert all(st["repeated"] > 0 for st in statuses), statuses  # the pauses were repeats

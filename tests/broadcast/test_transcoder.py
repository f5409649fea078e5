"""The transcoder ladder: an aiortc H.264 publisher at 320x240 -> `parley up` (the ingest) ->
`parley media-node --role transcoder` (a real process pulling the programme over WHEP) -> WHEP
viewers of its rungs, which decode what they get.

The publisher draws its frame number as 12 black/white bands, so a viewer of any rung can read
which source frame it decoded: keyframes of two rungs are compared by source frame, and their
spacing by RTP timestamp at the viewer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from aiortc import MediaStreamTrack, VideoStreamTrack

from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually, free_port, port_open, wait_until

BITS = 12
LADDER = "480p:400,180p:200,120p:100"
Start = Callable[..., str]


class CounterVideo(VideoStreamTrack):
    """320x240 at 30 fps; frame n shows n in binary as 12 vertical bands (white = 1)."""

    def __init__(self, size: tuple[int, int] = (320, 240)) -> None:
        super().__init__()
        self.size = size
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        w, h = self.size
        band = w // BITS
        row = np.full(w, 128, np.uint8)
        for i in range(BITS):
            row[i * band:(i + 1) * band] = 235 if self.n >> (BITS - 1 - i) & 1 else 16
        img = np.empty((h * 3 // 2, w), np.uint8)
        img[:h] = row
        img[h:] = 128
        frame = av.VideoFrame.from_ndarray(img, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


def read_counter(frame: av.VideoFrame) -> int:
    y = frame.to_ndarray(format="gray")[frame.height // 2]
    band = frame.width * (320 // BITS) / 320
    return sum(1 << (BITS - 1 - i) for i in range(BITS) if y[int((i + 0.5) * band)] > 128)


class CountingViewer(Viewer):
    """Records, per decoded video frame: arrival, size, source frame number, keyframe, RTP ts."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.decoded: list[tuple[float, int, int, int, bool, int]] = []

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video.append((time.monotonic(), frame.width, frame.height))
                    self.decoded.append((time.monotonic(), frame.width, frame.height,
                                         read_counter(frame), bool(frame.key_frame),
                                         int(frame.pts)))
                else:
                    self.audio_frames += 1

    def keyframes(self) -> list[tuple[int, int]]:
        """(source frame, RTP timestamp) of each keyframe decoded."""
        return [(n, pts) for _, _, _, n, k, pts in self.decoded if k]


@pytest.fixture
def transcoder(tmp_path: Path) -> Iterator[Start]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(upstream: str, ladder: str = "", role: str = "transcoder",
              env: dict[str, str] | None = None) -> str:
        port = free_port()
        log_path = tmp_path / f"{role}-{port}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "media-node", "--role", role,
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "PARLEY_UPSTREAM_URL": upstream, "PARLEY_BROADCAST": "final",
                 "PARLEY_LADDER": ladder, "PARLEY_X264_PRESET": "ultrafast", **(env or {})})
        procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what=role)
        assert proc.poll() is None, log_path.read_text()
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


async def _publish(base: str) -> Publisher:
    cam = Publisher(base, "final", key("final", "cam1"), (320, 240))
    cam.pc.getTransceivers()[0].sender.replaceTrack(CounterVideo())
    r = await cam.publish()
    assert r.status_code == 201, r.text
    return cam


async def _viewers(urls: list[str], frames: int, within: float) -> list[CountingViewer]:
    viewers = [CountingViewer(u) for u in urls]
    for v in viewers:
        r = await v.play()
        assert r.status_code == 201, r.text

    async def enough() -> bool:
        return all(len(v.decoded) >= frames and v.audio_frames >= 20 for v in viewers)
    await eventually(enough, within, f"{frames} decoded frames at every viewer")
    return viewers


async def test_rungs_decode_at_their_height_and_a_rung_above_the_source_says_so(
        parley_server: Callable[..., str], transcoder: Start) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = await _publish(base)
    tx = transcoder(f"{base}/live/final/whep", LADDER)
    viewers: list[CountingViewer] = []
    try:
        viewers = await _viewers([f"{tx}/live/final/180p/whep", f"{tx}/live/final/480p/whep"],
                                 30, 20)
        v180, v480 = viewers
        assert set(v180.sizes()) == {(240, 180)}, set(v180.sizes())
        assert set(v480.sizes()) == {(320, 240)}, set(v480.sizes())  # never upscaled
        # the viewers read the source's frame numbers: consecutive, nothing garbled
        ns = [n for *_, n, _, _ in v180.decoded]
        assert sum(1 for a, b in itertools.pairwise(ns) if b != a + 1) <= 2, ns
        async with httpx.AsyncClient(timeout=5) as http:
            s = (await http.get(f"{tx}/v1/status")).json()
            r = await http.post(f"{tx}/live/final/999p/whep", content=v180.pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp"})
        assert r.status_code == 404 and r.json()["detail"]["code"] == "broadcast_unknown"
        assert s["source"] == {"width": 320, "height": 240} and s["connected"], s
        by = {r["name"]: r for r in s["renditions"]}
        assert [r["name"] for r in s["renditions"]] == ["480p", "180p", "120p"]
        assert (by["480p"]["width"], by["480p"]["actualHeight"], by["480p"]["belowRung"]) == (
            320, 240, True)
        assert "never upscaled" in by["480p"]["note"]
        assert (by["180p"]["width"], by["180p"]["actualHeight"], by["180p"]["belowRung"]) == (
            240, 180, False)
        assert by["180p"]["viewers"] == 1 and s["keyframeIntervalS"] == 2.0
    finally:
        for v in viewers:
            await v.close()
        await cam.stop()


async def test_keyframes_every_two_seconds_and_aligned_across_rungs(
        parley_server: Callable[..., str], transcoder: Start) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = await _publish(base)
    tx = transcoder(f"{base}/live/final/whep", LADDER)
    viewers: list[CountingViewer] = []
    try:
        viewers = await _viewers([f"{tx}/live/final/180p/whep", f"{tx}/live/final/120p/whep"],
                                 10, 20)

        async def three_keyframes() -> bool:
            return all(len(v.keyframes()) >= 4 for v in viewers)
        await eventually(three_keyframes, 15, "four keyframes at both viewers")
        await asyncio.sleep(0.2)  # let the other viewer's copy of the last keyframe land
        k180, k120 = (v.keyframes() for v in viewers)
        # spacing at the viewer: 2 s of RTP clock (90 kHz) and 60 source frames, +- one frame
        for ks in (k180, k120):
            for (n1, t1), (n2, t2) in itertools.pairwise(ks):
                assert abs((t2 - t1) - 180000) <= 3000, ks
                assert abs((n2 - n1) - 60) <= 1, ks
        # aligned: both rungs' keyframes are the same source frames
        first, last = max(k180[0][0], k120[0][0]), min(k180[-1][0], k120[-1][0])
        a = [n for n, _ in k180 if first <= n <= last]
        b = [n for n, _ in k120 if first <= n <= last]
        assert a == b and len(a) >= 3, (k180, k120)
        print("keyframes (source frame):", a)
    finally:
        for v in viewers:
            await v.close()
        await cam.stop()


async def test_parley_up_starts_a_rung_on_its_first_viewer(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET,
                          "PARLEY_BROADCAST_LADDER": "180p:200,120p:100"})
    cam = await _publish(base)
    viewers: list[Any] = []
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"{base}/live/final")).json()["transcoder"] is None
        viewers = await _viewers([f"{base}/live/final/120p/whep"], 30, 20)
        assert set(viewers[0].sizes()) == {(160, 120)}
        async with httpx.AsyncClient(timeout=5) as http:
            s = (await http.get(f"{base}/live/final")).json()
        assert s["renditions"] == ["120p", "180p"] and s["ladder"] == ["180p", "120p"], s
        assert s["transcoder"]["source"] == {"width": 320, "height": 240}, s
    finally:
        for v in viewers:
            await v.close()
        await cam.stop()


async def test_an_edge_relays_every_rung_of_the_transcoder(
        parley_server: Callable[..., str], transcoder: Start) -> None:
    """The operator's wiring: one edge pulls each rendition from a URL template."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = await _publish(base)
    tx = transcoder(f"{base}/live/final/whep", "180p:200,120p:100")
    edge = transcoder(f"{tx}/live/final/{{rendition}}/whep", role="edge-relay",
                      env={"PARLEY_RENDITIONS": "180p,120p", "PARLEY_TIER": "edge"})
    viewers: list[CountingViewer] = []
    try:
        viewers = await _viewers([f"{edge}/live/final/120p/whep",
                                  f"{edge}/live/final/180p/whep"], 20, 25)
        assert set(viewers[0].sizes()) == {(160, 120)}
        assert set(viewers[1].sizes()) == {(240, 180)}
        async with httpx.AsyncClient(timeout=5) as http:
            s = (await http.get(f"{edge}/live/final")).json()
        assert s["viewers"] == 2 and [r["rendition"] for r in s["renditions"]] == [
            "180p", "120p"] and all(r["connected"] for r in s["renditions"]), s
    finally:
        for v in viewers:
            await v.close()
        await cam.stop()


def _segments(playlist: str) -> dict[int, str]:
    """msn -> EXTINF duration of each complete segment in a media playlist."""
    seq, out, duration = 0, {}, ""
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            seq = int(line.split(":")[1])
        elif line.startswith("#EXTINF:"):
            duration = line[8:].rstrip(",")
        elif line and not line.startswith("#"):
            out[seq] = duration
            seq += 1
    return out


async def test_separate_transcoder_processes_cut_gops_and_segments_on_the_same_frames(
        parley_server: Callable[..., str], transcoder: Start) -> None:
    """The operator's wiring: one transcoder process per rendition, started 1 s or more apart,
    both pulling the programme. Their keyframes are the same programme timestamps and source
    frames (read by viewers from the drawn frame numbers), their LL-HLS segments the same numbers
    with the same durations."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = await _publish(base)
    upstream = f"{base}/live/final/whep"
    viewers: list[CountingViewer] = []
    http = httpx.AsyncClient(timeout=10)
    try:
        async def on_air() -> bool:
            return (await http.get(f"{base}/live/final")).json()["frames"]["video"] > 0
        await eventually(on_air, 20, "the programme's first frames")
        # started from a thread: the fixture waits for the port, the publisher keeps sending
        tx180 = await asyncio.to_thread(transcoder, upstream, env={
            "PARLEY_RENDITION": "180p", "PARLEY_BITRATE_KBPS": "200"})
        tx120 = await asyncio.to_thread(transcoder, upstream, env={
            "PARLEY_RENDITION": "120p", "PARLEY_BITRATE_KBPS": "100"})
        viewers = await _viewers([f"{tx180}/live/final/180p/whep",
                                  f"{tx120}/live/final/120p/whep"], 10, 25)

        async def keyframes() -> list[list[int]] | None:
            ks = [(await http.get(f"{tx}/v1/status")).json()["renditions"][0]["keyframes"]
                  for tx in (tx180, tx120)]
            return ks if all(len(k) >= 5 for k in ks) else None
        k180, k120 = await eventually(keyframes, 20, "five keyframes in each process")
        print("keyframes (programme ts):", k180, k120)
        assert k180[0] != k120[0], "the processes started on different frames"
        lo, hi = max(k180[0], k120[0]), min(k180[-1], k120[-1])
        a, b = ([k for k in ks if lo < k <= hi] for ks in (k180, k120))
        assert a == b and len(a) >= 2, (k180, k120)
        assert all(k % 180000 < 3000 for k in a), a  # the first frame at or after each 2 s

        async def seen() -> bool:  # the viewers decoded those keyframes (source frame numbers)
            return all(len(v.keyframes()) >= 3 for v in viewers)
        await eventually(seen, 10, "three keyframes at each viewer")
        await asyncio.sleep(0.2)
        n180, n120 = ([n for n, _ in v.keyframes()] for v in viewers)
        lo, hi = max(n180[0], n120[0]), min(n180[-1], n120[-1])
        c, d = ([n for n in ns if lo <= n <= hi] for ns in (n180, n120))
        assert c == d and len(c) >= 2, (n180, n120)

        first = max(k180[0], k120[0]) // 180000  # a process's first segment is partial
        s180 = _segments((await http.get(f"{tx180}/live/final/180p.m3u8")).text)
        s120 = _segments((await http.get(f"{tx120}/live/final/120p.m3u8")).text)
        both = sorted(m for m in set(s180) & set(s120) if m > first)
        assert len(both) >= 2 and all(s180[m] == s120[m] for m in both), (s180, s120)
        print("segments:", {m: s180[m] for m in both})
    finally:
        for v in viewers:
            await v.close()
        await cam.stop()
        await http.aclose()

"""hls.js (vendored, served by Parley) in real Chromium plays each rung of `parley up`'s LL-HLS:
an independent low-latency client, which also asks for playlist delta updates (``_HLS_skip=YES``:
the playlists offer CAN-SKIP-UNTIL) and merges them. The aiortc publisher runs in its own thread
and event loop, because sync Playwright holds the main thread's loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import m3u8
import pytest

from tests.broadcast.test_hls_gaps import PausingCamera, publish_pausing
from tests.broadcast.test_parley_up import SECRET
from tests.broadcast.test_transcoder import _publish
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser]


def _publisher(base: str, stop: threading.Event, ready: threading.Event) -> None:
    async def run() -> None:
        cam = await _publish(base)
        ready.set()
        await asyncio.to_thread(stop.wait)
        await cam.stop()
    asyncio.run(run())


def test_hls_js_plays_each_rung_in_low_latency_mode(browser: Any,
                                                    parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET,
                          "PARLEY_BROADCAST_LADDER": "180p:200,120p:100"})
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=_publisher, args=(base, stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "publisher"
        for rung, height in (("180p", 180), ("120p", 120)):
            if rung == "120p":  # enough segments that a delta update really skips some
                wait_until(lambda: _complete(base, "120p") >= 8, 30, 0.5, "8 complete segments")
            page = browser.new_page()
            page.goto(f"{base}/static/hls-player.html?src=/live/final/{rung}.m3u8")
            page.evaluate("window.skips = []; hls.on(Hls.Events.LEVEL_UPDATED, "
                          "(_, d) => window.skips.push(d.details.skippedSegments || 0))")
            page.wait_for_function("document.getElementById('v').currentTime > 2",
                                   timeout=20000)
            # 6 s of playback sampled every 100 ms: time advances, never stuck for 1 s
            samples = []
            t_end = time.monotonic() + 6
            while time.monotonic() < t_end:
                samples.append((time.monotonic(), page.evaluate(
                    "document.getElementById('v').currentTime")))
                page.wait_for_timeout(100)
            stuck, since = 0.0, samples[0]
            for at, ct in samples[1:]:
                if ct > since[1]:
                    since = (at, ct)
                stuck = max(stuck, at - since[0])
            state = page.evaluate("({h: document.getElementById('v').videoHeight, "
                                  "p: window.player, skips: window.skips, deltas: performance"
                                  ".getEntriesByType('resource').filter(e => e.name.includes("
                                  "'_HLS_skip=YES')).length})")
            played = samples[-1][1] - samples[0][1]
            print(f"{rung}: played {played:.2f} s in 6 s, longest stall {stuck:.2f} s, "
                  f"hls.js latency {state['p']['latency']}, {state['deltas']} delta "
                  f"requests, skipped segments per update {state['skips']}")
            assert state["deltas"] > 0, state  # hls.js asked for delta updates
            if rung == "120p":  # and merged ones that skipped segments while playing on
                assert max(state["skips"]) > 0, state
            assert played > 4.5 and stuck < 1.0, (played, stuck)
            assert state["h"] == height, state
            assert not [e for e in state["p"]["errors"] if e.endswith("/true")], state
            page.close()
    finally:
        stop.set()
        thread.join(15)


def _complete(base: str, rung: str) -> int:
    text = httpx.get(f"{base}/live/final/{rung}.m3u8", timeout=10).text
    return sum(1 for s in m3u8.loads(text).segments if s.uri)


def _camera(base: str, camera: PausingCamera, stop: threading.Event, ready: threading.Event,
            ) -> None:
    async def run() -> None:
        cam = await publish_pausing(base, camera)
        ready.set()
        await asyncio.to_thread(stop.wait)
        await cam.stop()
    asyncio.run(run())


def test_hls_js_plays_on_through_a_source_pause(browser: Any,
                                                 parley_server: Callable[..., str]) -> None:
    """The camera stops for 2.2 s while hls.js plays 180p: the transcoder repeats the last
    picture on the programme's timeline as the pause goes on, so hls.js meets neither a part
    longer than PART-TARGET nor a hole in its buffer, and plays on through the pause (video time
    advancing, one buffered range across it, no fatal error) with no seek or reload by the test."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET, "PARLEY_BROADCAST_LADDER": "180p:200"})
    camera = PausingCamera({})
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=_camera, args=(base, camera, stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "publisher"
        page = browser.new_page()
        page.goto(f"{base}/static/hls-player.html?src=/live/final/180p.m3u8")
        page.wait_for_function("document.getElementById('v').currentTime > 2", timeout=20000)
        paused_at = page.evaluate("document.getElementById('v').currentTime")
        camera.pauses[camera.n + 1] = 2.2  # the camera thread reads it before that frame
        samples = []  # (monotonic, video time) every 100 ms until 4 s after the resume
        while not camera.resumed or time.monotonic() < camera.resumed[-1] + 4:
            samples.append((time.monotonic(), page.evaluate(
                "document.getElementById('v').currentTime")))
            page.wait_for_timeout(100)
            assert len(samples) < 300, "the camera's pause never came"
        stuck, since = 0.0, samples[0]
        for at, ct in samples[1:]:
            if ct > since[1]:
                since = (at, ct)
            stuck = max(stuck, at - since[0])
        state = page.evaluate("""() => {
            const v = document.getElementById('v'), b = v.buffered;
            const ranges = [...Array(b.length).keys()].map(i => [b.start(i), b.end(i)]);
            return {t: v.currentTime, p: window.player, ranges};
        }""")
        played = samples[-1][1] - samples[0][1]
        wall = samples[-1][0] - samples[0][0]
        print(f"hls.js through a 2.2 s pause: played {played:.2f} s in {wall:.2f} s, longest "
              f"stall {stuck:.2f} s, errors {state['p']['errors']}, buffered {state['ranges']}, "
              f"latency {state['p']['latency']}")
        assert not [e for e in state["p"]["errors"] if e.endswith("/true")], state
        # one buffered range from before the pause to the playhead: no hole where it paused
        assert any(lo <= paused_at and state["t"] <= hi for lo, hi in state["ranges"]), state
        assert played > wall - 2.0, (played, wall)  # played on: the pause did not stop it
        page.close()
    finally:
        stop.set()
        thread.join(15)  # the publisher leaves (DELETE) while `parley up` still runs

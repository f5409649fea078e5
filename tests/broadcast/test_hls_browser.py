"""hls.js (vendored, served by Parley) in real Chromium plays each rung of `parley up`'s LL-HLS:
an independent low-latency client. The aiortc publisher runs in its own thread and event loop,
because sync Playwright holds the main thread's loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.broadcast.test_parley_up import SECRET
from tests.broadcast.test_transcoder import _publish

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
            page = browser.new_page()
            page.goto(f"{base}/static/hls-player.html?src=/live/final/{rung}.m3u8")
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
                                  "p: window.player})")
            played = samples[-1][1] - samples[0][1]
            print(f"{rung}: played {played:.2f} s in 6 s, longest stall {stuck:.2f} s, "
                  f"hls.js latency {state['p']['latency']}")
            assert played > 4.5 and stuck < 1.0, (played, stuck)
            assert state["h"] == height, state
            assert not [e for e in state["p"]["errors"] if e.endswith("/true")], state
            page.close()
    finally:
        stop.set()
        thread.join(15)

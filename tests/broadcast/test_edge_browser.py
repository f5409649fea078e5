"""Real Chromium WHEP viewers of an edge, started from its cached GOP (edge_fanout.EdgeLeg): they
decode at once, their receiver reports confirm the burst to the edge, and their start asks the
camera for no keyframe beyond the PLIs the edge let through (those after a viewer's report
covered its burst). Chromium is Debian's, driven by Playwright's async API in the test's loop,
since the camera is an aiortc publisher in the same loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.broadcast.clients import Publisher
from tests.broadcast.test_edge_fanout import _camera_keyframe_requests
from tests.broadcast.test_parley_up import SECRET, key
from tests.broadcast.test_tiers import Start, edge_relay  # noqa: F401 (the role processes)
from tests.conftest import CHROMIUM_ARGS, eventually

pytestmark = [pytest.mark.browser]

# WHEP from the page (same origin as the edge); every presented frame counted in window.frames
PLAY_JS = """async (url) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const v = document.createElement('video');
  v.muted = true; v.autoplay = true; document.body.appendChild(v);
  window.frames_ = 0;
  const count = () => { window.frames_ += 1; v.requestVideoFrameCallback(count); };
  v.requestVideoFrameCallback(count);
  pc.ontrack = (e) => { if (e.track.kind === 'video') v.srcObject = new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
  });
  const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/sdp'},
                              body: pc.localDescription.sdp});
  if (r.status !== 201) throw new Error('WHEP ' + r.status + ' ' + await r.text());
  await pc.setRemoteDescription({type: 'answer', sdp: await r.text()});
  window.pc_ = pc;
}"""


async def test_chromium_viewers_start_from_the_cache_and_confirm_the_burst(
        parley_server: Callable[..., str], edge_relay: Start,  # noqa: F811
        chromium: str) -> None:
    from playwright.async_api import async_playwright

    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = Publisher(base, "final", key("final", "cam1"), (256, 144))
    asked = _camera_keyframe_requests(cam)
    assert (await cam.publish()).status_code == 201
    edge, _ = edge_relay(f"{base}/live/final/whep", "edge")
    http = httpx.AsyncClient(timeout=10)

    async def status() -> dict[str, Any]:
        return (await http.get(f"{edge}/live/final")).json()

    async def caching() -> bool:  # the edge holds a GOP: the camera's first frames came through
        return (await status())["packets"]["video"] >= 30
    try:
        await eventually(caching, 20, "the edge receiving the camera")
        before = len(asked)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, headless=True,
                                               args=CHROMIUM_ARGS)
            pages = []
            for _ in range(2):
                page = await browser.new_page()
                await page.goto(f"{edge}/live/final")  # the WHEP URL's origin
                await page.evaluate(PLAY_JS, f"{edge}/live/final/whep")
                await page.wait_for_function("window.frames_ >= 30", timeout=25_000)
                pages.append(page)

            async def filed() -> list[dict[str, Any]]:  # each start described once its
                starts = (await status())["cacheStarts"]  # burst is let go (3 s)
                return starts if len(starts) >= 2 else []
            starts = await eventually(filed, 15, "the edge describing both starts")
            assert (await status())["cachedStarts"] == 2
            for page in pages:
                await page.evaluate("() => window.pc_.close()")
            await browser.close()
        assert all(s["confirmedS"] is not None for s in starts), starts
        through = sum(upstream for s in starts for _, upstream in s["plis"])
        assert len(asked) - before <= through, (starts, len(asked) - before)
    finally:
        await http.aclose()
        await cam.stop()

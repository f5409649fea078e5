"""A call-server meeting in real Chromium with one receiver behind a throttled link: the
receiver's Chromium runs in a network namespace (tests/netshape.py) whose downlink tbf shapes,
the other participants' Chromium on the host. Used by tests/sfu/test_throttled.py and
bench/layer_drop.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CHROMIUM_ARGS
from tests.netshape import Netns
from tests.signaling.browser import as_user, goto_identity, stats

CAM = "w=640&h=360&fps=10"  # two layers: h (320x180) and f (640x360)
FULL, LOW = 360, 180

# Per remote camera tile of the page: every presented frame (requestVideoFrameCallback), the
# longest gap between two (a freeze) and when it began, the frame heights with the wall-clock
# time they began, and RTP timestamps going backwards across a layer switch. Times are epoch
# milliseconds.
PROBE = """(me) => {
  const P = window.__probe = window.__probe || {};
  for (const tile of document.querySelectorAll(".tile[data-source=camera]")) {
    const who = tile.dataset.participant, video = tile.querySelector("video");
    if (who === me || !video || P[who]) continue;
    const s = P[who] = {last: null, lastAt: 0, gap: 0, backwards: 0, frames: 0, heights: [],
                        errors: 0};
    const frame = (now, meta) => {
      const t = performance.timeOrigin + now;
      if (meta.rtpTimestamp !== undefined) {
        if (s.last !== null && ((meta.rtpTimestamp - s.last) >>> 0) > 0x80000000) s.backwards++;
        s.last = meta.rtpTimestamp;
      }
      if (s.lastAt && t - s.lastAt > s.gap) { s.gap = t - s.lastAt; s.gapAt = s.lastAt; }
      s.lastAt = t; s.frames++;
      const hs = s.heights;
      if (!hs.length || hs[hs.length - 1][1] !== meta.height) hs.push([t, meta.height]);
      video.requestVideoFrameCallback(frame);
    };
    video.addEventListener("error", () => { s.errors++; });
    video.requestVideoFrameCallback(frame);
  }
  return Object.keys(P).sort();
}"""
READ = """() => {
  const now = performance.timeOrigin + performance.now(), out = {};
  for (const [who, s] of Object.entries(window.__probe || {})) {
    const open = s.lastAt ? now - s.lastAt : 0;  // a freeze still going on
    out[who] = {gap: Math.max(s.gap, open), gapAt: open > s.gap ? s.lastAt : s.gapAt,
                frames: s.frames,
                backwards: s.backwards, errors: s.errors, heights: s.heights.slice(-6),
                height: s.heights.length ? s.heights[s.heights.length - 1][1] : 0};
  }
  return out;
}"""
MARK = "() => { for (const s of Object.values(window.__probe || {})) s.gap = 0; }"


def bwe_probes(base: str) -> dict[str, float]:
    """The call server's probes so far by result (``parley_media_bwe_probes_total``) and the
    padding they sent (``padding``, bytes), scraped from `parley up`'s /metrics: the embedded
    call server shares its registry."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "parley_media_bwe_probes_total":
                out[s.labels["result"]] = s.value
            elif s.name == "parley_media_bwe_probe_padding_bytes_total":
                out["padding"] = s.value
    return out


def probe(page: Any, me: str, others: list[str]) -> None:
    """Start watching every remote camera of ``others`` on ``page``."""
    got = page.evaluate(PROBE, me)
    assert set(others) <= set(got), (me, got)


def frames(page: Any) -> dict[str, dict[str, Any]]:
    return page.evaluate(READ)


def cameras(page: Any) -> dict[str, dict[str, Any]]:
    """The page's inbound camera rows by participant (frameHeight, layer, layerReason, ...)."""
    return {r["participant"]: r for r in stats(page)["inbound"]
            if r["kind"] == "video" and r["source"] == "camera"}


def until(check: Callable[[], Any], timeout: float, what: str,
          detail: Callable[[], Any] = lambda: None, interval: float = 0.1) -> Any:
    """Poll ``check`` until truthy; fail with ``what`` and ``detail()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s; {detail()}")
        time.sleep(interval)


def netns_browser(browser: Any, ns: Netns, chromium: str, folder: Path, origin: str) -> Any:
    """A second Chromium, started inside ``ns`` (Playwright's pipe survives ``ip netns
    exec``). ``origin`` (the host's address as the namespace sees it) counts as secure there,
    as localhost does on the host, so the page may open the camera."""
    return browser.browser_type.launch(
        executable_path=str(ns.wrapper(folder, chromium)), headless=True,
        args=[*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={origin}"])


def open_behind(ns_browser: Any, base: str, origin: str, path: str,
                init_script: str | None = None) -> Any:
    """Open ``base + path`` (a ``?user=`` URL, token minted at ``base``) at ``origin`` in the
    namespace's Chromium; ``init_script`` runs before the page's own (bench/layer_drop.py's
    timeline)."""
    url = as_user(f"{base}{path}").replace(base, origin, 1)
    context = ns_browser.new_context(permissions=["camera", "microphone"])
    if init_script is not None:
        context.add_init_script(init_script)
    return goto_identity(context.new_page(), url)

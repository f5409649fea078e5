"""Join time: from page load to the first decoded remote video frame, peer to peer.

One Chromium (Debian's, driven by Playwright; its start-up is excluded) holds an anchor page in a
room; then, ``--joins`` times, a fresh page opens ``/m/<room>`` and the time from its navigation
start (``performance.timeOrigin``) to the first remote video frame it decodes is read in the page
itself, so polling from the outside adds nothing. The page then leaves before the next join.

    python -m bench.join_time                # 20 joins against `parley up`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .load import percentile
from .signaling import RESULTS, Server

CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]

# Resolves with milliseconds since navigation start once a remote video frame is decoded.
FIRST_FRAME_JS = """async () => {
  while (!(window.parley && window.parley.stats)) await new Promise(r => setTimeout(r, 5));
  for (;;) {
    const s = await window.parley.stats();
    if (s.inbound.some(i => i.kind === 'video' && i.framesDecoded > 0)) return performance.now();
    await new Promise(r => setTimeout(r, 10));
  }
}"""


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    server = Server()
    server.wait_ready()
    base = f"http://127.0.0.1:{server.port}"
    room = f"bench-{uuid.uuid4().hex[:6]}"
    samples: list[float] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            anchor_ctx = browser.new_context(permissions=["camera", "microphone"])
            anchor = anchor_ctx.new_page()
            anchor.goto(f"{base}/m/{room}?name=anchor&topology=p2p")
            anchor.wait_for_function("window.parley && window.parley.state.room", timeout=15000)
            for i in range(args.joins + 1):
                ctx = browser.new_context(permissions=["camera", "microphone"])
                page = ctx.new_page()
                page.goto(f"{base}/m/{room}?name=joiner{i}&topology=p2p")
                ms = page.evaluate(FIRST_FRAME_JS)
                if i > 0:  # the first join warms up the browser's codecs and caches
                    samples.append(ms)
                    print(f"  join {i}: {ms:.0f} ms", flush=True)
                ctx.close()
                time.sleep(0.3)
            browser.close()
    finally:
        server.stop()
    return {
        "benchmark": "join-time",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg": os.getloadavg()},
        "topology": "p2p",
        "joins": len(samples),
        "join_to_first_frame_ms": {
            "p50": round(percentile(samples, 0.5), 1),
            "p95": round(percentile(samples, 0.95), 1),
            "min": round(min(samples), 1),
            "max": round(max(samples), 1),
        },
        "samples_ms": [round(x, 1) for x in samples],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.join_time", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--joins", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / "join_time.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["join_to_first_frame_ms"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

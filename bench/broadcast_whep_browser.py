"""WHEP glass to glass in Chromium: what a viewer of the watch page sees, lip sync included.

bench/broadcast_glass.py reads the clock in aiortc viewers, which play no sound: it measures the
video path alone. A browser plays audio and video of one stream in sync (libwebrtc's
RtpStreamsSynchronizer delays whichever of the two arrives earlier), so audio that crosses the
chain later than the video holds the picture back by the difference. This bench is that
viewer: the same aiortc WHIP publisher (a 30 fps camera drawing the wall clock of each capture
as a bar code, and a tone) -> ingest -> transcoder -> relay -> edge, each its own process on
loopback; Debian's Chromium (Playwright) opens a WHEP session to the edge as
signaling/static/watch.js does (video and audio recvonly, one stream) and on every presented
frame (``requestVideoFrameCallback``) reads the clock: latency = ``Date.now()`` - the drawn
clock. ``--video-only`` offers no audio m-line (nothing to sync with): the difference between the
two is what lip sync costs. getStats adds each receiver's mean jitter-buffer delay.

    flock /tmp/parley-heavy.lock python -m bench.broadcast_whep_browser   # about 1 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any

from tests.broadcast.clients import Publisher

from .broadcast_chain import BROADCAST, Chain, machine_load, roles_buffer
from .broadcast_clock import PRESENTED_JS, presented_window, publish_clock
from .broadcast_glass import summary
from .join_time import ARGS, CHROMIUM

RESULTS = Path(__file__).parent / "results"

PAGE = """<!doctype html><meta charset="utf-8"><title>WHEP glass to glass</title>
<video id="v" muted autoplay playsinline></video><canvas id="c"></canvas>
<script>
@PRESENTED_JS@
const video = document.getElementById("v"), canvas = document.getElementById("c");
window.bench = { samples: [], unreadable: 0, height: 0, error: null };
const q = new URLSearchParams(location.search);
async function gathered(pc) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((ok) => pc.addEventListener("icegatheringstatechange",
    () => pc.iceGatheringState === "complete" && ok()));
}
async function open() {  // as signaling/static/watch.js's openWhep
  const pc = window.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  const stream = new MediaStream();
  pc.addEventListener("track", (e) => stream.addTrack(e.track));
  const vt = pc.addTransceiver("video", { direction: "recvonly" });
  if (q.get("audio") === "1") pc.addTransceiver("audio", { direction: "recvonly" });
  const h264 = RTCRtpReceiver.getCapabilities("video").codecs
    .filter((c) => /video\\/(h264|rtx)/i.test(c.mimeType));
  vt.setCodecPreferences(h264);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const res = await fetch(q.get("src"), { method: "POST", body: pc.localDescription.sdp,
                                          headers: { "Content-Type": "application/sdp" } });
  if (res.status !== 201) throw new Error(`WHEP ${res.status} ${await res.text()}`);
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  video.srcObject = stream;
}
window.jitter = async () => {  // mean jitter-buffer delay per kind, ms
  const out = {};
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.jitterBufferEmittedCount) {
      out[s.kind] = 1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount;
    }
  });
  return out;
};
readPresented(video, canvas, window.bench);
open().catch((err) => { window.bench.error = String(err); });
</script>""".replace("@PRESENTED_JS@", PRESENTED_JS)


async def _watch(browser: Any, edge: str, rung: str, audio: bool, args: argparse.Namespace,
                 chain: Chain) -> dict[str, Any]:
    page = await browser.new_page()
    body = PAGE.encode()

    async def serve(route: Any) -> None:
        await route.fulfill(body=body, content_type="text/html")

    await page.route(f"{edge}/bench/**", serve)
    await page.goto(f"{edge}/bench/player.html?src=/live/{BROADCAST}/{rung}/whep"
                    f"&audio={int(audio)}")
    await page.wait_for_function("window.bench.samples.length >= 30 || window.bench.error",
                                 timeout=60000)
    b, values, cores = await presented_window(page, chain, args.warm, args.seconds)
    jitter = await page.evaluate("window.jitter()")
    await page.close()
    if b["error"]:
        raise RuntimeError(b["error"])
    return {**summary(values), "height": b["height"], "unreadable": b["unreadable"],
            "jitter_buffer_ms": {k: round(v, 1) for k, v in jitter.items()},
            "role_cpu_cores": cores,
            "loadavg_end": machine_load()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    w, h = (int(x) for x in args.source.split("x"))
    chain = Chain()
    cam: Publisher | None = None
    try:
        urls = chain.ladder(args.ladder, args.preset)
        cam = await publish_clock(urls["ingest"], (w, h))
        load0 = machine_load()
        results: dict[str, Any] = {}
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=ARGS)
            for i in range(args.rounds):  # alternating, so the machine's drift hits both
                for audio in (True, False):
                    name = f"{'audio+video' if audio else 'video only'} #{i + 1}"
                    res = results[name] = await _watch(browser, urls["edge"], args.rung, audio,
                                                       args, chain)
                    print(f"  {name:16} frames={res['frames']:4} p50={res['p50_ms']} ms "
                          f"p95={res['p95_ms']} ms jitter buffer {res['jitter_buffer_ms']}",
                          flush=True)
            await browser.close()
        return {
            "benchmark": "broadcast_glass_to_glass_whep_chromium",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_start": load0, "loadavg_end": machine_load()},
            "setup": {"source": args.source, "fps": 30, "ladder": args.ladder, "rung": args.rung,
                      "x264_preset": args.preset, "window_s": args.seconds,
                      "roles_jitter_buffer": roles_buffer(),
                      "viewer": "Debian Chromium (headless), WHEP as watch.js, clock read on "
                                "requestVideoFrameCallback",
                      "path": "aiortc WHIP publisher (clock video + tone) -> ingest -> "
                              "transcoder -> relay -> edge -> Chromium, processes on loopback"},
            "runs": results,
        }
    finally:
        if cam is not None:
            await cam.stop()
        chain.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.broadcast_whep_browser",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="640x360")
    ap.add_argument("--ladder", default="360p:800")
    ap.add_argument("--rung", default="360p")
    ap.add_argument("--preset", default="veryfast", help="the transcoder's x264 preset")
    ap.add_argument("--warm", type=float, default=3.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "broadcast_whep_browser.json"))
    args = ap.parse_args(argv)
    Path(args.out).write_text(json.dumps(asyncio.run(run(args)), indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

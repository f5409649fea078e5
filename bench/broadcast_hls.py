"""LL-HLS glass to glass: the WebRTC benchmark's source and path, played by hls.js in Chromium.

The same aiortc WHIP publisher (a 30 fps camera drawing the wall clock of each capture as a bar
code, bench/broadcast_clock.py) -> ingest -> transcoder (which packages LL-HLS) -> relay -> edge
(which proxies LL-HLS like a CDN node), each its own process on loopback. Debian's Chromium
(Playwright) plays the edge's media playlist with hls.js 1.7.4 (vendored by Parley) in
``lowLatencyMode``; on every presented frame (``requestVideoFrameCallback``) the page draws the
video on a canvas, reads the clock and records ``Date.now()`` minus it. The player page is served
by Playwright on the edge's own origin (no CORS or private-network question). One page per rung,
one after the other.

Included: capture to presentation (encode, every hop, packaging into 1/3 s parts, the player's
hold-back behind the live edge, MSE decode). hls.js's own estimate (``hls.latency``: live edge to
playhead) is recorded next to it.

    flock /tmp/parley-heavy.lock python -m bench.broadcast_hls   # about 1 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.broadcast.clients import Publisher

from .broadcast_chain import BROADCAST, ROOT, Chain, machine_load, roles_buffer
from .broadcast_clock import PRESENTED_JS, presented_window, publish_clock
from .broadcast_glass import summary
from .join_time import ARGS, CHROMIUM
from .load import percentile

RESULTS = Path(__file__).resolve().parent / "results"
HLS_JS = ROOT / "signaling" / "static" / "vendor" / "hls-1.7.4.min.js"
GOAL = {"p50_ms": 2500}

PAGE = """<!doctype html><meta charset="utf-8"><title>LL-HLS glass to glass</title>
<video id="v" muted autoplay playsinline></video><canvas id="c"></canvas>
<script src="hls.min.js"></script>
<script>
@PRESENTED_JS@
const video = document.getElementById("v"), canvas = document.getElementById("c");
window.bench = { samples: [], unreadable: 0, errors: [], latency: [], height: 0, stalls: 0 };
// the viewer page's settings (signaling/static/watch.js)
const extra = JSON.parse(new URLSearchParams(location.search).get("config") || "{}");
const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30, maxBufferHole: 0.5,
                      highBufferWatchdogPeriod: 0.5, maxLiveSyncPlaybackRate: 1.5, ...extra });
window.bench.trace = [];
const t0 = performance.now();
const at = () => Math.round(performance.now() - t0);
const edgeOf = () => { const d = hls.latestLevelDetails; return d ? +d.edge.toFixed(2) : null; };
hls.on(Hls.Events.LEVEL_LOADED, (_, d) => window.bench.trace.push(
  ["level", at(), d.details.endSN, d.details.endPart, +d.details.edge.toFixed(2),
   Math.round(d.stats.loading.end - d.stats.loading.start), +video.currentTime.toFixed(2)]));
hls.on(Hls.Events.FRAG_LOADED, (_, d) => window.bench.trace.push(
  ["frag", at(), d.frag.sn, d.part ? d.part.index : -1, +(d.part || d.frag).start.toFixed(2),
   Math.round((d.part || d.frag).stats.loading.end - (d.part || d.frag).stats.loading.start),
   edgeOf(), +video.currentTime.toFixed(2)]));
video.addEventListener("playing", () => window.bench.trace.push(["playing", at(),
   +video.currentTime.toFixed(2), edgeOf()]));
video.addEventListener("waiting", () => window.bench.trace.push(["waiting", at(),
   +video.currentTime.toFixed(2), edgeOf()]));
video.addEventListener("seeking", () => window.bench.trace.push(["seeking", at(),
   +video.currentTime.toFixed(2), edgeOf()]));
hls.on(Hls.Events.ERROR, (_, d) => window.bench.errors.push(`${d.type}/${d.details}/${d.fatal}`));
video.addEventListener("waiting", () => { window.bench.stalls += 1; });
setInterval(() => {
  if (hls.latency) window.bench.latency.push(hls.latency);
  window.bench.targetLatency = hls.targetLatency;
}, 500);
readPresented(video, canvas, window.bench);
hls.loadSource(new URLSearchParams(location.search).get("src"));
hls.attachMedia(video);
video.play().catch(() => {});
</script>""".replace("@PRESENTED_JS@", PRESENTED_JS)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    w, h = (int(x) for x in args.source.split("x"))
    rungs = [r.split(":")[0] for r in args.ladder.split(",")]
    if args.marker_jitter:
        from .broadcast_jitter import install

        install()  # the viewer's own receiver too: a browser hands a frame on at its end
    chain = Chain(args.marker_jitter)
    cam: Publisher | None = None
    try:
        urls = chain.ladder(args.ladder, args.preset)
        edge = urls["edge"]
        cam = await publish_clock(urls["ingest"], (w, h))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=ARGS)
            page_html = PAGE.encode()
            hls_js = HLS_JS.read_bytes()

            async def serve(route: Any) -> None:
                if route.request.url.endswith("hls.min.js"):
                    await route.fulfill(body=hls_js, content_type="text/javascript")
                else:
                    await route.fulfill(body=page_html, content_type="text/html")

            results: dict[str, Any] = {}
            load0 = machine_load()
            for rung in rungs:  # one page at a time: each rung gets the machine to itself
                page = await browser.new_page()
                await page.route(f"{edge}/bench/**", serve)
                await page.goto(f"{edge}/bench/player.html?src=/live/{BROADCAST}/{rung}.m3u8"
                                f"&config={quote(args.hls_config)}")
                await page.wait_for_function("window.bench.samples.length >= 30",
                                             timeout=60000)
                b, values, cores = await presented_window(page, chain, args.warm,
                                                          args.seconds)
                await page.close()
                lat = b["latency"][-int(args.seconds * 2):]
                if args.trace:
                    for row in b["trace"][:80]:
                        print("   ", row)
                results[rung] = {**summary(values), "height": b["height"],
                                 "unreadable": b["unreadable"], "waiting_events": b["stalls"],
                                 "hlsjs_latency_s_median": (sorted(lat)[len(lat) // 2]
                                                            if lat else None),
                                 "hlsjs_target_latency_s": b.get("targetLatency"),
                                 "p50_first_5s_ms": percentile(values[:150], 0.5),
                                 "p50_last_5s_ms": percentile(values[-150:], 0.5),
                                 "fatal_errors": [e for e in b["errors"] if e.endswith("true")],
                                 "errors": sorted(set(b["errors"])),
                                 "role_cpu_cores": cores,
                                 "loadavg_end": machine_load()}
                print(f"  {rung:6} frames={len(values):4} p50={results[rung]['p50_ms']} ms "
                      f"p95={results[rung]['p95_ms']} ms max={results[rung]['max_ms']} ms "
                      f"hls.js latency {results[rung]['hlsjs_latency_s_median']} s "
                      f"unreadable={b['unreadable']} errors={results[rung]['errors']}",
                      flush=True)
            await browser.close()
        return {
            "benchmark": "broadcast_glass_to_glass_llhls",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_start": load0, "loadavg_end": machine_load()},
            "setup": {"source": args.source, "fps": 30, "ladder": args.ladder,
                      "x264_preset": args.preset, "window_s": args.seconds,
                      "marker_jitter": args.marker_jitter, "roles_jitter_buffer": roles_buffer(),
                      "player": "hls.js 1.7.4, the viewer page's settings (lowLatencyMode, "
                                "maxLiveSyncPlaybackRate 1.5) + " + args.hls_config
                                + " in Debian Chromium (headless), clock read on "
                                "requestVideoFrameCallback",
                      "path": "aiortc WHIP publisher -> ingest -> transcoder (LL-HLS) -> relay "
                              "(proxy) -> edge (proxy) -> hls.js, processes on loopback"},
            "rungs": results, "goal": GOAL,
            "met": {r: v["p50_ms"] <= GOAL["p50_ms"] for r, v in results.items()},
        }
    finally:
        if cam is not None:
            await cam.stop()
        chain.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.broadcast_hls", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="1280x720")
    ap.add_argument("--ladder", default="720p:3000,360p:800")
    ap.add_argument("--preset", default="veryfast", help="the transcoder's x264 preset")
    ap.add_argument("--warm", type=float, default=3.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--marker-jitter", action="store_true",
                    help="experiment: a frame is complete at its RTP marker "
                         "(bench/broadcast_jitter.py)")
    ap.add_argument("--hls-config", default="{}",
                    help="hls.js settings (JSON) on top of the viewer page's")
    ap.add_argument("--trace", action="store_true", help="print hls.js's first events")
    ap.add_argument("--out", default=str(RESULTS / "broadcast_hls.json"))
    args = ap.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

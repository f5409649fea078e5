"""Edge: when a fresh Chromium WHEP viewer asks for a keyframe, relative to its start burst.

An edge starts a new viewer on its cached GOP (edge_fanout.GopCache: the keyframe and the frames
since, sent at once). Chromium asks for a keyframe (PLI) as its receiver starts anyway; sent
upstream, every joining viewer would be a keyframe request to the camera. ``EdgeLeg`` drops the
viewer's PLIs until its receiver report covers the burst's last packet, and records when that
report came and each request while the burst is kept (3 s): seconds after the burst, and whether
it went upstream.

Setup: ``--role ingest`` <- the replayed 360p H.264 + Opus publisher of bench/broadcast_edge.py;
``--role edge-relay`` pulling it; viewers join one after another, each after a seeded random
0-2 s pause (every phase of the 2 s GOP): Chromium (Debian's, headless), every other one an
aiortc viewer (what the tests use). Each plays 4 s (first decoded frame, frames decoded; Chromium
also its own PLI and NACK counts from getStats) and leaves. The edge's status gives the
recorded requests and the keyframe requests it sent upstream.

    flock /tmp/parley-heavy.lock python -m bench.edge_start_pli   # about 2 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCRtpSender, RTCSessionDescription

from .broadcast_chain import BROADCAST, Chain, machine_load
from .broadcast_edge import edge_on_air, make_media, publisher_pc
from .join_time import ARGS, CHROMIUM
from .sfus import new_pc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PLAY_S = 4.0

START_JS = """async (url) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const v = document.createElement('video');
  v.muted = true; v.autoplay = true; document.body.appendChild(v);
  pc.ontrack = (e) => { if (e.track.kind === 'video') v.srcObject = new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
  });
  const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/sdp'},
                              body: pc.localDescription.sdp});
  if (r.status !== 201) return 'WHEP ' + r.status;
  await pc.setRemoteDescription({type: 'answer', sdp: await r.text()});
  window.__pc = pc; window.__v = v;
  return 'ok';
}"""

STATS_JS = """async () => {
  const out = {};
  (await window.__pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') Object.assign(out, {
      framesDecoded: s.framesDecoded || 0, pliCount: s.pliCount || 0, firCount: s.firCount || 0,
      nackCount: s.nackCount || 0, packetsLost: s.packetsLost || 0,
      keyFramesDecoded: s.keyFramesDecoded || 0, freezeCount: s.freezeCount || 0});
  });
  return out;
}"""


async def one_viewer(page: Any, url: str) -> dict[str, Any]:
    t0 = time.monotonic()
    state = await page.evaluate(START_JS, url)
    if state != "ok":
        raise RuntimeError(state)
    first: float | None = None
    stats: dict[str, Any] = {}
    while time.monotonic() - t0 < PLAY_S:
        stats = await page.evaluate(STATS_JS)
        if first is None and stats.get("framesDecoded", 0) > 0:
            first = time.monotonic() - t0
        await asyncio.sleep(0.05)  # sampling getStats, not waiting for an event
    await page.evaluate("() => window.__pc.close()")
    return {"first_frame_s": first and round(first, 3), **stats}


async def aiortc_viewer(url: str) -> dict[str, Any]:
    """The same, played by aiortc (what the tests' viewers are): its jitter buffer and decoder."""
    pc = new_pc()
    v = pc.addTransceiver("video", "recvonly")
    v.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                           if c.mimeType.lower() in ("video/h264", "video/rtx")])
    pc.addTransceiver("audio", "recvonly")
    frames: list[float] = []
    t0 = time.monotonic()

    async def consume(track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()
                frames.append(time.monotonic() - t0)

    tasks = []
    pc.on("track", lambda t: t.kind == "video" and tasks.append(
        asyncio.ensure_future(consume(t))))
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=20) as http:
        r = await http.post(url, content=pc.localDescription.sdp,
                            headers={"Content-Type": "application/sdp"})
    await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
    await asyncio.sleep(PLAY_S)  # playing
    await pc.close()
    for t in tasks:
        t.cancel()
    return {"first_frame_s": frames and round(frames[0], 3), "framesDecoded": len(frames)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="parley-bbench-pli-") as tmp:
        media = make_media(Path(tmp))
    chain = Chain()
    pc = publisher_pc(*media)
    rng = random.Random(args.seed)
    out: dict[str, Any] = {"benchmark": "edge_start_pli",
                           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "loadavg_start": machine_load(), "viewers": []}
    try:
        edge = await edge_on_air(chain, pc, 90)
        async with httpx.AsyncClient(timeout=20) as http:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                   args=ARGS)
                page = await browser.new_page()
                await page.goto(f"{edge}/live/{BROADCAST}")  # same origin as the WHEP URL
                for i in range(args.viewers):
                    await asyncio.sleep(rng.uniform(0, 2))
                    before = (await http.get(f"{edge}/live/{BROADCAST}")).json()
                    client = "aiortc" if args.aiortc and i % 2 else "chromium"
                    whep = f"{edge}/live/{BROADCAST}/whep"
                    row = {"client": client, **(await one_viewer(page, whep)
                                                if client == "chromium"
                                                else await aiortc_viewer(whep))}
                    await asyncio.sleep(1.0)  # the edge's tick files the leg's record (3 s)
                    after = (await http.get(f"{edge}/live/{BROADCAST}")).json()
                    starts = after["cacheStarts"]
                    row["edge_start"] = starts[-1] if len(starts) > len(
                        before["cacheStarts"]) or len(starts) == 32 else None
                    row["upstream_keyframe_requests"] = (
                        after["forwarding"]["keyframe_requests"]
                        - before["forwarding"]["keyframe_requests"])
                    row["cached_start"] = after["cachedStarts"] > before["cachedStarts"]
                    out["viewers"].append(row)
                    print(f"  viewer {i}: {row}", flush=True)
                await browser.close()
    finally:
        await pc.close()
        chain.stop()
    out["loadavg_end"] = machine_load()
    out["summary"] = {c: summary([r for r in out["viewers"] if r["client"] == c])
                      for c in ("chromium", "aiortc")}
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    plis = [p for r in rows if r["edge_start"] for p in r["edge_start"]["plis"]]
    return {
        "viewers": len(rows), "cached_starts": sum(r["cached_start"] for r in rows),
        "first_frame_s": sorted(r["first_frame_s"] or -1 for r in rows),
        "burst_confirmed_s": sorted(r["edge_start"]["confirmedS"] or -1
                                    for r in rows if r["edge_start"]),
        "start_plis_at_s": sorted(p[0] for p in plis),
        "start_plis_upstream": sum(p[1] for p in plis),
        "start_plis_dropped": sum(not p[1] for p in plis),
        "start_plis_after_1s": sum(p[0] >= 1.0 for p in plis),
        "upstream_keyframe_requests": sum(r["upstream_keyframe_requests"] for r in rows),
        "chromium_pli_count": sum(r.get("pliCount", 0) for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.edge_start_pli", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--aiortc", action=argparse.BooleanOptionalAction, default=True,
                    help="every other viewer an aiortc one")
    ap.add_argument("--out", default=str(RESULTS / "edge_start_pli.json"))
    args = ap.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

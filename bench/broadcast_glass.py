"""Glass to glass over WebRTC: WHIP in -> transcoder -> relay -> edge -> WHEP out.

An aiortc publisher (H.264, aiortc's own libx264 encoder) sends a 30 fps camera whose frames show
the wall clock of their capture as a bar code (bench/broadcast_clock.py) to the ingest role over
WHIP. The transcoder role pulls the programme and makes the ladder, a relay pulls the transcoder, an
edge pulls the relay (every role its own process on loopback). aiortc WHEP viewers decode and read
the clock from each decoded picture: latency = wall clock at decode - clock drawn at capture. Same
machine, so one clock. Viewers at every tier split the total into hops:

- ``ingest``: the programme straight from the ingest (publisher encode + one hop),
- ``transcoder/<rung>``: + decode, scale, encode,
- ``edge/<rung>``: + relay + edge (what a viewer gets).

Not included: capture (the frame is drawn, not filmed) and display (decode is the end). The viewer
is aiortc, whose jitter buffer, like every aiortc hop's, hands a frame on only when the next
frame's first packet arrives (see docs/benchmarks.md).

    flock /tmp/parley-heavy.lock python -m bench.broadcast_glass   # about 1 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import time
from pathlib import Path
from typing import Any

import httpx
from aiortc import MediaStreamTrack

from tests.broadcast.clients import Publisher, Viewer

from .broadcast_chain import BROADCAST, Chain, machine_load, roles_buffer
from .broadcast_clock import latency_ms, now_ms, publish_clock, read_stamp
from .broadcast_edge import PY_SPY, profile_end, profile_start
from .load import cpu_seconds, percentile

RESULTS = Path(__file__).resolve().parent / "results"
GOAL = {"p50_ms": 400, "p95_ms": 700}


class ClockViewer(Viewer):
    """A WHEP viewer that reads the capture clock from every decoded video frame."""

    def __init__(self, name: str, url: str) -> None:
        super().__init__(url)
        self.name = name
        self.samples: list[tuple[float, int]] = []  # (monotonic at decode, latency ms)
        self.unreadable = 0

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind != "video":
                    self.audio_frames += 1
                    continue
                at = now_ms()
                self.video.append((time.monotonic(), frame.width, frame.height))
                stamp = read_stamp(frame)  # type: ignore[arg-type]
                if stamp is None:
                    self.unreadable += 1
                else:
                    self.samples.append((time.monotonic(), latency_ms(stamp, at)))


def summary(values: list[int]) -> dict[str, Any]:
    return {"frames": len(values), "p50_ms": percentile(values, 0.5),
            "p95_ms": percentile(values, 0.95), "p99_ms": percentile(values, 0.99),
            "min_ms": min(values, default=None), "max_ms": max(values, default=None)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    w, h = (int(x) for x in args.source.split("x"))
    rungs = [r.split(":")[0] for r in args.ladder.split(",")]
    if args.marker_jitter:
        from .broadcast_jitter import install

        install()  # the viewer's own receiver too: a browser hands a frame on at its end
    chain = Chain(args.marker_jitter)
    cam: Publisher | None = None
    viewers: list[ClockViewer] = []
    try:
        urls = chain.ladder(args.ladder, args.preset)
        cam = await publish_clock(urls["ingest"], (w, h))
        viewers = [ClockViewer("ingest", f"{urls['ingest']}/live/{BROADCAST}/whep")]
        viewers += [ClockViewer(f"transcoder/{rung}",
                                f"{urls['transcoder']}/live/{BROADCAST}/{rung}/whep")
                    for rung in rungs[-1:]]
        viewers += [ClockViewer(f"edge/{rung}", f"{urls['edge']}/live/{BROADCAST}/{rung}/whep")
                    for rung in rungs]
        for v in viewers:
            r = await v.play()
            if r.status_code != 201:
                raise RuntimeError(f"WHEP {v.name}: {r.status_code} {r.text}")
        deadline = time.monotonic() + 40
        while not all(len(v.samples) >= 30 for v in viewers):
            if time.monotonic() > deadline:
                raise RuntimeError("viewers not decoding: " + ", ".join(
                    f"{v.name}={len(v.samples)}/{v.unreadable}" for v in viewers))
            await asyncio.sleep(0.2)
        await asyncio.sleep(args.warm)
        load0 = machine_load()
        roles = list(chain.procs)
        cpu0 = {n: cpu_seconds(chain.pid(n)) for n in roles}
        spy = profile_start(chain.pid("transcoder"), args.seconds) if PY_SPY else None
        t0 = time.monotonic()
        await asyncio.sleep(args.seconds)
        t1 = time.monotonic()
        profile = await profile_end(*spy) if spy is not None else None
        cpu = {n: round((cpu_seconds(chain.pid(n)) - cpu0[n]) / (t1 - t0), 3) for n in roles}
        async with httpx.AsyncClient(timeout=5) as http:
            tx = (await http.get(f"{urls['transcoder']}/v1/status")).json()
        results = {}
        for v in viewers:
            values = [lat for at, lat in v.samples if t0 <= at < t1]
            sizes = sorted({(fw, fh) for at, fw, fh in v.video if t0 <= at < t1})
            results[v.name] = {**summary(values), "size": [f"{a}x{b}" for a, b in sizes],
                               "unreadable": v.unreadable,
                               "fps": round(len(values) / (t1 - t0), 1)}
            print(f"  {v.name:18} frames={len(values):4} p50={results[v.name]['p50_ms']} ms "
                  f"p95={results[v.name]['p95_ms']} ms max={results[v.name]['max_ms']} ms "
                  f"unreadable={v.unreadable}", flush=True)
        edge = results[f"edge/{rungs[0]}"]
        return {
            "benchmark": "broadcast_glass_to_glass_webrtc",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_start": load0, "loadavg_end": machine_load()},
            "setup": {"source": args.source, "fps": 30, "ladder": args.ladder,
                      "x264_preset": args.preset or "per rung (ladder.preset_for)",
                      "window_s": args.seconds,
                      "marker_jitter": args.marker_jitter, "roles_jitter_buffer": roles_buffer(),
                      "path": "aiortc WHIP publisher -> ingest -> transcoder -> relay -> edge "
                              "-> aiortc WHEP viewer (decode), processes on loopback"},
            "viewers": results,
            "role_cpu_cores": cpu,
            "transcoder_behind_s": tx.get("behindSeconds"),
            "transcoder_intake_dropped": tx.get("intakeDropped"),
            "transcoder_renditions": {r["name"]: {k: r.get(k) for k in (
                "preset", "frames", "dropped", "behindSeconds", "width", "actualHeight")}
                for r in tx.get("renditions", [])},
            "transcoder_decoded": tx.get("decoded"),
            "transcoder_profile": profile,
            "goal": GOAL,
            "met": {rung: results[f"edge/{rung}"]["p50_ms"] <= GOAL["p50_ms"]
                    and results[f"edge/{rung}"]["p95_ms"] <= GOAL["p95_ms"] for rung in rungs},
            "edge_top_rung": edge,
        }
    finally:
        for v in viewers:
            await v.close()
        if cam is not None:
            await cam.stop()
        chain.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.broadcast_glass", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="1280x720")
    ap.add_argument("--ladder", default="720p:3000,360p:800")
    ap.add_argument("--preset", default="",
                    help="the transcoder's PARLEY_X264_PRESET (default: its choice per rung)")
    ap.add_argument("--warm", type=float, default=3.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--marker-jitter", action="store_true",
                    help="experiment: a frame is complete at its RTP marker "
                         "(bench/broadcast_jitter.py)")
    ap.add_argument("--out", default=str(RESULTS / "broadcast_glass.json"))
    args = ap.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

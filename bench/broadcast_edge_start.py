"""Edge: time from a WHEP viewer's POST to its first decoded video frame, with the edge's keyframe
cache, against a viewer of the transcoder (frame path, held until the next keyframe) in the same
run.

The chain of bench/broadcast_chain.py (ingest -> transcoder -> relay -> edge, every role its own
process) with an aiortc camera (tests/broadcast/clients.py, 320x180) and one 180p rung (keyframe
every 2 s on the programme timeline; the transcoder ignores PLIs to keep that alignment, so its
new viewers wait for the next keyframe). Viewers join one at a time, alternating between the
transcoder and the edge, each after a seeded random pause of 0-2 s (so they land at every phase of
the GOP); a viewer is an aiortc peer connection that decodes, closed after its first frame.

    flock /tmp/parley-heavy.lock python -m bench.broadcast_edge_start   # about 1 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from tests.broadcast.clients import Publisher, Viewer

from .broadcast_chain import BROADCAST, Chain, machine_load, stream_key

RESULTS = Path(__file__).resolve().parent / "results"
RUNG = "180p"


async def first_frame(url: str, limit: float = 10.0) -> float | None:
    """Seconds from the WHEP POST to the first decoded video frame (None: none in ``limit``)."""
    viewer = Viewer(url)
    t0 = time.monotonic()
    try:
        if (await viewer.play()).status_code != 201:
            return None
        while not viewer.video:
            if time.monotonic() - t0 > limit:
                return None
            await asyncio.sleep(0.005)
        return viewer.video[0][0] - t0
    finally:
        await viewer.close()


def summary(values: list[float | None]) -> dict[str, Any]:
    ms = sorted(round(v * 1000) for v in values if v is not None)
    return {"viewers": len(values), "no_frame": sum(v is None for v in values),
            "p50_ms": round(statistics.median(ms)) if ms else None,
            "max_ms": ms[-1] if ms else None, "min_ms": ms[0] if ms else None, "all_ms": ms}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    chain = Chain()
    load0 = machine_load()
    cam: Publisher | None = None
    try:
        urls = chain.ladder(f"{RUNG}:200")
        cam = Publisher(urls["ingest"], BROADCAST, stream_key(), (320, 180))
        if (await cam.publish()).status_code != 201:
            raise RuntimeError("WHIP publish refused")
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = time.monotonic() + 30
            while True:  # the edge is receiving and holds a GOP
                s = (await http.get(f"{urls['edge']}/live/{BROADCAST}")).json()
                if s["renditions"][0]["packets"]["video"] > 200:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the edge receives nothing: {s}")
                await asyncio.sleep(0.2)
            rng = random.Random(args.seed)
            times: dict[str, list[float | None]] = {"transcoder": [], "edge": []}
            for _ in range(args.viewers):
                for tier in ("transcoder", "edge"):
                    await asyncio.sleep(rng.uniform(0, 2))
                    times[tier].append(await first_frame(
                        f"{urls[tier]}/live/{BROADCAST}/{RUNG}/whep"))
            edge = (await http.get(f"{urls['edge']}/live/{BROADCAST}")).json()["renditions"][0]
        return {"benchmark": "broadcast_edge_first_frame",
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "setup": {"source": "aiortc camera 320x180 30 fps", "rung": f"{RUNG}:200",
                          "keyframe_interval_s": 2, "viewers_per_tier": args.viewers,
                          "seed": args.seed},
                "results": {tier: summary(v) for tier, v in times.items()},
                "edge_cached_starts": edge["cachedStarts"],
                "loadavg": {"start": load0, "end": machine_load()}}
    finally:
        if cam is not None:
            await cam.stop()
        chain.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.broadcast_edge_start", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=10, help="per tier")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "broadcast_edge_start.json"))
    args = ap.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for tier, r in result["results"].items():
        print(f"  {tier:10} first frame p50 {r['p50_ms']} ms, max {r['max_ms']} ms, "
              f"none {r['no_frame']}/{r['viewers']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

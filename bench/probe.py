"""The benchmark's light process: publishers and one latency-probe subscriber.

Latency is measured here, not in the process that hosts the bulk subscribers, so the probe's
event loop is nearly idle and the figure is the SFU's, not the load generator's queueing. The
parent sends ``window <t0_ns> <t1_ns>``; this process answers with one JSON line: frames each
publisher sent in the window and the probe's latency percentiles.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from .load import StampTrack, Stats, percentile
from .sfus import driver

PROBE = 100000


async def main(name: str, endpoint: str, publishers: int, fps: float) -> None:
    stats = Stats()
    sfu = driver(name)
    await sfu.connect(endpoint)
    for i in range(publishers):
        await sfu.add_publisher(i, StampTrack(i, fps, stats))
    await asyncio.sleep(1.0)  # publishers flowing before anyone subscribes
    await sfu.add_subscriber(PROBE, publishers, stats)
    print(json.dumps({"ready": True, "feeds": getattr(sfu, "feeds", [])}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] != "window":
            break
        t0, t1 = int(line[1]), int(line[2])
        stats.reset(t0, t1)
        await asyncio.sleep(max(0.0, (t1 - time.monotonic_ns()) / 1e9) + 0.5)
        print(json.dumps({
            "sent": stats.sent_frames, "packets": stats.packets,
            "received": len(stats.received.get(PROBE, ())),
            "p50_ms": percentile(stats.latencies, 0.5) / 1e6,
            "p99_ms": percentile(stats.latencies, 0.99) / 1e6,
        }), flush=True)
    sfu.proc = None  # not ours to stop
    await sfu.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))

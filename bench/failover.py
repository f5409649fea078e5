"""Call-server failover time: a meeting's node SIGKILLed, or drained with a deadline, until every
page decodes everyone again on the other node, in real Chromium.

Per repetition a fresh region of the test bed's Redis gets two `parley media-node` call servers
and one `parley signaling` (tests/cluster.py); three Chromium pages (320x240 at 15 fps fake
cameras) meet on one node, then that node is killed (``kill``) or drained with a 3 s deadline
(``drain``, timed from the drain request, so it includes the deadline). The time ends when every
page is on the other node and has decoded 3 new video frames and 5 audio packets from each of the
others (tests/sfu/test_failover.py's ``back_on``, polled every 50 ms from the outside).

The tests check that the move happens; the time is measured here, against the 5 s goal of a
killed node. No Janus figure: Janus has no multi-node failover to compare.

    python -m bench.failover                # 5 repetitions of each
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.cluster import Cluster
from tests.conftest import CHROMIUM_ARGS, provision, wait_until
from tests.media.client import CONTROL
from tests.sfu.test_failover import back_on, start_meeting
from tests.signaling.browser import close, stats

from .load import percentile

RESULTS = Path(__file__).resolve().parent / "results"
DRAIN_DEADLINE = 3.0


def move(browser: Any, redis_url: str, kind: str, n: int) -> float:
    """One repetition: seconds from the kill (or the drain request) to everyone back."""
    with tempfile.TemporaryDirectory(prefix=f"parley-failover-{kind}-") as tmp:
        cluster = Cluster(redis_url.rsplit("/", 1)[0] + "/11", Path(tmp))
        try:
            a, b = cluster.node("a"), cluster.node("b")
            pages, home = start_meeting(cluster, browser, [f"{kind[0]}{n}x", f"{kind[0]}{n}y",
                                                          f"{kind[0]}{n}z"])
            ids = [stats(p)["identity"] for p in pages]
            victim = cluster.nodes[home]
            other = b if victim is a else a
            started = time.monotonic()
            if kind == "kill":
                victim["proc"].send_signal(signal.SIGKILL)
            else:
                httpx.post(f"{victim['url']}/v1/drain", json={"deadline": DRAIN_DEADLINE},
                           headers=CONTROL).raise_for_status()
            wait_until(back_on(pages, ids, other["id"]), 60, 0.05, what=f"{kind}: everyone back")
            elapsed = time.monotonic() - started
            close(*pages)
            return elapsed
        finally:
            cluster.stop()


def summary(samples: list[float]) -> dict[str, Any]:
    return {"p50": round(percentile(samples, 0.5), 2), "p95": round(percentile(samples, 0.95), 2),
            "min": round(min(samples), 2), "max": round(max(samples), 2),
            "samples": [round(s, 2) for s in samples]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "failover.json")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    env = provision.up()
    load0 = os.getloadavg()
    samples: dict[str, list[float]] = {"kill": [], "drain": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=env["CHROMIUM"], headless=True,
                                     args=CHROMIUM_ARGS)
        for n in range(1, args.repetitions + 1):
            for kind in samples:
                t = move(browser, env["REDIS_URL"], kind, n)
                samples[kind].append(t)
                print(f"[{n}/{args.repetitions}] {kind}: everyone back after {t:.2f} s",
                      file=sys.stderr, flush=True)
        browser.close()
    result = {
        "benchmark": "failover",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "loadavg_at_start": [round(x, 2) for x in load0],
                    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"pages": 3, "camera": "320x240@15 fake", "drain_deadline_s": DRAIN_DEADLINE},
        "kill_s": summary(samples["kill"]),
        "drain_s": summary(samples["drain"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

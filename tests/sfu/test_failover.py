"""Call-server failure and drain through signaling, in real Chromium: two `parley media-node`
processes registered in real Redis, `parley signaling` placing meetings on them."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster
from tests.conftest import wait_until
from tests.media.client import CONTROL
from tests.signaling.browser import close, open_client, stats, wait_media

pytestmark = [pytest.mark.browser, pytest.mark.redis]

CAM = "w=320&h=240&fps=15"


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_url.rsplit("/", 1)[0] + "/10", tmp_path)  # a database of its own
    yield c
    c.stop()


class Missing(str):
    """What a page still lacks: falsy for wait_until, shown in its timeout message."""

    def __bool__(self) -> bool:
        return False


def back_on(pages: list[Any], names: list[str], node: str) -> Callable[[], bool | Missing]:
    """Every page is on ``node`` and decodes video and receives audio from all the others."""
    def check() -> bool | Missing:
        for me, page in zip(names, pages, strict=True):
            s = stats(page)
            sfu = page.evaluate("({reasons: window.parley.state.sfu.reasons, errors: "
                                "window.parley.state.messages.filter(m => m.type === 'error')})")
            if (s["callServer"] or {}).get("node") != node:
                return Missing(f"{me} on {s['callServer']}, {sfu}")
            for other in (n for n in names if n != me):
                rows = [r for r in s["inbound"] if r["participant"] == other]
                if not any(r["kind"] == "video" and r["framesDecoded"] >= 3 for r in rows):
                    return Missing(f"{me}: no video from {other} ({rows}), {sfu}")
                if not any(r["kind"] == "audio" and r["packetsReceived"] >= 5 for r in rows):
                    return Missing(f"{me}: no audio from {other} ({rows}), {sfu}")
        return True
    return check


def start_meeting(cluster: Cluster, browser: Any, names: list[str],
                  env: dict[str, str] | None = None) -> tuple[list[Any], str]:
    """Browsers in one call-server meeting through a `parley signaling` of the cluster, all
    decoding each other; returns the pages and the node the meeting is on."""
    base = cluster.signaling(env)
    room = f"room-{uuid.uuid4().hex[:6]}"
    pages = [open_client(browser, f"{base}/m/{room}?name={n}&user={n}-{room}&topology=sfu&{CAM}")
             for n in names]
    ids = [f"{n}-{room}" for n in names]
    for me, page in zip(ids, pages, strict=True):
        wait_media(page, [(o, k, s) for o in ids if o != me
                          for k, s in (("video", "camera"), ("audio", "microphone"))])
    nodes = {stats(p)["callServer"]["node"] for p in pages}
    assert len(nodes) == 1, nodes  # a meeting lives on one node
    return pages, nodes.pop()


# How long a move takes is measured by bench/failover.py (docs/benchmarks.md: p50 against the 5 s
# goal); these tests check what happens, with a bound that only a broken move misses, since a
# loaded CI machine (2 cores, 50 % CPU steal) once took 8.9 s for a drain measured at 3.7 s.
RECOVERY_BOUND = 20.0


def test_call_server_killed_mid_call_clients_back_on_another_node(
        browser, cluster: Cluster) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    names = ["k1", "k2", "k3"]
    pages, home = start_meeting(cluster, browser, names)
    ids = [stats(p)["identity"] for p in pages]
    try:
        victim = cluster.nodes[home]
        survivor = b if victim is a else a
        victim["proc"].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(back_on(pages, ids, survivor["id"]), RECOVERY_BOUND, 0.05,
                   what="every client decoding everyone on the surviving node")
        elapsed = time.monotonic() - killed
        print(f"call server killed: all {len(names)} clients decoding again on "
              f"{survivor['id']} after {elapsed:.2f} s")
        assert all(p.evaluate("window.parley.state.sfu.reason") == "node_lost" for p in pages)
        st = httpx.get(f"{survivor['url']}/v1/status", headers=CONTROL).json()
        assert st["participants"] == len(names)
    finally:
        close(*pages)


def test_drain_with_deadline_moves_participants_and_the_node_ends_empty(
        browser, cluster: Cluster) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    names = ["d1", "d2", "d3"]
    pages, home = start_meeting(cluster, browser, names)
    ids = [stats(p)["identity"] for p in pages]
    drained = cluster.nodes[home]
    other = b if drained is a else a
    try:
        r = httpx.post(f"{drained['url']}/v1/drain", json={"deadline": 3.0}, headers=CONTROL)
        assert r.json()["draining"] is True
        started = time.monotonic()
        # before the deadline the meeting goes on where it is
        before = {r["participant"]: r["framesDecoded"] for r in stats(pages[0])["inbound"]
                  if r["kind"] == "video"}
        time.sleep(1.0)
        s = stats(pages[0])
        assert s["callServer"]["node"] == home
        assert all(r["framesDecoded"] > before[r["participant"]] for r in s["inbound"]
                   if r["kind"] == "video")
        # after it: everyone on the other node, decoding, and the drained node empty
        wait_until(back_on(pages, ids, other["id"]), RECOVERY_BOUND, 0.05,
                   what="moved off the drained node")
        moved = time.monotonic() - started
        print(f"drain (deadline 3 s): all clients decoding on {other['id']} {moved:.2f} s "
              "after the drain started")
        assert moved >= 3.0  # nobody was moved before the deadline
        reasons = [p.evaluate("window.parley.state.sfu.reasons") for p in pages]
        print("move reasons per client:", reasons)
        assert all("drain" in r for r in reasons), reasons
        def status(node: dict[str, Any]) -> dict[str, Any]:
            return httpx.get(f"{node['url']}/v1/status", headers=CONTROL).json()

        wait_until(lambda: status(drained)["participants"] == 0, 5, what="drained node empty")
        st = status(drained)
        assert st["meetings"] == 0 and st["draining"] is True
        assert status(other)["participants"] == len(names)
    finally:
        close(*pages)

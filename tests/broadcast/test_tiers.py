"""Relay tiers: `parley up` ingests, a relay pulls its programme over WHEP, an edge pulls the relay,
a viewer plays the edge: frames cross two extra hops undecoded and decode at the source's size; a
second viewer starts from the edge's keyframe cache.
A relay that is killed and restarted is pulled again by the edge without the viewer rejoining."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually, free_port, port_open, wait_until

Start = Callable[..., tuple[str, subprocess.Popen[bytes]]]


@pytest.fixture
def edge_relay(tmp_path: Path) -> Iterator[Start]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(upstream: str, tier: str, port: int | None = None) -> tuple[str,
                                                                          subprocess.Popen[bytes]]:
        port = port or free_port()
        log = (tmp_path / f"{tier}-{port}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "media-node", "--role", "edge-relay",
             "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PARLEY_UPSTREAM_URL": upstream, "PARLEY_TIER": tier,
                 "PARLEY_BROADCAST": "final"})
        procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what=tier)
        assert proc.poll() is None, (tmp_path / f"{tier}-{port}.log").read_text()
        return f"http://127.0.0.1:{port}", proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


async def test_ingest_relay_edge_viewer_and_a_relay_restart(
        parley_server: Callable[..., str], edge_relay: Start) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = Publisher(base, "final", key("final", "cam1"), (256, 144))
    assert (await cam.publish()).status_code == 201
    relay, relay_proc = edge_relay(f"{base}/live/final/whep", "relay")
    edge, _ = edge_relay(f"{relay}/live/final/whep", "edge")
    viewer = Viewer(f"{edge}/live/final/whep")
    http = httpx.AsyncClient(timeout=5)
    try:
        assert (await viewer.play()).status_code == 201

        async def playing(n: int = 20) -> bool:
            return len(viewer.video) >= n and viewer.audio_frames >= 20
        await eventually(playing, 25, "the viewer decoding through relay and edge")
        assert set(viewer.sizes()) == {(256, 144)}
        s = (await http.get(f"{edge}/live/final")).json()
        assert s["connected"] and s["viewers"] == 1 and s["tier"] == "edge", s
        assert (await http.get(f"{base}/live/final")).json()["viewers"] == 1  # the relay
        # a second viewer starts on the edge's cached GOP, not on the next keyframe
        late = Viewer(f"{edge}/live/final/whep")
        try:
            assert (await late.play()).status_code == 201
            async def late_playing() -> bool:
                return len(late.video) >= 10
            await eventually(late_playing, 25, "the late viewer decoding")
            assert set(late.sizes()) == {(256, 144)}
            after = (await http.get(f"{edge}/live/final")).json()
            assert after["cachedStarts"] == s["cachedStarts"] + 1, (s, after)
        finally:
            await late.close()
        # the relay dies and comes back on the same address: the edge pulls it again
        relay_port = int(relay.rsplit(":", 1)[1])
        relay_proc.kill()
        relay_proc.wait()
        edge_relay(f"{base}/live/final/whep", "relay", relay_port)
        before = len(viewer.video)

        async def resumed() -> bool:
            s = (await http.get(f"{edge}/live/final")).json()
            return s["upstreamSessions"] >= 2 and len(viewer.video) >= before + 30
        await eventually(resumed, 60, "the viewer's video resuming after the relay restart")
    finally:
        await viewer.close()
        await cam.stop()
        await http.aclose()

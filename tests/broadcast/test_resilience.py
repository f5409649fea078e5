"""Tiers that die, restart and scale under real WHEP viewers (issue 10 item 4).

Every role is a `parley media-node` process on loopback with the environment the operator gives
its Deployment (docs/broadcast.md, "Operator wiring"): ingest <- an aiortc WHIP camera; one
transcoder per rendition pulling the ingest's programme; the relay pulling the transcoder; the
region's edges pulling the relay. Viewers are aiortc WHEP players following the viewer page's
rule for a lost edge (region_viewer.py, the same as watch.js). The only time bound is the issue's
own: a killed edge's viewers play again from another edge within 5 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.broadcast.clients import Publisher
from tests.broadcast.region_viewer import RegionViewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually, free_port, port_open, wait_until

BROADCAST = "tv/show"
B = "tv.show"
RUNG = "180p"
PATH = f"/live/{B}/{RUNG}/whep"
MOVE_S = 5.0  # issue 10: a killed edge's viewers play from another edge within 5 s

Role = tuple[str, subprocess.Popen[bytes]]
Start = Callable[..., Awaitable[Role]]


def start_role(procs: list[subprocess.Popen[bytes]], tmp_path: Path, name: str,
               env: dict[str, str], port: int | None = None) -> Role:
    """A role process with the operator's environment, once it listens (appended to ``procs``)."""
    port = port or free_port()
    log = tmp_path / f"{name}-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "media-node", "--role", name, "--host",
         "127.0.0.1", "--port", str(port)], stdout=log.open("ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "PARLEY_BROADCAST": BROADCAST, "PARLEY_TOKEN_SECRET": SECRET,
             "PARLEY_WATCH_BROADCAST": "0", "PARLEY_X264_PRESET": "ultrafast", **env})
    procs.append(proc)
    wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what=name)
    assert proc.poll() is None, log.read_text()
    return f"http://127.0.0.1:{port}", proc


def stop_roles(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
async def role(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a role process (from a thread: the event loop keeps the camera sending)."""
    procs: list[subprocess.Popen[bytes]] = []

    async def start(name: str, env: dict[str, str], port: int | None = None) -> Role:
        return await asyncio.to_thread(start_role, procs, tmp_path, name, env, port)

    yield start
    stop_roles(procs)


def edge_env(relay: str) -> dict[str, str]:
    return {"PARLEY_TIER": "edge", "PARLEY_REGION": "eu", "PARLEY_RENDITIONS": RUNG,
            "PARLEY_UPSTREAM_URL": f"{relay}/live/{B}/{{rendition}}/whep"}


class Chain:
    """ingest -> transcoder (180p) -> relay, as the operator wires them, and a live camera."""

    def __init__(self, role: Start) -> None:
        self.role = role
        self.http = httpx.AsyncClient(timeout=5)
        self.cam: Publisher | None = None

    async def up(self) -> None:
        self.ingest, _ = await self.role("ingest", {"PARLEY_INGEST_SOURCES": "cam1"})
        self.cam = Publisher(self.ingest, B, key(B, "cam1"), (320, 240))
        assert (await self.cam.publish()).status_code == 201
        self.tx_env = {"PARLEY_UPSTREAM_URL": f"{self.ingest}/live/{B}/whep",
                       "PARLEY_RENDITION": RUNG, "PARLEY_HEIGHT": "180",
                       "PARLEY_BITRATE_KBPS": "200"}
        self.tx, self.tx_proc = await self.role("transcoder", self.tx_env)
        self.relay_env = {"PARLEY_TIER": "relay", "PARLEY_RENDITIONS": RUNG,
                          "PARLEY_UPSTREAM_URL": f"{self.tx}/live/{B}/{{rendition}}/whep"}
        self.relay, self.relay_proc = await self.role("edge-relay", self.relay_env)

    async def edge(self) -> Role:
        return await self.role("edge-relay", edge_env(self.relay))

    async def status(self, base: str) -> dict[str, Any]:
        return (await self.http.get(f"{base}/live/{B}")).json()

    async def pulling(self, edge: str) -> bool:
        """The edge subscribed upstream by itself and frames arrive."""
        r = (await self.status(edge))["renditions"][0]
        return bool(r["connected"] and r["packets"]["video"] > 0)

    async def close(self) -> None:
        if self.cam is not None:
            await self.cam.stop(delete=False)
        await self.http.aclose()


async def _start(viewers: list[RegionViewer]) -> None:
    await asyncio.gather(*(v.start() for v in viewers))


async def _close(viewers: list[RegionViewer]) -> None:
    await asyncio.gather(*(v.close() for v in viewers))


async def decoding(viewers: list[RegionViewer], since: float, frames: int = 30,
                   edge: str | None = None) -> None:
    async def done() -> bool:
        return all(v.decoded_since(since, edge) >= frames for v in viewers)
    await eventually(done, 30, f"{frames} frames decoded by every viewer since then")


async def test_edges_scaled_1_3_1_and_one_killed_under_viewers(role: Start) -> None:
    chain = Chain(role)
    viewers: list[RegionViewer] = []
    try:
        await chain.up()
        a, _ = await chain.edge()
        region = [a]  # what the region's URL leads to as the edges come and go

        def edges() -> list[str]:
            return list(region)
        viewers = [RegionViewer(edges, PATH) for _ in range(3)]
        await _start(viewers)
        assert all(v.edge == a for v in viewers)

        # 1 -> 3: the new edges subscribe upstream by themselves, before any viewer comes
        (b, b_proc), (c, c_proc) = await asyncio.gather(chain.edge(), chain.edge())
        region += [b, c]
        await eventually(lambda: chain.pulling(b), 20, "edge b pulling the relay")
        await eventually(lambda: chain.pulling(c), 20, "edge c pulling the relay")
        assert (await chain.status(chain.relay))["viewers"] == 3  # the three edges
        on_b, on_c = RegionViewer(edges, PATH, first=1), RegionViewer(edges, PATH, first=2)
        await _start([on_b, on_c])
        viewers += [on_b, on_c]
        assert (on_b.edge, on_c.edge) == (b, c)

        # edge b SIGKILLed: its viewer plays from another edge of the region within 5 s ...
        killed = time.monotonic()
        b_proc.kill()
        async def moved() -> tuple[float, str] | None:
            return on_b.first_frame_after(killed, b)
        at, edge = await eventually(moved, 30, "edge b's viewer decoding from another edge")
        await decoding([on_b], at, edge=edge)
        assert edge in (a, c) and at - killed < MOVE_S, (at - killed, on_b.lost)
        # ... and nobody else noticed: same one session, still decoding
        others = [v for v in viewers if v is not on_b]
        await decoding(others, killed)
        assert all(len(v.sessions) == 1 and not v.lost for v in others), [
            v.lost for v in others]

        # 3 -> 1: edge c is scaled away (SIGTERM): it ends its viewers' sessions (they see the
        # connection closed, not a silence) and exits 0; they move to a
        region.remove(b)
        region.remove(c)
        drained = time.monotonic()
        moving = [v for v in viewers if v.edge == c]
        c_proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(c_proc.wait, 10) == 0
        await decoding(viewers, drained, edge=a)
        assert moving and all(v.lost[-1][2].startswith("connection") for v in moving), [
            v.lost for v in moving]
        s = await chain.status(a)
        assert s["viewers"] == 5 and s["audience"]["whep"] == 5, s
        print(f"edge b killed: its viewer decoded from {edge} after {at - killed:.2f} s; "
              f"edge c drained: {len(moving)} viewer(s) moved; losses: "
              f"{[v.lost for v in viewers]}")
    finally:
        await _close(viewers)
        await chain.close()


async def test_a_transcoder_and_a_relay_restarted_resume_without_viewers_rejoining(
        role: Start) -> None:
    chain = Chain(role)
    viewers: list[RegionViewer] = []
    try:
        await chain.up()
        edge, _ = await chain.edge()
        viewers = [RegionViewer(lambda: [edge], PATH) for _ in range(2)]
        await _start(viewers)
        for tier in ("transcoder", "relay"):
            url, proc, env = ((chain.tx, chain.tx_proc, chain.tx_env) if tier == "transcoder"
                              else (chain.relay, chain.relay_proc, chain.relay_env))
            proc.kill()
            await asyncio.to_thread(proc.wait)
            # the Deployment's new pod answers at the same Service address
            _, new = await role(tier if tier == "transcoder" else "edge-relay", env,
                                int(url.rsplit(":", 1)[1]))
            restarted = time.monotonic()
            if tier == "transcoder":
                chain.tx_proc = new
            else:
                chain.relay_proc = new
            await decoding(viewers, restarted)
            # the same WHEP session all along: nobody rejoined
            assert all(len(v.sessions) == 1 and not v.lost for v in viewers), [
                v.lost for v in viewers]
            # the tier below pulled the restarted one by itself
            below = chain.relay if tier == "transcoder" else edge
            pulled = (await chain.status(below))["renditions"][0]
            assert pulled["upstreamSessions"] >= 2 and pulled["connected"], pulled
    finally:
        await _close(viewers)
        await chain.close()

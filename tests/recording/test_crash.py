"""A media node killed mid-recording: the recording still completes (stopped by signaling on its
own) from the chunks already in the store, missing at most the chunk that was in flight."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.recorder.creator import load_tracks
from parley.recorder.store import LocalStore
from parley.signaling.negotiation import Placement
from tests.conftest import free_port, port_open
from tests.media.client import CONTROL_KEY, wait_for

from .conftest import FixedDirectory, signaling
from .media import participant, probe

CHUNK_S = 2.0


Node = subprocess.Popen[bytes]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[[str], Node]]:
    """Start real `parley media-node --role call-server` processes (so they can be SIGKILLed);
    each has ``.port`` and ``.url``."""
    procs: list[Node] = []

    def start(node_id: str) -> Node:
        port = free_port()
        with (tmp_path / f"{node_id}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "parley.cli", "media-node", "--role", "call-server",
                 "--host", "127.0.0.1", "--port", str(port), "--node-id", node_id],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PARLEY_REDIS_URL": "",
                                                          "PARLEY_CONTROL_KEY": CONTROL_KEY})
        proc.port, proc.url = port, f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class Failover:
    """Places a room on the first node that is alive (what Redis placement does once a dead
    node's heartbeat expired)."""

    def __init__(self, procs: list[Node]) -> None:
        self.procs = procs

    async def place(self, room: str, participants: int, caps: list[Any]) -> Placement | None:
        for i, p in enumerate(self.procs):
            if p.poll() is None and port_open(p.port):  # type: ignore[attr-defined]
                return Placement(url=p.url, node=f"node{i}")  # type: ignore[attr-defined]
        return None


async def up(proc: Node) -> None:
    await wait_for(lambda: port_open(proc.port) or proc.poll() is not None,  # type: ignore
                   30, "media node")
    assert proc.poll() is None, "media node exited"


async def test_media_node_killed_mid_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               nodes: Callable[[str], Node]) -> None:
    node = nodes("cs-crash")
    port = node.port  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}"
    store = LocalStore(tmp_path / "store")
    room = f"crash-{uuid.uuid4().hex[:6]}"
    a, b = participant("a", room), participant("b", room)
    try:
        await wait_for(lambda: port_open(port) or node.poll() is not None, 30, "media node")
        assert node.poll() is None, (tmp_path / "node.log").read_text()
        async with signaling(tmp_path, FixedDirectory(url, "cs-crash"), monkeypatch,
                             store.url, CHUNK_S) as stack:
            await a.join(url)
            await b.join(url)
            await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 20,
                           "a and b decoding each other")
            host = stack.token("a", room, ("record",))
            r = await stack.control(room, "start", host)
            assert r.status_code == 200, r.text
            rid, started = r.json()["id"], time.time()
            await asyncio.sleep(8.0)
            node.send_signal(signal.SIGKILL)
            killed = time.time()
            await asyncio.to_thread(node.wait, 10)
            # nobody presses stop: with the node gone and nobody in the room, signaling stops
            # the recording by itself and compiles what the store holds
            rec = await stack.wait_ready(room, host)
            assert rec["state"] == "ready", rec

            manifest = json.loads(store.get(f"recordings/{rid}/manifest.json"))
            assert manifest["nodeLost"] is True and manifest["stoppedBy"] == "auto"
            tracks = load_tracks(store, rid)
            assert {t.track for t in tracks} == {"a-camera", "a-mic", "b-camera", "b-mic"}
            for t in tracks:  # each track reaches the kill, less at most one chunk interval
                assert t.frames[0][0] - started < 1.0, (t.name, t.frames[0][0] - started)
                assert killed - t.frames[-1][0] <= CHUNK_S + 0.3, (t.name,
                                                                   killed - t.frames[-1][0])
            composite = probe(store.local_path(f"recordings/{rid}/files/composite.mp4"))
            assert composite["streams"] == ["audio", "video"]
            lost = (killed - started) - composite["duration"]
            assert lost <= CHUNK_S + 0.3, (composite["duration"], killed - started)
            assert min(composite["variances"]) > 100
    finally:
        await asyncio.gather(a.close(leave=False), b.close(leave=False))


async def test_recording_follows_the_meeting_to_another_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nodes: Callable[[str], Node]) -> None:
    """The node dies, the participants rejoin on another node: the recording goes on there, and
    what is missing is the chunk in flight plus the time nobody's media reached any node."""
    monkeypatch.setenv("PARLEY_RECORDING_WATCH_S", "0.5")
    first, second = nodes("cs-first"), nodes("cs-second")
    await up(first)
    await up(second)
    store = LocalStore(tmp_path / "store")
    room = f"move-{uuid.uuid4().hex[:6]}"
    a, b = participant("a", room), participant("b", room)
    try:
        async with signaling(tmp_path, Failover([first, second]), monkeypatch, store.url,
                             CHUNK_S) as stack:
            for c in (a, b):
                await c.join(first.url)  # type: ignore[attr-defined]
            await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 20,
                           "decoding on the first node")
            host = stack.token("a", room, ("record",))
            r = await stack.control(room, "start", host)
            assert r.status_code == 200, r.text
            rid, started = r.json()["id"], time.time()
            await asyncio.sleep(6.0)
            first.send_signal(signal.SIGKILL)
            killed = time.time()
            await wait_for(lambda: a.node_lost.is_set() and b.node_lost.is_set(), 30,
                           "participants noticing the node is gone")
            for c in (a, b):  # what signaling does for them: re-place and rejoin
                await c.join(second.url)  # type: ignore[attr-defined]
            await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 20,
                           "decoding on the second node")
            resumed = time.time()
            await asyncio.sleep(5.0)
            r = await stack.control(room, "stop", host)
            assert r.status_code == 200, r.text
            stopped = time.time()
            rec = await stack.wait_ready(room, host)
            assert rec["state"] == "ready", rec
    finally:
        await asyncio.gather(a.close(leave=False), b.close(leave=False))

    manifest = json.loads(store.get(f"recordings/{rid}/manifest.json"))
    assert manifest["nodes"] == [first.url, second.url]  # type: ignore[attr-defined]
    for t in load_tracks(store, rid):
        times = [f[0] for f in t.frames]
        gaps = [(x, y) for x, y in itertools.pairwise(times) if y - x > 0.5]
        # at most one hole, around the failover (a track whose frames kept coming within 0.5 s
        # across the move, as audio can, has none)
        assert len(gaps) <= 1, (t.name, gaps)
        for before, after in gaps:
            print(f"{t.name}: lost before kill {killed - before:.2f} s, "
                  f"recorded again {after - resumed:+.2f} s after media resumed")
            assert killed - before <= CHUNK_S + 0.3, (t.name, killed - before)  # chunk in flight
            assert after - resumed <= 1.0, (t.name, after - resumed)  # recorded again at once
        assert times[0] - started < 1.0 and stopped - times[-1] < 1.0, t.name
    composite = probe(store.local_path(f"recordings/{rid}/files/composite.mp4"))
    assert abs(composite["duration"] - (stopped - started)) < 1.5, composite["duration"]

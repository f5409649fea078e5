"""A media node killed mid-recording: the recording still completes (stopped by signaling on its
own) from the chunks already in the store, missing at most the chunk that was in flight."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.recorder.creator import load_tracks
from parley.recorder.store import LocalStore
from tests.conftest import free_port, port_open
from tests.media.client import wait_for

from .conftest import FixedDirectory, signaling
from .media import participant, probe

CHUNK_S = 2.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `parley media-node --role call-server` process (so it can be SIGKILLed)."""
    port = free_port()
    with (tmp_path / "node.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "media-node", "--role", "call-server",
             "--host", "127.0.0.1", "--port", str(port), "--node-id", "cs-crash"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PARLEY_REDIS_URL": ""})
    proc.port = port  # type: ignore[attr-defined]
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def test_media_node_killed_mid_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               node: subprocess.Popen[bytes]) -> None:
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

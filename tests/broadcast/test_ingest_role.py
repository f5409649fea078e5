"""The ingest role as a process (`parley media-node --role ingest`, configured by the environment
the operator sets): an aiortc WHIP publisher, an aiortc WHEP viewer decoding the programme.

Debian bookworm's simple-whip-client (the independent publisher the issue names) aborts at start
here: "libsoup2 symbols detected" (it links libsoup 2.4, libnice 0.1.21 links libsoup 3), so it
is not used (docs/broadcast.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually, free_port, port_open, wait_until


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "ingest.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "media-node", "--role", "ingest", "--host",
         "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PARLEY_TOKEN_SECRET": SECRET, "PARLEY_BROADCAST": "sports/final",
             "PARLEY_INGEST_SOURCES": "cam1,cam2", "PARLEY_DATA_DIR": str(tmp_path)})
    wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what="ingest")
    assert proc.poll() is None, (tmp_path / "ingest.log").read_text()
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def test_ingest_role_serves_its_broadcast_to_its_sources(ingest: str) -> None:
    url = f"{ingest}/live/sports.final/whip"
    async with httpx.AsyncClient(timeout=10) as http:
        # the ingest serves its one broadcast, to its declared sources only
        r = await http.post(f"{ingest}/live/other/whip", content="v=0",
                            headers={"Content-Type": "application/sdp",
                                     "Authorization": f"Bearer {key('other', 'cam1')}"})
        assert r.status_code == 404 and r.json()["detail"]["code"] == "broadcast_unknown"
        r = await http.post(url, content="v=0\r\n", headers={
            "Content-Type": "application/sdp",
            "Authorization": f"Bearer {key('sports.final', 'cam9')}"})
        assert r.status_code == 403 and r.json()["detail"]["code"] == "source_unknown"
        assert (await http.get(f"{ingest}/livez")).status_code == 200
    cam = Publisher(ingest, "sports.final", key("sports.final", "cam2"), (320, 180))
    viewer = Viewer(f"{ingest}/live/sports.final/whep")
    try:
        assert (await cam.publish()).status_code == 201
        assert (await viewer.play()).status_code == 201

        async def playing() -> bool:
            return len(viewer.video) >= 15 and viewer.audio_frames >= 15
        await eventually(playing, 20, "the WHEP viewer decoding the ingest's programme")
        assert set(viewer.sizes()) == {(320, 180)}
    finally:
        await viewer.close()
        await cam.stop()

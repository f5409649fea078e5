"""WHIP in, WHEP out through a real `parley up`: aiortc publishers (H.264 + Opus) and viewers."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from parley import tokens
from tests.broadcast.clients import Publisher, Viewer
from tests.conftest import eventually

SECRET = "broadcast-test-secret-of-at-least-32-bytes"


def key(broadcast: str, source: str, *grants: str) -> str:
    return tokens.mint(SECRET, identity=source, room=tokens.broadcast_room(broadcast),
                       grants=grants or ("publish",))


async def test_whip_publisher_reaches_a_whep_viewer_at_its_size(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = Publisher(base, "final", key("final", "cam1"), (320, 240))
    viewer = Viewer(f"{base}/live/final/whep")
    try:
        r = await cam.publish()
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/sdp")
        assert r.headers["location"].startswith("/live/final/whip/")
        assert "H264" in r.text and "packetization-mode=1" in r.text and "VP8" not in r.text
        r = await viewer.play()
        assert r.status_code == 201, r.text
        assert r.headers["location"].startswith("/live/final/whep/")

        async def frames() -> bool:
            return len(viewer.video) >= 20 and viewer.audio_frames >= 20
        await eventually(frames, 20, "decoded video and audio at the viewer")
        assert set(viewer.sizes()) == {(320, 240)}, set(viewer.sizes())
        status = httpx.get(f"{base}/live/final").json()
        assert status["onAir"] == {"video": "cam1", "audio": "cam1"}, status
        assert status["viewers"] == 1
        # DELETE on the Location ends the source
        r = httpx.delete(base + cam.location,
                         headers={"Authorization": f"Bearer {key('final', 'cam1')}"})
        assert r.status_code == 200, r.text
        assert httpx.get(f"{base}/live/final").json()["sources"] == {}
    finally:
        await cam.stop(delete=False)
        await viewer.close()

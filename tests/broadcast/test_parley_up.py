"""WHIP in, WHEP out through a real `parley up`: aiortc publishers (H.264 + Opus) and viewers."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from parley import tokens
from tests.broadcast.clients import Publisher, Viewer
from tests.conftest import eventually

SECRET = "broadcast-test-secret-of-at-least-32-bytes"


def key(broadcast: str, source: str, *grants: str, secret: str = SECRET) -> str:
    return tokens.mint(secret, identity=source, room=tokens.broadcast_room(broadcast),
                       grants=grants or ("publish",))


async def test_whip_publisher_reaches_a_whep_viewer_at_its_size(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    http = httpx.AsyncClient(base_url=base, timeout=10)
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
        status = (await http.get("/live/final")).json()
        assert status["onAir"] == {"video": "cam1", "audio": "cam1"}, status
        assert status["viewers"] == 1
        # a WHEP session takes no PATCH: 405, as RFC 9725 says (WHIP trickle: test_whip_trickle)
        r = await http.patch(viewer.location, content=b"a=candidate:1",
                             headers={"Content-Type": "application/trickle-ice-sdpfrag"})
        assert r.status_code == 405 and "DELETE" in r.headers["allow"], r.text
        # another source's key may not end cam1; cam1's own DELETE ends it
        r = await http.delete(cam.location, headers={
            "Authorization": f"Bearer {key('final', 'cam2')}"})
        assert r.status_code == 403 and r.json()["detail"]["code"] == "not_your_session"
        r = await http.delete(cam.location,
                              headers={"Authorization": f"Bearer {key('final', 'cam1')}"})
        assert r.status_code == 200, r.text
        assert (await http.get("/live/final")).json()["sources"] == {}
        r = await http.delete(viewer.location)
        assert r.status_code == 200 and (await http.get("/live/final")).json()["viewers"] == 0
    finally:
        await cam.stop(delete=False)
        await viewer.close()
        await http.aclose()


async def test_cut_between_two_cameras_on_a_keyframe_without_a_gap(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    http = httpx.AsyncClient(base_url=base, timeout=10)
    cam1 = Publisher(base, "cup", key("cup", "cam1"), (320, 240))
    cam2 = Publisher(base, "cup", key("cup", "cam2"), (192, 144))
    viewer = Viewer(f"{base}/live/cup/whep")
    director = {"Authorization": f"Bearer {key('cup', 'director', 'admin')}"}
    try:
        for cam in (cam1, cam2):
            assert (await cam.publish()).status_code == 201
        assert (await viewer.play()).status_code == 201

        async def on(size: tuple[int, int], n: int = 15) -> bool:
            return viewer.sizes()[-n:] == [size] * n
        await eventually(lambda: on((320, 240)), 20, "cam1 (first connected) on air")
        # only an admin token of the broadcast sets the programme
        r = await http.put("/live/cup/program", json={"video": "cam2"},
                           headers={"Authorization": f"Bearer {key('cup', 'cam2')}"})
        assert r.status_code == 403 and r.json()["detail"]["code"] == "grant_missing"
        cut_at = time.monotonic()
        r = await http.put("/live/cup/program", json={"video": "cam2"}, headers=director)
        assert r.status_code == 200 and r.json()["program"]["video"] == "cam2", r.text
        await eventually(lambda: on((192, 144)), 10, "cam2 on air after the cut")
        cut_took = next(t for t, w, _ in viewer.video if t >= cut_at and w == 192) - cut_at
        gap = viewer.max_gap(cut_at - 1.0)
        status = (await http.get("/live/cup")).json()
        assert status["onAir"] == {"video": "cam2", "audio": "cam2"} and status["cuts"] == 1
        print(f"cut took {cut_took * 1000:.0f} ms, largest frame gap {gap * 1000:.0f} ms")
        assert gap < 0.5, f"the viewer's video stalled {gap:.2f}s around the cut"
        # back to cam1, its audio kept: the programme is cam1's video with cam2's audio
        r = await http.put("/live/cup/program", json={"video": "cam1", "audio": ["cam2"]},
                           headers=director)
        assert r.status_code == 200
        await eventually(lambda: on((320, 240)), 10, "cam1 back on air")
        status = (await http.get("/live/cup")).json()
        assert status["onAir"] == {"video": "cam1", "audio": "cam2"}, status
        # the camera on air leaves: the other one takes over, the viewer keeps playing
        await cam1.stop()
        await eventually(lambda: on((192, 144)), 10, "cam2 after cam1 left")
    finally:
        for c in (cam1, cam2):
            await c.stop(delete=False)
        await viewer.close()
        await http.aclose()

"""Out-of-spec WHIP/WHEP requests get a clear 4xx and harm nothing: the same `parley up` keeps
serving a publisher and a viewer afterwards."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually


async def test_bad_whip_and_whep_requests_are_refused_and_the_server_keeps_serving(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    http = httpx.AsyncClient(base_url=base, timeout=10)
    good = key("show", "cam1")
    sdp = {"Content-Type": "application/sdp"}
    offer = await Publisher(base, "show", good, (160, 120)).offer()

    async def whip(body: str | bytes, headers: dict[str, str]) -> httpx.Response:
        return await http.post("/live/show/whip", content=body, headers=headers)

    def code(r: httpx.Response) -> tuple[int, str]:
        return r.status_code, r.json()["detail"]["code"]

    try:
        auth = {"Authorization": f"Bearer {good}"}
        assert code(await whip(offer, {**auth, "Content-Type": "application/json"})) == (
            415, "content_type")
        assert code(await whip(offer, auth)) == (415, "content_type")  # no content type
        assert code(await whip("hello", {**auth, **sdp})) == (400, "sdp_invalid")
        assert code(await whip(b"\xff\xfe\x00garbage", {**auth, **sdp})) == (400, "sdp_invalid")
        assert code(await whip("v=0\r\n", {**auth, **sdp})) == (400, "sdp_invalid")
        r = await whip(offer, sdp)
        assert code(r) == (401, "token_missing") and "Bearer" in r.headers["www-authenticate"]
        forged = key("show", "cam1", secret="another-secret-of-at-least-32-bytes-x")
        assert code(await whip(offer, {"Authorization": f"Bearer {forged}", **sdp})) == (
            401, "token_invalid")
        other = key("another-show", "cam1")
        assert code(await whip(offer, {"Authorization": f"Bearer {other}", **sdp})) == (
            401, "token_invalid")
        viewer_only = key("show", "cam1", "subscribe")
        assert code(await whip(offer, {"Authorization": f"Bearer {viewer_only}", **sdp})) == (
            403, "grant_missing")
        vp8 = await Publisher(base, "show", good, (160, 120), video_mime="video/vp8").offer()
        r = await whip(vp8, {**auth, **sdp})
        assert code(r) == (400, "codec_unsupported") and "VP8" in r.text, r.text
        r = await http.post("/live/show/whep", content=offer, headers=sdp)  # a sendonly offer
        assert code(r) == (404, "broadcast_unknown")  # nothing published yet
        r = await http.post("/live/Bad_Name!/whip", content=offer, headers={**auth, **sdp})
        assert r.status_code == 404
        assert code(await http.delete("/live/show/whip/nope", headers=auth)) == (
            404, "session_unknown")
        r = await http.options("/live/show/whip")
        assert r.status_code == 204 and r.headers["accept-post"] == "application/sdp"
        assert "POST" in r.headers["access-control-allow-methods"]
        # still serving, with a live source under a burst of 1,000 malformed requests
        cam = Publisher(base, "show", good, (160, 120))
        viewer = Viewer(f"{base}/live/show/whep")
        try:
            assert (await cam.publish()).status_code == 201
            loc = cam.location or ""
            trickle = {**auth, "Content-Type": "application/trickle-ice-sdpfrag"}
            for i in range(250):
                burst = [
                    (await whip(f"v=0\r\nm=video {i} junk", {**auth, **sdp}), 400),
                    (await http.post("/live/show/whep", content=f"v=0\r\nm=audio {i} x",
                                     headers=sdp), 400),
                    (await http.patch(loc, content=f"a=candidate:{i} junk", headers=trickle),
                     400),
                    (await http.delete(f"/live/show/whip/x{i}", headers=auth), 404),
                ]
                for r, status in burst:
                    assert r.status_code == status, (i, r.status_code, r.text)
            r = await http.post("/live/show/whep", content=offer, headers=sdp)
            assert code(r) == (400, "direction")  # a WHEP offer must receive
            assert (await viewer.play()).status_code == 201

            async def playing() -> bool:
                return len(viewer.video) >= 10
            await eventually(playing, 20, "the viewer decodes after the bad requests")
            status = (await http.get("/live/show")).json()
            assert status["onAir"]["video"] == "cam1" and status["sources"]["cam1"]["trickled"] == 0
        finally:
            await cam.stop()
            await viewer.close()
    finally:
        await http.aclose()

"""Trickle ICE on a WHIP session (RFC 9725 4.3.1, RFC 8840 fragments) through a real
`parley up`: an aiortc publisher sends its offer without candidates and trickles them by PATCH;
ICE restart and bad PATCHes are refused with clear 4xx and the broadcast keeps playing."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from aiortc import sdp as aiosdp

from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually

TRICKLE = "application/trickle-ice-sdpfrag"


class TricklingPublisher(Publisher):
    """Posts its offer without a=candidate lines, keeps them for PATCH."""

    async def offer(self) -> str:
        full = await super().offer()
        parsed = aiosdp.SessionDescription.parse(full)
        media = parsed.media[0]
        self.mid = media.rtp.muxId
        self.ufrag, self.pwd = media.ice.usernameFragment, media.ice.password
        self.candidates = sorted({line for line in full.splitlines()
                                  if line.startswith("a=candidate:")})
        assert self.candidates, full
        return "\r\n".join(line for line in full.splitlines()
                           if not line.startswith(("a=candidate:", "a=end-of-candidates"))) + "\r\n"

    def fragment(self, *lines: str, ufrag: str | None = None, pwd: str | None = None) -> str:
        return "\r\n".join([f"a=ice-ufrag:{ufrag or self.ufrag}", f"a=ice-pwd:{pwd or self.pwd}",
                            "m=video 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{self.mid}", *lines]) + "\r\n"


async def test_trickled_candidates_and_refused_patches(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    http = httpx.AsyncClient(base_url=base, timeout=10)
    cam = TricklingPublisher(base, "tr", key("tr", "cam1"), (320, 240))
    viewer = Viewer(f"{base}/live/tr/whep")
    try:
        r = await cam.publish()
        assert r.status_code == 201, r.text
        etag = r.headers["etag"]
        assert etag.startswith('"') and len(etag) > 10
        loc = cam.location
        assert loc is not None
        own = {"Authorization": f"Bearer {cam.token}", "Content-Type": TRICKLE,
               "If-Match": etag}

        async def patch(body: str | bytes, **headers: str) -> httpx.Response:
            return await http.patch(loc, content=body, headers={**own, **headers})

        # the preflight says what PATCH takes
        r = await http.options(loc)
        assert r.status_code == 204 and r.headers["accept-patch"] == TRICKLE
        # the publisher's own candidates, trickled in two PATCHes, then end-of-candidates
        half = len(cam.candidates) // 2 or 1
        r = await patch(cam.fragment(*cam.candidates[:half]))
        assert r.status_code == 204 and r.headers["etag"] == etag, r.text
        r = await patch(cam.fragment(*cam.candidates[half:], "a=end-of-candidates"))
        assert r.status_code == 204, r.text

        async def connected() -> dict | None:
            s = (await http.get("/live/tr")).json()["sources"].get("cam1")
            return s if s and s["frames"]["video"] >= 10 else None
        source = await eventually(connected, 20, "cam1's frames at the ingest")
        assert source["trickled"] == len(cam.candidates), source

        # refused, each with its code; the session lives on
        cases: list[tuple[int, str, httpx.Response]] = [
            (401, "token_missing", await http.patch(loc, content=cam.fragment(),
                                                    headers={"Content-Type": TRICKLE})),
            (403, "not_your_session", await patch(cam.fragment(), Authorization=(
                f"Bearer {key('tr', 'cam2')}"))),
            (404, "session_unknown", await http.patch(loc + "x", content=cam.fragment(),
                                                      headers=own)),
            (415, "content_type", await patch(cam.fragment(), **{
                "Content-Type": "application/sdp"})),
            (412, "etag_mismatch", await patch(cam.fragment(), **{"If-Match": '"other"'})),
            (422, "ice_restart_unsupported", await patch(
                cam.fragment(ufrag="newufrag", pwd="newpassword0123456789abcd"),
                **{"If-Match": "*"})),
            (422, "ice_restart_unsupported", await patch(
                cam.fragment(ufrag="newufrag", pwd="newpassword0123456789abcd"))),
            (400, "sdpfrag_invalid", await patch("hello, ICE")),
            (400, "sdpfrag_invalid", await patch(b"\xff\xfe\x00")),
            (400, "sdpfrag_invalid", await patch("")),
            (400, "sdpfrag_invalid", await patch(cam.fragment("a=candidate:garbage"))),
            (400, "sdpfrag_invalid", await patch(cam.fragment().replace(
                f"a=mid:{cam.mid}", "a=mid:nine"))),
            (400, "candidates_ended", await patch(cam.fragment(
                "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"))),
            (413, "sdpfrag_too_large", await patch("a=x\r\n" * 4000)),
        ]
        for status, code, r in cases:
            assert (r.status_code, r.json()["detail"]["code"]) == (status, code), (
                status, code, r.status_code, r.text)
        assert cases[3][2].headers["accept-patch"] == TRICKLE
        assert "www-authenticate" in cases[0][2].headers
        # WHEP sessions take no PATCH: 405 with Allow
        assert (await viewer.play()).status_code == 201
        r = await http.patch(viewer.location or "", content=cam.fragment(),
                             headers={"Content-Type": TRICKLE})
        assert r.status_code == 405 and "DELETE" in r.headers["allow"], r.text

        async def playing() -> bool:
            return len(viewer.video) >= 20
        await eventually(playing, 20, "the viewer decoding after the refused PATCHes")
        assert set(viewer.sizes()) == {(320, 240)}
    finally:
        await cam.stop()
        await viewer.close()
        await http.aclose()


async def test_too_many_trickled_candidates(parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    cam = TricklingPublisher(base, "many", key("many", "cam1"), (160, 120))
    try:
        assert (await cam.publish()).status_code == 201
        flood = [f"a=candidate:{i} 1 udp 2130706431 127.0.0.1 {20000 + i} typ host"
                 for i in range(33)]
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            r = await http.patch(cam.location or "", content=cam.fragment(*flood), headers={
                "Authorization": f"Bearer {cam.token}", "Content-Type": TRICKLE})
            assert r.status_code == 400 and r.json()["detail"]["code"] == "too_many_candidates"
            # without If-Match (clients that do not send it) a fragment is still taken
            r = await http.patch(cam.location or "", content=cam.fragment(*cam.candidates),
                                 headers={"Authorization": f"Bearer {cam.token}",
                                          "Content-Type": TRICKLE})
            assert r.status_code == 204, r.text
    finally:
        await cam.stop()

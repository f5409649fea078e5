"""A Meeting as a broadcast source, through a real `parley up`: two aiortc participants publish
colour-coded video (alice red in H.264, bob blue in VP8, which the ingest converts while he is on
air) and a tone or silence to the embedded call server; the
broadcast's source `stage` is the meeting (PUT /live/{b}/sources, what spec.sources[].meeting
gives the ingest role). The ingest joins as a hidden subscriber; a WHEP viewer of the programme
decodes alice's red while she talks, bob's blue once he talks and she is quiet, and alice again
when the source names her as its participant."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import av
import httpx
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

from parley.tokens import control_key
from tests.broadcast.clients import Viewer
from tests.broadcast.test_audio_mix import Tone
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually

RED, BLUE = (81, 90, 240), (41, 240, 110)  # Y, U, V


class Colour(VideoStreamTrack):
    """A solid 160x120 picture of one colour, 30 fps."""

    def __init__(self, yuv: tuple[int, int, int]) -> None:
        super().__init__()
        self.yuv = yuv

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(160, 120, "yuv420p")
        for plane, value in zip(frame.planes, self.yuv, strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        return frame


class Participant:
    """A meeting participant publishing H.264 + Opus straight to the call server's control API
    (what signaling does for a browser); it subscribes to nobody."""

    def __init__(self, base: str, meeting: str, name: str, yuv: tuple[int, int, int],
                 loud: bool, codec: str = "video/h264") -> None:
        self.url = f"{base}/media/v1/meetings/{meeting}/participants"
        self.name = name
        self.voice = Tone(700.0, 0.5 if loud else 0.0)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                                     bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        video = self.pc.addTransceiver(Colour(yuv), "sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.lower() == codec])
        self.pc.addTransceiver(self.voice, "sendonly")

    async def join(self, http: httpx.AsyncClient) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        r = await http.post(self.url, json={"sdp": self.pc.localDescription.sdp,
                                            "participant": self.name, "subscribe": False})
        assert r.status_code == 200, r.text
        await self.pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))

    def talks(self, loud: bool) -> None:
        self.voice.amplitude = 0.5 if loud else 0.0


class ColourViewer(Viewer):
    """A WHEP viewer that keeps the mean V (red-difference) of each decoded picture."""

    def __init__(self, url: str) -> None:
        self.v: list[float] = []
        super().__init__(url)

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    yuv = frame.to_ndarray(format="yuv420p")  # Y rows, then U, then V
                    self.v.append(float(yuv[frame.height * 5 // 4:].mean()))

    def showing(self, colour: tuple[int, int, int], n: int = 15) -> bool:
        last = self.v[-n:]
        return len(last) == n and all(abs(x - colour[2]) < 25 for x in last)


async def test_a_meeting_source_follows_the_active_speaker(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    control = httpx.AsyncClient(timeout=20, headers={
        "Authorization": f"Bearer {control_key(SECRET)}"})
    http = httpx.AsyncClient(base_url=base, timeout=20, headers={
        "Authorization": f"Bearer {key('show', 'director', 'admin')}"})
    alice = Participant(base, "standup", "alice", RED, loud=True)
    bob = Participant(base, "standup", "bob", BLUE, loud=False, codec="video/vp8")
    viewer = ColourViewer(f"{base}/live/show/whep")

    async def stage() -> dict[str, Any]:
        return (await http.get("/live/show")).json()["meetings"]["stage"]

    async def sources(participant: str | None = None) -> None:
        r = await http.put("/live/show/sources", json={"sources": [
            {"name": "stage", "meeting": "standup", "participant": participant}]})
        assert r.status_code == 200, r.text

    try:
        for p in (alice, bob):
            await p.join(control)
        r = await http.put("/live/show/sources", json={"sources": [{"name": "stage"}]})
        assert r.status_code == 400 and r.json()["detail"]["code"] == "sources_invalid"
        await sources()
        assert (await viewer.play()).status_code == 201
        await eventually(lambda: _async(viewer.showing(RED)), 20, "alice (red) on air")
        s = await stage()
        assert s["activeSpeaker"] == "alice" and s["onAir"] == "alice", s
        assert set(s["participants"]) == {"alice", "bob"}, s
        status = (await control.get(f"{base}/media/v1/status")).json()
        assert "broadcast:show/stage" in status["participant_ids"]["standup"], status

        alice.talks(False)
        bob.talks(True)
        await eventually(lambda: _async(viewer.showing(BLUE)), 15, "bob (blue) on air")
        s = await stage()
        assert s["activeSpeaker"] == "bob" and s["switches"] >= 2, s
        assert "video:video/vp8" in s["participants"]["bob"] and s["converted"]["frames"] >= 15, s
        print("after bob spoke:", s)

        await sources("alice")  # named: alice, though bob talks
        await eventually(lambda: _async(viewer.showing(RED)), 15, "alice named, on air")
        assert (await stage())["participant"] == "alice"
    finally:
        await viewer.close()
        for p in (alice, bob):
            await p.pc.close()
        await control.aclose()
        await http.aclose()


async def _async(value: bool) -> bool:
    return value


"""A WHIP publisher Parley did not write: Debian's simple-whip-client (GStreamer webrtcbin,
libnice, x264enc, opusenc) publishes H.264 + Opus test patterns to `parley up`; an aiortc WHEP
viewer decodes the programme at the pattern's size.

whip-client runs with the test bed's libnice built without UPnP (``WHIP_CLIENT_LIBS``, see
testbed/provision.py and docs/broadcast.md): with Debian's libnice it aborts at start.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.broadcast.clients import Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import eventually

SIZE = (384, 216)
VIDEO = (f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={SIZE[0]},"
         f"height={SIZE[1]},framerate=30/1 ! videoconvert ! x264enc tune=zerolatency "
         "speed-preset=ultrafast key-int-max=60 ! video/x-h264,profile=constrained-baseline ! "
         "rtph264pay config-interval=-1 pt=96 ! queue ! "
         "application/x-rtp,media=video,encoding-name=H264,payload=96")
AUDIO = ("audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! "
         "rtpopuspay pt=111 ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111")


@pytest.fixture
def whip_client(testbed: dict[str, str],
                tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start whip-client processes; SIGINT (it DELETEs its session) at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "LD_LIBRARY_PATH": testbed["WHIP_CLIENT_LIBS"],
           "GST_REGISTRY": str(tmp_path / "gst-registry.bin")}

    def start(url: str, token: str, *extra: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"whip-client-{len(procs)}.log").open("wb")
        proc = subprocess.Popen([testbed["WHIP_CLIENT"], "-u", url, "-t", token, "-o",
                                 "-V", VIDEO, "-A", AUDIO, *extra], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.mark.parametrize("trickle", [False, True], ids=["candidates-in-offer", "trickle"])
async def test_simple_whip_client_publishes_h264_and_opus(
        parley_server: Callable[..., str],
        whip_client: Callable[..., subprocess.Popen[bytes]], tmp_path: Path,
        trickle: bool) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    # -n: candidates in the offer; else whip-client trickles them by PATCH after the 201
    proc = whip_client(f"{base}/live/indie/whip", key("indie", "gst"),
                       *([] if trickle else ["-n"]))
    viewer = Viewer(f"{base}/live/indie/whep")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            async def source_sends() -> bool:
                assert proc.poll() is None, (tmp_path / "whip-client-0.log").read_text()
                r = await http.get("/live/indie")  # 404 until the POST created it
                s = r.json() if r.status_code == 200 else {}
                frames = s.get("sources", {}).get("gst", {}).get("frames", {})
                return frames.get("video", 0) >= 10 and frames.get("audio", 0) >= 10
            await eventually(source_sends, 30, "whip-client's video and audio at the ingest")
            assert (await viewer.play()).status_code == 201

            async def decoded() -> bool:
                return len(viewer.video) >= 30 and viewer.audio_frames >= 30
            await eventually(decoded, 20, "the WHEP viewer decoding whip-client's programme")
            assert set(viewer.sizes()) == {SIZE}, set(viewer.sizes())
            status = (await http.get("/live/indie")).json()
            assert status["onAir"] == {"video": "gst", "audio": "gst"}, status
            trickled = status["sources"]["gst"]["trickled"]
            assert (trickled > 0) if trickle else (trickled == 0), status
            # whip-client ends with a DELETE on its Location: the source leaves
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0

            async def gone() -> bool:
                return (await http.get("/live/indie")).json()["sources"] == {}
            await eventually(gone, 5, "the source gone after whip-client's DELETE")
        log = (tmp_path / "whip-client-0.log").read_text()
        assert "DTLS connected" in log and "[WARN]" not in log, log
    finally:
        await viewer.close()

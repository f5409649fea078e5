"""The ingest role (a process, configured as the operator configures it) follows its Broadcast on
the test bed's real apiserver: `kubectl patch broadcast final --type merge -p
'{"spec":{"program":{"video":"cam2"}}}'` cuts live to cam2 without a stall.

Both cameras send the same size; each draws its own colour (chroma) under a moving luma pattern,
so the viewer tells from the decoded pixels which camera is on air.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest
from aiortc import MediaStreamTrack

from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import Kube, eventually, free_port, port_open, wait_until
from tests.media.client import PatternVideo
from tests.operator.conftest import apply, crds  # noqa: F401 (the CRDs, installed once)

pytestmark = pytest.mark.k8s

SIZE = (320, 180)
COLOUR = {"cam1": 60, "cam2": 200}  # the U plane each camera draws


class ColourVideo(PatternVideo):
    """The moving pattern, with a flat U plane that names the camera."""

    def __init__(self, name: str) -> None:
        super().__init__(name, SIZE)
        self.u = COLOUR[name]

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        frame.planes[1].update(bytes([self.u]) * frame.planes[1].buffer_size)
        return frame


class Camera(Publisher):
    def __init__(self, base: str, broadcast: str, name: str) -> None:
        super().__init__(base, broadcast, key(broadcast, name), SIZE)
        video = next(t for t in self.pc.getTransceivers() if t.kind == "video")
        video.sender.replaceTrack(ColourVideo(name))


class ColourViewer(Viewer):
    """Records, per decoded frame, its arrival time and which camera drew it."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.seen: list[tuple[float, str]] = []

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await track.recv()
                if track.kind != "video":
                    self.audio_frames += 1
                    continue
                u = bytes(frame.planes[1])[::97]
                mean = sum(u) / len(u)
                cam = min(COLOUR, key=lambda c: abs(COLOUR[c] - mean))
                now = time.monotonic()
                self.video.append((now, frame.width, frame.height))
                self.seen.append((now, cam))

    def on_air(self, cam: str, n: int = 15) -> bool:
        return [c for _, c in self.seen[-n:]] == [cam] * n


@pytest.fixture
def broadcast(kube: Kube, namespace: str, crds: None) -> str:  # noqa: F811
    apply(kube, namespace, {
        "apiVersion": "parley.dev/v1alpha1", "kind": "Broadcast", "metadata": {"name": "final"},
        "spec": {"sources": [{"name": "cam1"}, {"name": "cam2"}],
                 "program": {"video": "cam1"},
                 "renditions": [{"name": "360p", "height": 360, "bitrateKbps": 800}],
                 "edge": {"regions": [{"name": "eu"}]}}})
    return "final"


@pytest.fixture
def ingest(kube: Kube, namespace: str, broadcast: str, tmp_path: Path) -> Iterator[str]:
    """`parley media-node --role ingest` with the variables the operator sets, and the
    apiserver (KUBECONFIG here; the service account in a pod)."""
    port = free_port()
    log = (tmp_path / "ingest.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "media-node", "--role", "ingest", "--host",
         "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PARLEY_TOKEN_SECRET": SECRET, "KUBECONFIG": kube.kubeconfig,
             "PARLEY_BROADCAST": f"{namespace}.{broadcast}",
             "PARLEY_INGEST_SOURCES": "cam1,cam2", "PARLEY_PROGRAM_VIDEO": "cam1",
             "PARLEY_DATA_DIR": str(tmp_path)})
    wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what="ingest")
    assert proc.poll() is None, (tmp_path / "ingest.log").read_text()
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


async def test_kubectl_patch_cuts_to_another_camera_live(
        kube: Kube, namespace: str, broadcast: str, ingest: str) -> None:
    b = f"{namespace}.{broadcast}"
    cams = [Camera(ingest, b, "cam1"), Camera(ingest, b, "cam2")]
    viewer = ColourViewer(f"{ingest}/live/{b}/whep")
    http = httpx.AsyncClient(base_url=ingest, timeout=10)

    async def patch(program: dict[str, object]) -> float:
        at = time.monotonic()
        await asyncio.to_thread(kube.kubectl, "patch", "broadcast", broadcast, "-n", namespace,
                                "--type", "merge", "-p", json.dumps({"spec": {"program": program}}))
        return at

    async def showing(cam: str) -> bool:
        return viewer.on_air(cam)

    try:
        # cam2 connects first: only the Broadcast's spec.program puts cam1 on air
        for cam in reversed(cams):
            assert (await cam.publish()).status_code == 201
        assert (await viewer.play()).status_code == 201
        await eventually(lambda: showing("cam1"), 20,
                         "cam1 (spec.program.video) on air")
        # cam2's first keyframe may beat cam1's publish (a loaded machine): then cam2 was on
        # air first and cam1's arrival was a cut of its own
        before = (await http.get(f"/live/{b}")).json()["cuts"]
        cut_at = await patch({"video": "cam2"})
        await eventually(lambda: showing("cam2"), 10,
                         "cam2 on air after kubectl patch")
        took = next(t for t, c in viewer.seen if t >= cut_at and c == "cam2") - cut_at
        gap = viewer.max_gap(cut_at - 1.0)
        status = (await http.get(f"/live/{b}")).json()
        assert status["program"]["video"] == "cam2" and status["onAir"]["video"] == "cam2"
        assert status["cuts"] == before + 1, status
        print(f"kubectl patch -> cam2 at the viewer {took * 1000:.0f} ms (kubectl included), "
              f"largest frame gap {gap * 1000:.0f} ms")
        assert gap < 0.5, f"the viewer's video stalled {gap:.2f}s around the cut"
        assert set(viewer.sizes()) == {SIZE}
        # a status write by the operator (no spec change) does not undo a cut made over HTTP
        director = {"Authorization": f"Bearer {key(b, 'director', 'admin')}"}
        r = await http.put(f"/live/{b}/program", json={"video": "cam1"}, headers=director)
        assert r.status_code == 200
        await eventually(lambda: showing("cam1"), 10, "cam1 via PUT")
        touched = await asyncio.to_thread(kube.kubectl, "annotate", "broadcast", broadcast,
                                          "-n", namespace, "parley.dev/touched=1", "-o",
                                          "jsonpath={.metadata.resourceVersion}")

        async def seen() -> bool:
            s = (await http.get(f"/live/{b}")).json()
            return s["specVersion"] == touched.stdout.strip()
        await eventually(seen, 10, "the ingest seeing the annotation (no spec change)")
        await asyncio.sleep(0.3)  # a wrongly applied cut would land on cam2's next keyframe
        assert viewer.on_air("cam1"), "a watch event without a spec change undid a PUT cut"
        await patch({"video": "cam2", "audio": ["cam1"]})
        await eventually(lambda: showing("cam2"), 10, "cam2 again")
        status = (await http.get(f"/live/{b}")).json()
        assert status["onAir"] == {"video": "cam2", "audio": "cam1"}, status
        assert viewer.max_gap(cut_at - 1.0) < 0.5
        # two audio sources in the spec: mixed (mixer.py); one again: passed through

        async def audio(on_air: str, mixing: bool) -> bool:
            s = (await http.get(f"/live/{b}")).json()
            return s["onAir"]["audio"] == on_air and (
                s["mix"] is not None and s["mix"]["frames"] > 10 if mixing else s["mix"] is None)
        await patch({"video": "cam2", "audio": ["cam1", "cam2"]})
        await eventually(lambda: audio("cam1+cam2", True), 10, "cam1 and cam2 mixed")
        await patch({"video": "cam2", "audio": ["cam1"]})
        await eventually(lambda: audio("cam1", False), 10, "cam1 passed through again")
        # spec.sources admits publishers: cam3 is refused until the Broadcast names it
        cam3 = Publisher(ingest, b, key(b, "cam3"), SIZE)
        cams.append(cam3)
        r = await cam3.publish()
        assert r.status_code == 403 and r.json()["detail"]["code"] == "source_unknown"
        added = await asyncio.to_thread(
            kube.kubectl, "patch", "broadcast", broadcast, "-n", namespace, "--type", "merge",
            "-p", json.dumps({"spec": {"sources": [{"name": f"cam{i}"} for i in (1, 2, 3)]}}),
            "-o", "jsonpath={.metadata.resourceVersion}")

        async def admitted() -> bool:
            s = (await http.get(f"/live/{b}")).json()
            return s["specVersion"] == added.stdout.strip()
        await eventually(admitted, 10, "the ingest seeing cam3 in spec.sources")
        cam3 = Publisher(ingest, b, key(b, "cam3"), SIZE)
        cams.append(cam3)
        assert (await cam3.publish()).status_code == 201
    finally:
        for cam in cams:
            await cam.stop(delete=False)
        await viewer.close()
        await http.aclose()

"""SIGTERM (a pod scaled down or deleted) ends every broadcast role cleanly: the process exits 0
within seconds, after its clean-up had an effect a real peer sees (media-node/broadcast/serving.py):
the transcoder and the edge DELETE their WHEP session at the ingest, the edge's Lease report on the
test-bed apiserver drops to zero viewers, the ingest closes its publisher's connection. Killed
without the clean-up (uvicorn's re-raised SIGTERM) the ingest would count them for ~30 s (ICE
consent) and the Lease would keep the viewer until its TTL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley import kubeapi, reports
from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import key
from tests.broadcast.test_resilience import start_role, stop_roles
from tests.conftest import Kube, eventually

pytestmark = pytest.mark.k8s
EXIT_S = 8.0  # SIGTERM -> exit; measured: see docs/broadcast.md ("Stopping a role")

Role = Callable[[str, dict[str, str]], tuple[str, subprocess.Popen[bytes]]]


@pytest.fixture
def role(tmp_path: Path, kube: Kube) -> Iterator[Role]:
    """test_resilience's role launcher, with the test bed's apiserver (the edge's Lease)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
        return start_role(procs, tmp_path, name, {"KUBECONFIG": kube.kubeconfig, **env})

    yield start
    stop_roles(procs)


def lease_report(ns: str, pod: str) -> dict[str, Any] | None:
    try:
        lease = kubeapi.coordination().read_namespaced_lease(reports.lease_name(pod), ns)
    except Exception:
        return None
    return json.loads((lease.metadata.annotations or {}).get(reports.REPORT_ANNOTATION, "{}"))


def terminate(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM; the seconds until the process exited, which must be with status 0."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(EXIT_S) == 0
    return time.monotonic() - started


async def test_sigterm_runs_each_roles_clean_up_and_exits_0(
        role: Role, kube: Kube, namespace: str) -> None:
    os.environ["KUBECONFIG"] = kube.kubeconfig  # this process reads the Lease
    b = f"{namespace}.show"
    ingest, ingest_proc = role("ingest", {"PARLEY_BROADCAST": f"{namespace}/show",
                                          "PARLEY_INGEST_SOURCES": "cam1"})
    cam = Publisher(ingest, b, key(b, "cam1"), (256, 144))
    http = httpx.AsyncClient(timeout=5)
    viewer: Viewer | None = None
    try:
        assert (await cam.publish()).status_code == 201
        programme = f"{ingest}/live/{b}/whep"
        _, tx_proc = role("transcoder", {"PARLEY_BROADCAST": b, "PARLEY_UPSTREAM_URL": programme,
                                         "PARLEY_RENDITION": "144p", "PARLEY_HLS": "0"})
        edge, edge_proc = role("edge-relay", {
            "PARLEY_BROADCAST": b, "PARLEY_UPSTREAM_URL": programme, "PARLEY_TIER": "edge",
            "PARLEY_HLS": "0", "POD_NAMESPACE": namespace, "POD_NAME": "show-edge-eu-0",
            "PARLEY_REGION": "eu", "PARLEY_REPORT_INTERVAL": "0.5"})
        viewer = Viewer(f"{edge}/live/{b}/whep")
        assert (await viewer.play()).status_code == 201

        async def pulled_by() -> int:
            return int((await http.get(f"{ingest}/live/{b}")).json()["viewers"])

        async def counted() -> bool:
            report = lease_report(namespace, "show-edge-eu-0") or {}
            return (await pulled_by()) == 2 and report.get("broadcasts") == {
                f"{namespace}/show": 1} and len(viewer.video) >= 10
        await eventually(counted, 30, "transcoder + edge pulling, the edge's viewer reported")

        # the transcoder: exits 0, its WHEP session at the ingest is gone
        took = {"transcoder": terminate(tx_proc)}
        assert await pulled_by() == 1

        # the edge: exits 0, its session at the ingest is gone, its report says 0 viewers
        took["edge-relay"] = terminate(edge_proc)
        assert await pulled_by() == 0
        report = lease_report(namespace, "show-edge-eu-0")
        assert report is not None and report["broadcasts"] == {f"{namespace}/show": 0}, report

        # the ingest: exits 0, having closed its source's connection (DTLS close_notify)
        assert cam.pc.connectionState == "connected"
        took["ingest"] = terminate(ingest_proc)

        async def source_closed() -> bool:
            return cam.pc.connectionState in ("closed", "failed")
        await eventually(source_closed, 3, "the publisher seeing the ingest close its session")
        print("SIGTERM -> exit 0 (s):", {k: round(v, 2) for k, v in took.items()})
    finally:
        if viewer is not None:
            await viewer.close()
        await cam.stop(delete=False)
        await http.aclose()

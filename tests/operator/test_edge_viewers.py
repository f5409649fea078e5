"""Scaling by real viewers, end to end (issue 11 item 4): a Broadcast on the test-bed apiserver,
a real `parley media-node --role edge-relay` process standing in for one of the operator's kwok
edge pods (the Deployment's own environment, the pod's downward-API env), fed by a real
upstream (`parley up`: WHIP ingest from an aiortc publisher and its 180p LL-HLS ladder), 200
HLS viewers (plain httpx clients on loopback fetching playlists and parts) and 3 WHEP viewers.
The edge counts them and reports them in its Lease; the operator scales that region's edge
Deployment from the report, and back down once the viewers left and the HLS window passed.
The test never writes a viewer number itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley import kubeapi, reports
from tests.broadcast.clients import Publisher, Viewer
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import ROOT, Kube, eventually, free_port, port_open, wait_until
from tests.operator.conftest import Operator, apply, get
from tests.operator.hls_viewers import newest_part

pytestmark = pytest.mark.k8s

HLS_VIEWERS, WHEP_VIEWERS, PER_REPLICA = 200, 3, 50
WINDOW = 5.0  # PARLEY_HLS_VIEWER_WINDOW_S: the edge forgets an HLS client after this
PERIOD = 1.5  # each HLS viewer fetches the playlist and its newest part every 1.2-1.8 s
STEADY = 8.0  # seconds of steady load the edge's request rate and CPU are measured over


def broadcast() -> dict[str, Any]:
    return {"apiVersion": "parley.dev/v1alpha1", "kind": "Broadcast",
            "metadata": {"name": "show"},
            "spec": {"sources": [{"name": "cam1"}],
                     "renditions": [{"name": "180p", "height": 180, "bitrateKbps": 200}],
                     "edge": {"viewersPerReplica": PER_REPLICA,
                              "regions": [{"name": "eu", "minReplicas": 1, "maxReplicas": 6},
                                          {"name": "us", "minReplicas": 1, "maxReplicas": 3}]}}}


def replicas(kube: Kube, ns: str) -> dict[str, int]:
    items = kube.json("get", "deployments", "-n", ns, "-l",
                      "app.kubernetes.io/component=edge-relay,parley.dev/broadcast=show")["items"]
    return {d["metadata"]["labels"]["parley.dev/region"]: d["spec"]["replicas"] for d in items}


def report_of(ns: str, pod: str) -> dict[str, Any] | None:
    try:
        lease = kubeapi.coordination().read_namespaced_lease(reports.lease_name(pod), ns)
    except Exception:
        return None
    return json.loads((lease.metadata.annotations or {}).get(reports.REPORT_ANNOTATION, "{}"))


@pytest.fixture
def operator(kube: Kube, namespace: str, crds: None, tmp_path: Path) -> Iterator[Operator]:
    """The operator with a per-region playback host for edges."""
    op = Operator(kube, namespace, tmp_path,
                  env={"PARLEY_EDGE_URL_TEMPLATE": "https://{region}.live.example.test"}).start()
    yield op
    op.stop()


@pytest.fixture
def edge_process(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], tuple[str, int]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> tuple[str, int]:
        port = free_port()
        log = tmp_path / "edge.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "media-node", "--role", "edge-relay",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, **env})
        procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what="edge relay")
        assert proc.poll() is None, log.read_text()
        return f"http://127.0.0.1:{port}", proc.pid

    yield start
    for p in procs:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_an_edge_reports_real_viewers_and_the_operator_scales_its_region(
        kube: Kube, namespace: str, operator: Operator, edge_process: Callable[..., str],
        parley_server: Callable[..., str]) -> None:
    ns = namespace
    bkey = f"{ns}.show"
    apply(kube, ns, broadcast())
    wait_until(lambda: replicas(kube, ns) == {"eu": 1, "us": 1}, 60, 0.5,
               what="edge Deployments at their minimum")
    pods = wait_until(lambda: kube.json("get", "pods", "-n", ns, "-l",
                                        "parley.dev/workload=show-edge-eu")["items"], 60, 0.5,
                      what="the eu edge pod")
    pod = pods[0]["metadata"]
    dep = get(kube, ns, "deployment", "show-edge-eu")
    env = {e["name"]: e["value"]
           for e in dep["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}

    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET, "PARLEY_BROADCAST_LADDER": "180p:200",
                          "PARLEY_X264_PRESET": "ultrafast"})
    cam = Publisher(base, bkey, key(bkey, "cam1"), (320, 240))
    assert (await cam.publish()).status_code == 201
    # the operator's environment, but the upstream is the real one on loopback (the relay's
    # Service name does not resolve here), and a pod's downward-API variables
    edge, edge_pid = edge_process({
        **env, "PARLEY_UPSTREAM_URL": f"{base}/live/{bkey}/{{rendition}}/whep",
        "POD_NAMESPACE": ns, "POD_NAME": pod["name"], "POD_UID": pod["uid"],
        "PARLEY_REPORT_INTERVAL": "0.5", "PARLEY_HLS_VIEWER_WINDOW_S": str(WINDOW)})
    assert env["PARLEY_REGION"] == "eu" and env["PARLEY_TIER"] == "edge"
    path = f"/live/{bkey}"
    load: subprocess.Popen[bytes] | None = None
    whep: list[Viewer] = []
    try:
        async with httpx.AsyncClient(base_url=edge, timeout=20) as http:
            async def playable() -> bool:
                r = await http.get(f"{path}/180p.m3u8")
                return r.status_code == 200 and newest_part(r.text) is not None
            await eventually(playable, 30, "the edge's 180p playlist with parts")

        t0 = time.monotonic()
        load = await asyncio.to_thread(  # the HLS audience, in a process of its own
            subprocess.Popen, [sys.executable, "-m", "tests.operator.hls_viewers", edge, path,
                               "180p", str(HLS_VIEWERS), str(PERIOD)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        for _ in range(WHEP_VIEWERS):
            v = Viewer(f"{edge}{path}/180p/whep")
            assert (await v.play()).status_code == 201
            whep.append(v)

        total = HLS_VIEWERS + WHEP_VIEWERS
        pod_key = f"{ns}/show"

        async def counted() -> dict[str, Any] | None:
            r = await asyncio.to_thread(report_of, ns, pod["name"])
            return r if r and r["broadcasts"].get(pod_key) == total else None
        got = await eventually(counted, 30, f"the edge's report of {total} viewers")
        t_report = time.monotonic() - t0
        # steady state from here: the edge's HLS requests and CPU over at least STEADY seconds
        async with httpx.AsyncClient(timeout=10) as http:
            req_a = (await http.get(f"{edge}{path}")).json()["hls"]["requests"]
        t_a, cpu_a = time.monotonic(), cpu_seconds(edge_pid)
        assert got["transports"][pod_key] == {"whep": WHEP_VIEWERS, "hls": HLS_VIEWERS}, got
        await eventually(lambda: asyncio.to_thread(
            lambda: (report_of(ns, pod["name"]) or {}).get("renditions", {}).get(pod_key)
            == ["180p"]), 10, "180p reported as producing")
        lease = kubeapi.coordination().read_namespaced_lease(reports.lease_name(pod["name"]), ns)
        assert lease.metadata.labels[reports.REGION_LABEL] == "eu"
        assert [(o.kind, o.uid) for o in lease.metadata.owner_references] == [("Pod", pod["uid"])]

        # 203 viewers at 50 per replica: 5 edges in eu; us has nobody and stays at 1
        want = -(-total // PER_REPLICA)
        await eventually(lambda: asyncio.to_thread(
            lambda: replicas(kube, ns) == {"eu": want, "us": 1}), 30, f"eu edges at {want}")
        t_scaled = time.monotonic() - t0

        def status_ok() -> dict[str, Any] | None:
            s = get(kube, ns, "bcast", "show").get("status", {})
            eu = next((e for e in s.get("edges", []) if e["region"] == "eu"), {})
            return s if eu.get("transports") == {"whep": WHEP_VIEWERS, "hls": HLS_VIEWERS} \
                and s.get("renditions", [{}])[0].get("producing") else None
        s = await eventually(lambda: asyncio.to_thread(status_ok), 30, "viewers in status")
        assert s["viewers"] == total and s["phase"] == "Live", s
        assert {e["region"]: e["viewers"] for e in s["edges"]} == {"eu": total, "us": 0}
        assert {e["region"]: e["url"] for e in s["edges"]} == {
            "eu": "https://eu.live.example.test", "us": "https://us.live.example.test"}
        assert s["renditions"] == [{"name": "180p", "transcoderReady": True,
                                    "producing": True}], s["renditions"]
        await asyncio.sleep(max(0.0, t_a + STEADY - time.monotonic()))  # a measuring span
        async with httpx.AsyncClient(timeout=10) as http:
            edge_status = (await http.get(f"{edge}{path}")).json()
            t = time.monotonic()
            assert (await http.get(f"{edge}{path}/180p.m3u8")).status_code == 200
            one_playlist = time.monotonic() - t
        assert edge_status["audience"]["hls"] == HLS_VIEWERS, edge_status
        spent, cpu = time.monotonic() - t_a, cpu_seconds(edge_pid) - cpu_a
        requests = edge_status["hls"]["requests"] - req_a

        # everyone leaves: WHEP sessions end at once, HLS clients once the window passed
        t1 = time.monotonic()  # the HLS viewers stop now (stdin closes)
        out, _ = await asyncio.to_thread(load.communicate, b"", 30)
        seen = json.loads(out)
        assert min(seen["fetched"]) >= 1, "every HLS viewer fetched parts"
        print(f"{HLS_VIEWERS} HLS + {WHEP_VIEWERS} WHEP viewers: reported after "
              f"{t_report:.1f} s, eu scaled to {want} after {t_scaled:.1f} s; edge: "
              f"{requests / spent:.0f} HLS requests/s over {spent:.1f} s (upstream "
              f"{edge_status['hls']['upstreamRequests']} in all), CPU {cpu / spent:.0%} of a "
              f"core (WHEP included); "
              f"playlist + part p50 {seen['p50']:.3f} s, p95 {seen['p95']:.3f} s; "
              f"one more playlist during the load {one_playlist:.3f} s")
        for v in whep:
            async with httpx.AsyncClient(base_url=edge, timeout=10) as http:
                assert (await http.delete(v.location or "")).status_code == 200
            await v.close()
        whep.clear()
        async with httpx.AsyncClient(timeout=10) as http:
            audience = (await http.get(f"{edge}{path}")).json()["audience"]
        # WHEP sessions end at once; the HLS clients are still inside their window
        assert audience["whep"] == 0 and audience["hls"] > 0, (audience, time.monotonic() - t1)

        async def gone() -> bool:
            r = await asyncio.to_thread(report_of, ns, pod["name"])
            return bool(r) and r["broadcasts"].get(pod_key) == 0
        await eventually(gone, WINDOW + 10, "the edge's report of 0 viewers")
        t_zero = time.monotonic() - t1
        # each viewer last fetched at most 1.2 * PERIOD before it stopped: still counted until
        # the window after that passed
        assert t_zero >= WINDOW - 1.2 * PERIOD - 0.2, f"HLS viewers forgotten after {t_zero:.1f} s"
        await eventually(lambda: asyncio.to_thread(
            lambda: replicas(kube, ns) == {"eu": 1, "us": 1}), 30, "eu edges back at 1")
        print(f"viewers left: report at 0 after {t_zero:.1f} s (window {WINDOW} s), "
              f"eu back to 1 after {time.monotonic() - t1:.1f} s")
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(10)
        for v in whep:
            await v.close()
        await cam.stop()

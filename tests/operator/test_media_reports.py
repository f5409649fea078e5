"""A real call server reports its participants to the operator through the apiserver: the
`parley media-node` process (downward-API env as in the chart's pod), real aiortc
participants, a Lease in the pool's namespace, and the Meeting's status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from parley import reports
from tests.conftest import ROOT, Kube, free_port, port_open, wait_until
from tests.media.client import CONTROL_KEY, Client
from tests.operator.conftest import Operator, apply, cond, get, make_pool, meeting

pytestmark = pytest.mark.k8s


async def eventually(check: Callable[[], Awaitable[Any]], limit: float, what: str) -> Any:
    """Poll an async check without blocking the loop the aiortc participants run on."""
    deadline = time.monotonic() + limit
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {limit}s waiting for {what} (last: {last!r})")


def lease(kube: Kube, namespace: str, pod: str) -> dict[str, Any] | None:
    found = kube.json("get", "leases", "-n", namespace, "-l", reports.REPORT_LABEL)["items"]
    return next((x for x in found if x["metadata"]["name"] == reports.lease_name(pod)), None)


def reported(kube: Kube, namespace: str, pod: str) -> dict[str, Any] | None:
    found = lease(kube, namespace, pod)
    if found is None:
        return None
    return json.loads(found["metadata"]["annotations"][reports.REPORT_ANNOTATION])


def start_call_server(kube: Kube, namespace: str, pod: dict[str, Any], port: int,
                      log: Path) -> subprocess.Popen[bytes]:
    """The call-server process, with the environment the chart's pod gives it."""
    return subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "media-node", "--role", "call-server",
         "--host", "127.0.0.1", "--port", str(port), "--region", "eu",
         "--drain-deadline", "0.5"],  # SIGTERM: participants are moved after 0.5 s
        stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
        env={**os.environ, "KUBECONFIG": kube.kubeconfig, "POD_NAMESPACE": namespace,
             "POD_NAME": pod["metadata"]["name"], "POD_UID": pod["metadata"]["uid"],
             "PARLEY_REPORT_INTERVAL": "0.5", "PARLEY_CONTROL_KEY": CONTROL_KEY})


async def test_call_server_reports_its_participants_to_the_meeting(
        kube: Kube, namespace: str, operator: Operator, tmp_path: Path) -> None:
    make_pool(kube, namespace, per_pod=100, headroom=0)
    apply(kube, namespace, meeting("standup", region="eu", maxParticipants=10))
    m = wait_until(lambda: (lambda m: m if cond(m, "Ready").get("status") == "True" else None)(
        get(kube, namespace, "mtg", "standup")), 60, 0.5, what="Meeting Ready")
    pod = get(kube, namespace, "pod", m["status"]["callServer"]["pod"])

    port = free_port()
    log = tmp_path / "call-server.log"
    proc = start_call_server(kube, namespace, pod, port, log)
    clients: list[Client] = []
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what="call server")
        assert proc.poll() is None, log.read_text()
        room = m["status"]["joinUrl"].rsplit("/", 1)[1]
        assert room == f"{namespace}.standup"
        for name in ("ann", "bob"):
            c = Client(name, room)
            await c.join(f"http://127.0.0.1:{port}")
            clients.append(c)
        # An ad hoc room on the same node is not a Meeting: it is not reported.
        adhoc = Client("cat", "lobby")
        await adhoc.join(f"http://127.0.0.1:{port}")
        clients.append(adhoc)

        key = f"{namespace}/standup"
        got = await eventually(lambda: asyncio.to_thread(
            lambda: (r := reported(kube, namespace, pod["metadata"]["name"])) and
            r["meetings"].get(key) == 2 and r), 30, "the report of 2 participants")
        assert got == {"meetings": {key: 2}, "broadcasts": {}}, log.read_text()
        owner = lease(kube, namespace, pod["metadata"]["name"])["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"]) for o in owner] == [("Pod", pod["metadata"]["uid"])]

        # The operator reads it into the Meeting's status.
        live = await eventually(lambda: asyncio.to_thread(
            lambda: (x := get(kube, namespace, "mtg", "standup"))["status"].get(
                "participants") == 2 and x), 30, "status.participants == 2")
        assert live["status"]["phase"] == "Live"

        await clients.pop(0).close()
        await eventually(lambda: asyncio.to_thread(
            lambda: get(kube, namespace, "mtg", "standup")["status"].get("participants") == 1),
            30, "status.participants == 1 after a leave")

        # A clean shutdown (SIGTERM: drain, move whoever is left, exit) reports nobody at
        # once (no waiting for the report TTL).
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0, log.read_text()
        assert reported(kube, namespace, pod["metadata"]["name"]) == {
            "meetings": {}, "broadcasts": {}}
        await eventually(lambda: asyncio.to_thread(
            lambda: get(kube, namespace, "mtg", "standup")["status"].get("participants") == 0),
            30, "status.participants == 0 after the node stopped")
    finally:
        for c in clients:
            await c.close(leave=False)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

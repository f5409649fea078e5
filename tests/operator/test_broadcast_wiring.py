"""The operator's wiring of a Broadcast whose source is a Meeting, on the test-bed apiserver: the
ingest Deployment reads the stream-key secret, the call servers' control key and the directory
from the broadcast Secret by reference, runs as its own ServiceAccount and knows its pod. A real
ingest process started with exactly that environment (Secret values and downward-API fields
resolved as the kubelet would; the ServiceAccount's token as its apiserver credential) follows
its Broadcast, finds the Meeting's call server through the directory the operator wrote the
Meeting's placement into, and a real `parley media-node` call server with the placed pod's
identity hands it a participant's video; the Broadcast's status then says, from the ingest's own
report, which sources are connected and what is on air."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from parley.tokens import control_key
from tests.broadcast.test_meeting_source import RED, ColourViewer, Participant
from tests.conftest import ROOT, Kube, eventually, free_port, port_open, wait_until
from tests.operator.conftest import Operator, apply, cond, get, make_pool, meeting
from tests.operator.test_broadcast_access import token
from tests.operator.test_chart import CHART

pytestmark = [pytest.mark.k8s, pytest.mark.redis]
SECRET = "broadcast-wiring-secret-of-32-bytes-or-more"


@pytest.fixture
def directory_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + "/13"


def start_wired(kube: Kube, namespace: str, tmp_path: Path, directory_url: str,
                also: tuple[str, ...] = ()) -> Operator:
    """The operator as the chart runs it: the directory, and the broadcast Secret's name (the
    chart's ``{release}-secrets``, here one of the test's own with the same keys)."""
    kube.kubectl("create", "secret", "generic", "parley-secrets", "-n", namespace,
                 f"--from-literal=token-secret={SECRET}",
                 f"--from-literal=control-key={control_key(SECRET)}",
                 f"--from-literal=redis-url={directory_url}")
    return Operator(kube, namespace, tmp_path, also=also, env={
        "PARLEY_REDIS_URL": directory_url, "PARLEY_BROADCAST_SECRET": "parley-secrets"}).start()


@pytest.fixture
def wired_operator(kube: Kube, namespace: str, crds: None, tmp_path: Path,
                   directory_url: str) -> Iterator[Operator]:
    op = start_wired(kube, namespace, tmp_path, directory_url)
    yield op
    op.stop()


@pytest.fixture
def team_b(kube: Kube) -> Iterator[str]:
    """A second namespace: the Meeting's owners."""
    name = kube.namespace("wiring-team-b")
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[[str, list[str], dict[str, str]], str]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> str:
        port = free_port()
        log = tmp_path / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", *args, "--host", "127.0.0.1", "--port",
             str(port)], stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
            env={k: v for k, v in {**os.environ, **env}.items()
                 if k not in ("PARLEY_TOKEN_SECRET", "PARLEY_CONTROL_KEY", "PARLEY_REDIS_URL")
                 or k in env})
        procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what=name)
        assert proc.poll() is None, log.read_text()
        return f"http://127.0.0.1:{port}"

    yield start
    for p in reversed(procs):  # the ingest leaves the meeting before its call server stops
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def resolve(kube: Kube, ns: str, container: dict[str, Any], pod: dict[str, Any]
            ) -> dict[str, str]:
    """The container's environment as the kubelet gives it: values, Secret keys, pod fields."""
    out: dict[str, str] = {}
    for e in container["env"]:
        if "value" in e:
            out[e["name"]] = e["value"]
        elif "secretKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["secretKeyRef"]
            data = get(kube, ns, "secret", ref["name"])["data"]
            out[e["name"]] = base64.b64decode(data[ref["key"]]).decode()
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            out[e["name"]] = pod["metadata"][path.split(".", 1)[1]]
    return out


def kubeconfig_for(kube: Kube, bearer: str, path: Path) -> str:
    """The test bed's kubeconfig with only ``bearer`` as the user (the pod's token)."""
    cfg = yaml.safe_load(Path(kube.kubeconfig).read_text())
    for user in cfg["users"]:
        user["user"] = {"token": bearer}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


async def test_a_meeting_source_is_wired_to_its_call_server_and_reported_in_status(
        kube: Kube, namespace: str, wired_operator: Operator, directory_url: str,
        processes: Callable[[str, list[str], dict[str, str]], str], tmp_path: Path) -> None:
    ns = namespace
    bkey = f"{ns}.show"
    make_pool(kube, ns, per_pod=50, headroom=0, region="bw")
    apply(kube, ns, meeting("standup", region="bw", maxParticipants=10))
    placed = wait_until(lambda: get(kube, ns, "mtg", "standup") if cond(
        get(kube, ns, "mtg", "standup"), "Ready").get("status") == "True" else None, 60, 0.5,
        what="the Meeting placed")
    pod_name = placed["status"]["callServer"]["pod"]
    apply(kube, ns, {
        "apiVersion": "parley.dev/v1alpha1", "kind": "Broadcast", "metadata": {"name": "show"},
        "spec": {"sources": [{"name": "cam1"}, {"name": "stage", "meeting": "standup"}],
                 "program": {"video": "stage"},
                 "renditions": [{"name": "360p", "height": 360, "bitrateKbps": 800}],
                 "edge": {"regions": [{"name": "eu"}]}}})
    ingest_pod = wait_until(lambda: kube.json("get", "pods", "-n", ns, "-l",
                                              "parley.dev/workload=show-ingest")["items"],
                            60, 0.5, what=f"the ingest pod\n{wired_operator.logs()[-2000:]}")[0]
    spec = get(kube, ns, "deployment", "show-ingest")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {  # by reference: no secret value in the Deployment
        "PARLEY_TOKEN_SECRET": {"name": "parley-secrets", "key": "token-secret"},
        "PARLEY_CONTROL_KEY": {"name": "parley-secrets", "key": "control-key"},
        "PARLEY_REDIS_URL": {"name": "parley-secrets", "key": "redis-url", "optional": True}}
    assert container["args"] == ["media-node", "--role", "ingest"]
    env = resolve(kube, ns, container, ingest_pod)
    assert (env["PARLEY_BROADCAST"], env["PARLEY_INGEST_SOURCES"]) == (bkey, "cam1,stage")
    assert (env["POD_NAME"], env["POD_NAMESPACE"]) == (ingest_pod["metadata"]["name"], ns)

    # the call server the directory names for the room: a real node with the placed pod's name
    node = processes("call-server", ["media-node", "--role", "call-server", "--node-id",
                                     pod_name, "--region", "bw", "--redis-url", directory_url],
                     {"PARLEY_CONTROL_KEY": control_key(SECRET), "PARLEY_DRAIN_DEADLINE_S": "1"})
    control = httpx.AsyncClient(timeout=20, headers={
        "Authorization": f"Bearer {control_key(SECRET)}"})
    alice = Participant(node, f"{ns}.standup", "alice", RED, loud=True)
    alice.url = f"{node}/v1/meetings/{ns}.standup/participants"
    viewer: ColourViewer | None = None
    try:
        await alice.join(control)
        bearer = token(kube, ns, spec["serviceAccountName"])
        ingest = processes("ingest", ["media-node", "--role", "ingest"], {
            **env, "PARLEY_REPORT_INTERVAL": "0.5",
            "KUBECONFIG": kubeconfig_for(kube, bearer, tmp_path / "ingest.kubeconfig")})
        http = httpx.AsyncClient(base_url=ingest, timeout=10)

        async def stage() -> dict[str, Any] | None:
            r = await http.get(f"/live/{bkey}")
            s = r.json().get("meetings", {}).get("stage") if r.status_code == 200 else None
            return s if s and s["joined"] and s["onAir"] == "alice" else None
        s = await eventually(stage, 30, "the ingest in the meeting, alice on air")
        assert (s["callServer"], s["meeting"]) == (node, f"{ns}.standup"), s
        viewer = ColourViewer(f"{ingest}/live/{bkey}/whep")
        assert (await viewer.play()).status_code == 201
        await eventually(lambda: _async(viewer.showing(RED)), 20, "alice's red on the programme")

        def status() -> dict[str, Any] | None:
            b = get(kube, ns, "broadcast", "show")
            st = b.get("status") or {}
            return b if cond(b, "OnAir").get("status") == "True" and st.get("sources") else None
        b = wait_until(status, 30, 0.5, what="status from the ingest's report")
        st = b["status"]
        assert st["onAir"]["video"] == "stage", st
        by = {x["name"]: x for x in st["sources"]}
        assert (by["cam1"]["connected"], by["stage"]["connected"], by["stage"]["sending"]) == (
            False, True, True), st["sources"]
        assert by["stage"]["meeting"] == {"callServer": node, "joined": True,
                                          "participant": "alice", "error": ""}, by["stage"]
        on_air = cond(b, "OnAir")
        assert on_air["observedGeneration"] == b["metadata"]["generation"], on_air
        assert "1 of 2 sources connected" in on_air["message"], on_air
        await http.aclose()
    finally:
        if viewer is not None:
            await viewer.close()
        await alice.pc.close()
        await control.aclose()


async def _async(value: bool) -> bool:
    return value


async def test_a_meeting_of_another_namespace_needs_its_owners_grant(
        kube: Kube, namespace: str, team_b: str, crds: None, directory_url: str,
        processes: Callable[[str, list[str], dict[str, str]], str], tmp_path: Path) -> None:
    """spec.sources[].meetingNamespace: the ingest asks the apiserver, with its own token,
    for the Meeting of team B; without a grant there the source reports Forbidden (in the
    ingest and in the Broadcast's status) and never joins; once team B binds the chart's
    ``meeting-source`` ClusterRole to the Broadcast's ingest ServiceAccount, it joins the
    meeting on team B's call server and its video is on air."""
    op = start_wired(kube, namespace, tmp_path, directory_url, also=(team_b,))
    rendered = yaml.safe_load_all(kube.helm("template", "t", CHART, "--show-only",
                                            "templates/operator.yaml").stdout)
    grant = next(d for d in rendered if d and d["kind"] == "ClusterRole"
                 and d["metadata"]["name"] == "t-parley-meeting-source")
    grant["metadata"] = {"name": f"meeting-source-{namespace}"}
    kube.kubectl("apply", "-f", "-", input=json.dumps(grant))
    control = httpx.AsyncClient(timeout=20, headers={
        "Authorization": f"Bearer {control_key(SECRET)}"})
    alice: Participant | None = None
    viewer: ColourViewer | None = None
    try:
        make_pool(kube, team_b, per_pod=50, headroom=0, region="bx")
        apply(kube, team_b, meeting("standup", region="bx", maxParticipants=10))
        placed = wait_until(lambda: get(kube, team_b, "mtg", "standup") if cond(
            get(kube, team_b, "mtg", "standup"), "Ready").get("status") == "True" else None,
            60, 0.5, what=f"team B's Meeting placed\n{op.logs()[-2000:]}")
        apply(kube, namespace, {
            "apiVersion": "parley.dev/v1alpha1", "kind": "Broadcast",
            "metadata": {"name": "show"},
            "spec": {"sources": [{"name": "stage", "meeting": "standup",
                                  "meetingNamespace": team_b}],
                     "program": {"video": "stage"},
                     "renditions": [{"name": "360p", "height": 360, "bitrateKbps": 800}],
                     "edge": {"regions": [{"name": "eu"}]}}})
        pod = wait_until(lambda: kube.json("get", "pods", "-n", namespace, "-l",
                                           "parley.dev/workload=show-ingest")["items"],
                         60, 0.5, what=f"the ingest pod\n{op.logs()[-2000:]}")[0]
        spec = get(kube, namespace, "deployment", "show-ingest")["spec"]["template"]["spec"]
        env = resolve(kube, namespace, spec["containers"][0], pod)
        node = processes("call-server", [
            "media-node", "--role", "call-server", "--node-id",
            placed["status"]["callServer"]["pod"], "--region", "bx",
            "--redis-url", directory_url],
            {"PARLEY_CONTROL_KEY": control_key(SECRET), "PARLEY_DRAIN_DEADLINE_S": "1"})
        alice = Participant(node, f"{team_b}.standup", "alice", RED, loud=True)
        alice.url = f"{node}/v1/meetings/{team_b}.standup/participants"
        await alice.join(control)
        bearer = token(kube, namespace, spec["serviceAccountName"])
        ingest = processes("ingest", ["media-node", "--role", "ingest"], {
            **env, "PARLEY_REPORT_INTERVAL": "0.5",
            "KUBECONFIG": kubeconfig_for(kube, bearer, tmp_path / "ingest.kubeconfig")})
        http = httpx.AsyncClient(base_url=ingest, timeout=10)

        async def stage() -> dict[str, Any] | None:
            r = await http.get(f"/live/{namespace}.show")
            return r.json().get("meetings", {}).get("stage") if r.status_code == 200 else None

        async def refused() -> dict[str, Any] | None:
            s = await stage()
            return s if s and (s["error"] or "").startswith("forbidden") else None
        s = await eventually(refused, 30, "the source refused by the apiserver")
        assert not s["joined"] and s["meeting"] == f"{team_b}.standup", s
        assert f"Meeting {team_b}/standup" in s["error"], s

        def reported() -> dict[str, Any] | None:
            st = get(kube, namespace, "broadcast", "show").get("status") or {}
            by = {x["name"]: x for x in st.get("sources") or []}
            m = by.get("stage", {}).get("meeting") or {}
            return m if (m.get("error") or "").startswith("forbidden") else None
        m = wait_until(reported, 30, 0.5, what="Forbidden in the Broadcast's status")
        assert m["joined"] is False, m

        kube.kubectl("create", "rolebinding", "show-from-team-a", "-n", team_b,
                     f"--clusterrole=meeting-source-{namespace}",
                     f"--serviceaccount={namespace}:{spec['serviceAccountName']}")

        async def on_air() -> dict[str, Any] | None:
            s = await stage()
            return s if s and s["joined"] and s["onAir"] == "alice" else None
        s = await eventually(on_air, 30, "team B's meeting joined once granted, alice on air")
        assert (s["callServer"], s["error"]) == (node, None), s
        viewer = ColourViewer(f"{ingest}/live/{namespace}.show/whep")
        assert (await viewer.play()).status_code == 201
        await eventually(lambda: _async(viewer.showing(RED)), 20, "alice's red on the programme")
        await http.aclose()
    finally:
        if viewer is not None:
            await viewer.close()
        if alice is not None:
            await alice.pc.close()
        await control.aclose()
        op.stop()
        kube.kubectl("delete", "clusterrole", f"meeting-source-{namespace}", "--wait=false",
                     check=False)

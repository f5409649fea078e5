"""The CRDs: what `kubectl apply -f crds/` installs, and what the apiserver refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, Kube

pytestmark = pytest.mark.k8s


def test_crds_dir_holds_exactly_meeting_and_broadcast() -> None:
    docs = [d for f in sorted((ROOT / "crds").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]
    assert sorted(d["metadata"]["name"] for d in docs) == [
        "broadcasts.parley.dev", "meetings.parley.dev"]
    for d in docs:
        assert d["kind"] == "CustomResourceDefinition"
        version = d["spec"]["versions"][0]
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
        assert d["spec"]["names"]["categories"] == ["parley"]

        _walk(version["schema"]["openAPIV3Schema"], d["metadata"]["name"], root=True)


def _walk(schema: dict[str, Any], path: str, root: bool = False) -> None:
    """Every field has a description (so `kubectl explain` reads well)."""
    for name, sub in schema.get("properties", {}).items():
        if name == "metadata" and root:
            continue
        assert sub.get("description"), f"{path}.{name} has no description"
        _walk(sub, f"{path}.{name}")
    if "items" in schema:
        _walk(schema["items"], f"{path}[]")


def test_installed_with_short_names_category_and_explain(kube: Kube, crds: None,
                                                         namespace: str) -> None:
    names = {r.split()[0] for r in kube.kubectl(
        "api-resources", "--api-group=parley.dev", "--no-headers").stdout.splitlines()}
    assert names == {"broadcasts", "meetings"}
    assert "bcast" in kube.kubectl("api-resources", "--api-group=parley.dev").stdout
    explain = kube.kubectl("explain", "meeting.spec.maxParticipants").stdout
    assert "call-server capacity" in explain
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "parley.dev/v1alpha1", "kind": "Meeting", "metadata": {"name": "d"},
         "spec": {"title": "defaults"}}))
    m = kube.json("get", "mtg", "d", "-n", namespace)
    assert m["spec"]["maxParticipants"] == 100
    assert m["spec"]["topology"] == "auto" and m["spec"]["region"] == "default"
    assert m["spec"]["recording"] == {"enabled": False}
    listed = kube.kubectl("get", "parley", "-n", namespace).stdout
    assert "meeting.parley.dev/d" in listed and "PARTICIPANTS" in listed


def _meeting(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "parley.dev/v1alpha1", "kind": "Meeting",
            "metadata": {"name": "bad"}, "spec": spec}


def _broadcast(**over: Any) -> dict[str, Any]:
    spec = {"sources": [{"name": "cam"}],
            "renditions": [{"name": "720p", "height": 720, "bitrateKbps": 3000}],
            "edge": {"regions": [{"name": "eu"}]}}
    spec.update(over)
    return {"apiVersion": "parley.dev/v1alpha1", "kind": "Broadcast",
            "metadata": {"name": "bad"}, "spec": spec}


INVALID = [
    ("too-few-participants", _meeting(maxParticipants=1),
     "spec.maxParticipants: Invalid value: 1: spec.maxParticipants in body should be greater "
     "than or equal to 2"),
    ("too-many-participants", _meeting(maxParticipants=20000),
     "should be less than or equal to 10000"),
    ("unknown-topology", _meeting(topology="mesh"),
     'spec.topology: Unsupported value: "mesh": supported values: "auto", "p2p", "sfu"'),
    ("p2p-too-big", _meeting(topology="p2p"),
     "topology p2p supports at most 8 participants (every peer sends to every other): set "
     "maxParticipants <= 8 or use topology auto or sfu"),
    ("threshold-needs-auto", _meeting(topology="sfu", p2pThreshold=4),
     "spec.p2pThreshold only applies to topology auto: remove p2pThreshold or set topology: auto"),
    ("threshold-above-max", _meeting(maxParticipants=3, p2pThreshold=4),
     "spec.p2pThreshold must not exceed spec.maxParticipants"),
    ("p2p-recording", _meeting(topology="p2p", maxParticipants=4, recording={"enabled": True}),
     "recording taps the call server, which topology p2p does not use"),
    ("p2p-transcoding", _meeting(topology="p2p", maxParticipants=4,
                                 transcoding={"enabled": True}),
     "transcoding runs beside the call server, which topology p2p does not use"),
    ("end-before-start", _meeting(schedule={"start": "2030-01-01T10:00:00Z",
                                            "end": "2030-01-01T09:00:00Z"}),
     "spec.schedule.end: Invalid value: \"object\": spec.schedule.end must be later than "
     "spec.schedule.start"),
    ("bad-region", _meeting(region="EU West"), "spec.region in body should match"),
    ("edge-min-above-max", _broadcast(edge={"regions": [
        {"name": "eu", "minReplicas": 5, "maxReplicas": 2}]}),
     "edge.regions[].minReplicas must not exceed maxReplicas: raise maxReplicas or lower "
     "minReplicas"),
    ("duplicate-heights", _broadcast(renditions=[
        {"name": "a", "height": 720, "bitrateKbps": 3000},
        {"name": "b", "height": 720, "bitrateKbps": 2000}]),
     "every rendition needs a distinct height"),
    ("no-sources", _broadcast(sources=[]),
     "spec.sources: Invalid value: 0: spec.sources in body should have at least 1 items"),
    ("rendition-without-bitrate", _broadcast(renditions=[{"name": "a", "height": 720}]),
     'spec.renditions[0].bitrateKbps: Required value'),
    ("duplicate-region", _broadcast(edge={"regions": [{"name": "eu"}, {"name": "eu"}]}),
     'spec.edge.regions[1]: Duplicate value: {"name":"eu"}'),
    ("source-without-name", _broadcast(sources=[{"protocol": "rtmp"}]),
     "spec.sources[0].name: Required value"),
    ("meeting-namespace-without-meeting", _broadcast(sources=[
        {"name": "stage", "meetingNamespace": "team-b"}]),
     "sources[].meetingNamespace is where sources[].meeting lives: set meeting too"),
    ("bad-meeting-namespace", _broadcast(sources=[
        {"name": "stage", "meeting": "standup", "meetingNamespace": "Team B"}]),
     "spec.sources[0].meetingNamespace in body should match"),
]


@pytest.mark.parametrize(("case", "obj", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_objects_are_rejected_with_an_actionable_message(
        kube: Kube, crds: None, namespace: str, case: str, obj: dict[str, Any],
        message: str) -> None:
    out = kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(obj),
                       check=False)
    assert out.returncode != 0, f"{case} was accepted"
    assert "is invalid" in out.stderr
    assert message in out.stderr, out.stderr
    kind = obj["kind"].lower()
    assert kube.kubectl("get", kind, "bad", "-n", namespace, check=False).returncode != 0


def test_region_is_immutable(kube: Kube, crds: None, namespace: str) -> None:
    kube.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(_meeting(region="eu")))
    out = kube.kubectl("patch", "mtg", "bad", "-n", namespace, "--type=merge", "-p",
                       '{"spec":{"region":"us"}}', check=False)
    assert out.returncode != 0
    assert "spec.region is immutable: create a new Meeting to use another region" in out.stderr
    assert kube.json("get", "mtg", "bad", "-n", namespace)["spec"]["region"] == "eu"

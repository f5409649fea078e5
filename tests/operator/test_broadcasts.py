"""Broadcasts: the ladder, the relay tier and edge relays that follow reported viewers."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.operator import reports
from tests.conftest import Kube, wait_until
from tests.operator.conftest import Operator, apply, cond, get

pytestmark = pytest.mark.k8s

BROADCAST = {
    "apiVersion": "parley.dev/v1alpha1", "kind": "Broadcast", "metadata": {"name": "keynote"},
    "spec": {
        "sources": [{"name": "stage-cam"}],
        "renditions": [{"name": "1080p", "height": 1080, "bitrateKbps": 6000},
                       {"name": "720p", "height": 720, "bitrateKbps": 3000},
                       {"name": "360p", "height": 360, "bitrateKbps": 800}],
        "edge": {"viewersPerReplica": 100,
                 "regions": [{"name": "eu", "minReplicas": 1, "maxReplicas": 4},
                             {"name": "us", "minReplicas": 2, "maxReplicas": 5}]},
    },
}


def _deployments(kube: Kube, ns: str, component: str) -> dict[str, dict]:
    items = kube.json("get", "deployments", "-n", ns, "-l",
                      f"app.kubernetes.io/component={component},parley.dev/broadcast=keynote"
                      )["items"]
    return {d["metadata"]["name"]: d for d in items}


def _edge_replicas(kube: Kube, ns: str) -> dict[str, int]:
    return {d["metadata"]["labels"]["parley.dev/region"]: d["spec"]["replicas"]
            for d in _deployments(kube, ns, "edge-relay").values()}


def _viewers(ns: str, eu: int, us: int) -> None:
    """Two edge-relay pods report, as media nodes do, one per region."""
    reports.publish(ns, "edge-eu-0", role="edge-relay", region="eu",
                    broadcasts={f"{ns}/keynote": eu})
    reports.publish(ns, "edge-us-0", role="edge-relay", region="us",
                    broadcasts={f"{ns}/keynote": us})


def test_broadcast_ladder_relays_and_edges_follow_viewers(kube: Kube, namespace: str,
                                                          operator: Operator) -> None:
    apply(kube, namespace, BROADCAST)

    def ready() -> dict | None:
        b = get(kube, namespace, "bcast", "keynote")
        return b if cond(b, "Ready").get("status") == "True" else None

    b = wait_until(ready, 90, 0.5, what="Broadcast Ready")
    tx = _deployments(kube, namespace, "transcoder")
    assert sorted(tx) == ["keynote-tx-1080p", "keynote-tx-360p", "keynote-tx-720p"]
    env = {e["name"]: e["value"]
           for e in tx["keynote-tx-720p"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env["PARLEY_HEIGHT"], env["PARLEY_BITRATE_KBPS"]) == ("720", "3000")
    # every tier pulls the one above over WHEP, through its Service, by a full URL
    bkey = f"{namespace}.keynote"
    assert env["PARLEY_UPSTREAM_URL"] == (
        f"http://keynote-ingest.{namespace}.svc:8080/live/{bkey}/whep")
    assert (env["PARLEY_BROADCAST"], env["PARLEY_RENDITION"]) == (bkey, "720p")
    assert "PARLEY_INGEST" not in env
    assert kube.json("get", "service", "keynote-tx-720p", "-n", namespace)
    edges = _deployments(kube, namespace, "edge-relay")
    assert sorted(edges) == ["keynote-edge-eu", "keynote-edge-us"]
    bounds = {d["metadata"]["labels"]["parley.dev/region"]: (
        d["metadata"]["annotations"]["parley.dev/min-replicas"],
        d["metadata"]["annotations"]["parley.dev/max-replicas"]) for d in edges.values()}
    assert bounds == {"eu": ("1", "4"), "us": ("2", "5")}
    assert _edge_replicas(kube, namespace) == {"eu": 1, "us": 2}  # no viewers: the minimum
    relay = _deployments(kube, namespace, "relay")
    assert len(relay) == 1
    renv = {e["name"]: e["value"] for e in next(iter(relay.values()))["spec"]["template"]
            ["spec"]["containers"][0]["env"]}
    assert renv["PARLEY_UPSTREAM_URL"] == (
        f"http://keynote-tx-{{rendition}}.{namespace}.svc:8080/live/{bkey}/{{rendition}}/whep")
    assert (renv["PARLEY_RENDITIONS"], renv["PARLEY_TIER"]) == ("1080p,720p,360p", "relay")
    eenv = {e["name"]: e.get("value") or e["valueFrom"]["fieldRef"]["fieldPath"]
            for e in edges["keynote-edge-eu"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert eenv["PARLEY_UPSTREAM_URL"] == (
        f"http://keynote-relay.{namespace}.svc:8080/live/{bkey}/{{rendition}}/whep")
    assert (eenv["PARLEY_TIER"], eenv["PARLEY_REGION"]) == ("edge", "eu")
    assert "PARLEY_UPSTREAM" not in eenv
    # the downward API names the pod whose Lease carries the edge's viewers
    assert (eenv["POD_NAME"], eenv["POD_NAMESPACE"]) == ("metadata.name", "metadata.namespace")
    ingest = _deployments(kube, namespace, "ingest")
    assert list(ingest) == ["keynote-ingest"]
    ic = ingest["keynote-ingest"]["spec"]["template"]["spec"]["containers"][0]
    assert ic["args"] == ["media-node", "--role", "ingest"]
    ienv = {e["name"]: e["value"] for e in ic["env"] if "value" in e}
    assert ienv["PARLEY_INGEST_SOURCES"] == "stage-cam"
    # no PARLEY_BROADCAST_SECRET on this operator: nothing from a Secret
    assert not [e for e in ic["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    # its broadcast.* events: a JSONL file in the writable /tmp when the operator knows no Kafka
    assert ienv["PARLEY_DATA_DIR"] == "/tmp/parley" and "PARLEY_KAFKA_BOOTSTRAP" not in ienv
    assert not _deployments(kube, namespace, "call-server")
    assert kube.json("get", "service", "keynote-ingest", "-n", namespace)
    for d in [*tx.values(), *edges.values(), *ingest.values()]:
        owner = d["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"]) == ("Broadcast", b["metadata"]["uid"])
    assert b["status"]["transcoders"] == 3
    assert [p["rendition"] for p in b["status"]["playback"]] == ["1080p", "720p", "360p"]
    assert b["status"]["ingestUrl"] == (
        f"http://keynote-ingest.{namespace}.svc:8080/live/{bkey}/whip")
    assert b["status"]["playback"][0]["url"].endswith(f"/live/{bkey}/1080p/whep")
    assert cond(b, "Recording")["reason"] == "Disabled"
    # kwok pods run no ingest: nothing reported, nothing claimed
    assert (cond(b, "OnAir")["status"], cond(b, "OnAir")["reason"]) == ("False", "NoReport")
    assert b["status"]["sources"] == [{"name": "stage-cam", "connected": False,
                                       "sending": False}]

    # Viewers rise: eu 250 -> 3 replicas; us 900 -> 9, capped at its maximum of 5.
    _viewers(namespace, 250, 900)
    wait_until(lambda: _edge_replicas(kube, namespace) == {"eu": 3, "us": 5}, 30, 0.5,
               what="edges scaled up within bounds")
    live = wait_until(lambda: (lambda b: b if b["status"].get("viewers") == 1150 else None)(
        get(kube, namespace, "bcast", "keynote")), 30, 0.5, what="viewers in status")
    assert live["status"]["phase"] == "Live"
    assert {e["region"]: e["viewers"] for e in live["status"]["edges"]} == {"eu": 250, "us": 900}

    # And back down: eu to its minimum, us to 2.
    _viewers(namespace, 0, 150)
    wait_until(lambda: _edge_replicas(kube, namespace) == {"eu": 1, "us": 2}, 30, 0.5,
               what="edges scaled back down")
    wait_until(lambda: all(
        d["status"].get("readyReplicas") == d["spec"]["replicas"]
        for d in _deployments(kube, namespace, "edge-relay").values()), 60, 0.5,
        what="edge pods Ready")
    reasons = {e["reason"] for e in kube.json(
        "get", "events", "-n", namespace,
        "--field-selector", "involvedObject.name=keynote")["items"]}
    assert {"Created", "EdgeScaled", "PhaseLive"} <= reasons

    # Dropping a rendition removes its transcoder; deleting the broadcast collects the rest.
    kube.kubectl("patch", "bcast", "keynote", "-n", namespace, "--type=json", "-p",
                 '[{"op":"remove","path":"/spec/renditions/2"}]')
    wait_until(lambda: sorted(_deployments(kube, namespace, "transcoder")) == [
        "keynote-tx-1080p", "keynote-tx-720p"], 30, 0.5, what="360p transcoder removed")
    kube.kubectl("delete", "bcast", "keynote", "-n", namespace)
    wait_until(lambda: not kube.json("get", "deployments", "-n", namespace, "-l",
                                     "parley.dev/broadcast=keynote")["items"], 60, 0.5,
               what="broadcast workloads garbage-collected")


def test_recording_runs_a_recorder_deployment_and_the_condition_follows_it(
        kube: Kube, namespace: str, crds: None, tmp_path: Path, redis_url: str) -> None:
    """spec.recording.enabled: `{name}-recorder` (--role recorder) pulls the top rendition's
    LL-HLS from its transcoder Service into the operator's recording store, S3 keys from the
    recorder Secret, the link secret from the broadcast Secret, as its own ServiceAccount (its
    report Lease) with its pod's identity; Recording is not True for an available Deployment
    alone (kwok pods run no recorder: NoReport; test_broadcast_recording.py runs a real one),
    Disabled after it is turned off.
    The operator's Kafka settings reach the ingest (its broadcast.* events), not the recorder."""
    store = "s3://parley-broadcasts/archive"
    kafka = "parley-kafka.parley.svc:9092"
    op = Operator(kube, namespace, tmp_path, env={
        "PARLEY_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/12",
        "PARLEY_RECORDING_STORE": store, "PARLEY_RECORDER_SECRET": "parley-recorder",
        "PARLEY_BROADCAST_SECRET": "parley-secrets",
        "PARLEY_KAFKA_BOOTSTRAP": kafka, "PARLEY_KAFKA_TOPIC": "events.test"}).start()
    try:
        apply(kube, namespace, {**BROADCAST, "spec": {**BROADCAST["spec"],
                                                      "recording": {"enabled": True}}})

        def recording() -> dict | None:
            b = get(kube, namespace, "bcast", "keynote")
            return b if cond(b, "Recording").get("reason") == "NoReport" else None

        b = wait_until(recording, 90, 0.5, what="Recording NoReport (available, no report)")
        assert cond(b, "Recording")["status"] == "False" and "recording" not in b["status"]
        [dep] = _deployments(kube, namespace, "recorder").values()
        assert dep["metadata"]["name"] == "keynote-recorder"
        assert dep["spec"]["strategy"]["type"] == "Recreate" and dep["spec"]["replicas"] == 1
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["args"] == ["media-node", "--role", "recorder"]
        env = {e["name"]: e.get("value") or e["valueFrom"].get("secretKeyRef") or
               e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
        bkey = f"{namespace}.keynote"
        assert env == {
            "PARLEY_BROADCAST": bkey, "PARLEY_RECORD_RENDITIONS": "1080p",
            "PARLEY_RECORDING_STORE": store, "PARLEY_PUBLIC_URL": "http://localhost:8080",
            "PARLEY_UPSTREAM_URL": f"http://keynote-tx-{{rendition}}.{namespace}.svc:8080"
                                   f"/live/{bkey}/{{rendition}}.m3u8",
            "PARLEY_TOKEN_SECRET": {"name": "parley-secrets", "key": "token-secret"},
            "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace",
            "POD_UID": "metadata.uid"}
        assert c["envFrom"] == [{"secretRef": {"name": "parley-recorder"}}]
        pod = dep["spec"]["template"]["spec"]
        assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (
            "keynote-recorder", True)
        role = get(kube, namespace, "role", "keynote-recorder")
        assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                  "verbs": ["get", "create", "update", "patch"]}]
        [ingest] = _deployments(kube, namespace, "ingest").values()
        ienv = {e["name"]: e["value"]
                for e in ingest["spec"]["template"]["spec"]["containers"][0]["env"]
                if "value" in e}
        assert {k: ienv.get(k) for k in ("PARLEY_KAFKA_BOOTSTRAP", "PARLEY_KAFKA_TOPIC",
                                         "PARLEY_DATA_DIR")} == {
            "PARLEY_KAFKA_BOOTSTRAP": kafka, "PARLEY_KAFKA_TOPIC": "events.test",
            "PARLEY_DATA_DIR": "/tmp/parley"}
        assert dep["metadata"]["ownerReferences"][0]["uid"] == b["metadata"]["uid"]

        kube.kubectl("patch", "bcast", "keynote", "-n", namespace, "--type=merge", "-p",
                     '{"spec":{"recording":{"enabled":false}}}')
        wait_until(lambda: not _deployments(kube, namespace, "recorder"), 30, 0.5,
                   what="recorder Deployment removed")
        wait_until(lambda: cond(get(kube, namespace, "bcast", "keynote"), "Recording").get(
            "reason") == "Disabled", 30, 0.5, what="Recording Disabled")
    finally:
        op.stop()


def test_recording_without_a_store_says_so(kube: Kube, namespace: str,
                                           operator: Operator) -> None:
    apply(kube, namespace, {**BROADCAST, "spec": {**BROADCAST["spec"],
                                                  "recording": {"enabled": True}}})
    b = wait_until(lambda: (lambda b: b if cond(b, "Recording") else None)(
        get(kube, namespace, "bcast", "keynote")), 60, 0.5, what="Recording condition")
    assert (cond(b, "Recording")["status"], cond(b, "Recording")["reason"]) == ("False",
                                                                                 "NoStore")
    assert not _deployments(kube, namespace, "recorder")

"""Builders for the objects the operator owns. Pure functions of (owner, intent): the same
Meeting or Broadcast always yields the same manifests, with deterministic names, so applying
them again after a crash converges instead of duplicating."""

from __future__ import annotations

from typing import Any

from parley.operator.config import (
    API_VERSION,
    BROADCAST_LABEL,
    COMPONENT,
    MANAGED_BY,
    MEETING_LABEL,
    REGION,
)

MEDIA_UDP_PORT = 7882
HTTP_PORT = 8080


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def labels(component: str, owner: dict[str, Any], extra: dict[str, str] | None = None
           ) -> dict[str, str]:
    key = MEETING_LABEL if owner["kind"] == "Meeting" else BROADCAST_LABEL
    return {"app.kubernetes.io/name": "parley", "app.kubernetes.io/part-of": "parley",
            COMPONENT: component, MANAGED_BY: "parley-operator",
            key: owner["metadata"]["name"], **(extra or {})}


def _name(*parts: str) -> str:
    """A DNS-1123 name of at most 63 characters (Deployment pods need room for suffixes)."""
    return "-".join(parts)[:63].rstrip("-")


def media_deployment(owner: dict[str, Any], name: str, component: str, role: str, image: str,
                     replicas: int, env: dict[str, str], extra_labels: dict[str, str] | None = None,
                     annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A media-node Deployment hardened like the chart's: non-root, read-only root fs, no
    capabilities, one multiplexed UDP port (no hostNetwork)."""
    lbl = labels(component, owner, extra_labels)
    selector = {k: lbl[k] for k in (COMPONENT, MEETING_LABEL, BROADCAST_LABEL, REGION)
                if k in lbl}
    selector["parley.dev/workload"] = name
    lbl["parley.dev/workload"] = name
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": owner["metadata"]["namespace"], "labels": lbl,
                     "annotations": annotations or {},
                     "ownerReferences": [owner_ref(owner)]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": lbl},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                        "runAsGroup": 10001, "fsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "media",
                        "image": image,
                        "args": ["media-node", "--role", role],
                        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                        "ports": [{"name": "media-udp", "containerPort": MEDIA_UDP_PORT,
                                   "protocol": "UDP"},
                                  {"name": "http", "containerPort": HTTP_PORT,
                                   "protocol": "TCP"}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                                           "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/livez", "port": "http"},
                                          "periodSeconds": 10},
                        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                      "limits": {"memory": "1Gi"}},
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def secret_env(dep: dict[str, Any], secret: str | None,
               refs: tuple[tuple[str, str, bool], ...]) -> None:
    """``(variable, key, optional)`` read from the Secret ``secret`` by reference: the value
    never enters the Deployment, and the operator never reads it."""
    if not secret:
        return
    dep["spec"]["template"]["spec"]["containers"][0]["env"] += [
        {"name": var, "valueFrom": {"secretKeyRef": {
            "name": secret, "key": key, **({"optional": True} if optional else {})}}}
        for var, key, optional in refs]


def pod_identity(dep: dict[str, Any]) -> None:
    """The pod's identity from the downward API: a role that reports to the operator writes
    the Lease parley-report-<pod>, owned by the pod."""
    dep["spec"]["template"]["spec"]["containers"][0]["env"] += [
        {"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for var, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                          ("POD_UID", "metadata.uid"))]


def service(owner: dict[str, Any], name: str, component: str, selector: dict[str, str],
            ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": owner["metadata"]["namespace"],
                     "labels": labels(component, owner), "ownerReferences": [owner_ref(owner)]},
        "spec": {"selector": selector, "ports": ports},
    }


# --- Meeting workloads -------------------------------------------------------------------

def meeting_transcoder_name(meeting: str) -> str:
    return _name(meeting, "transcoder")


def meeting_transcoder(meeting: dict[str, Any], image: str, call_server: str,
                       redis_url: str | None = None) -> dict[str, Any]:
    """The transcoder beside a meeting's call server: lower rungs and other codecs for the
    receivers that need them (docs/call-server.md). It takes the call server's RTP on its
    media UDP port and announces ``POD_IP:port`` in Redis (``PARLEY_REDIS_URL``), where the
    meeting's call server finds it. It idles until a subscriber needs it, hence the default CPU
    request: a 720p camera's decode is about 15 % of a core, each 360p H.264 output another 15 %
    (docs/benchmarks.md, "Meeting transcoder")."""
    meta = meeting["metadata"]
    env = {"PARLEY_MEETING": f"{meta['namespace']}/{meta['name']}",
           "PARLEY_CALL_SERVER": call_server,
           "PARLEY_MEDIA_PORT": str(MEDIA_UDP_PORT),
           "PARLEY_REGION": meeting["spec"].get("region", "default")}
    if redis_url:
        env["PARLEY_REDIS_URL"] = redis_url
    dep = media_deployment(meeting, meeting_transcoder_name(meta["name"]), "transcoder",
                           "transcoder", image, 1, env)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "POD_IP",
                             "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    return dep


# --- Broadcast workloads -----------------------------------------------------------------

def ingest_name(b: str) -> str:
    return _name(b, "ingest")


def relay_name(b: str) -> str:
    return _name(b, "relay")


def transcoder_name(b: str, rendition: str) -> str:
    return _name(b, "tx", rendition)


def edge_name(b: str, region: str) -> str:
    return _name(b, "edge", region)


def broadcast_recorder_name(b: str) -> str:
    return _name(b, "recorder")


def _bkey(b: dict[str, Any]) -> str:
    return f"{b['metadata']['namespace']}/{b['metadata']['name']}"


def ingest(b: dict[str, Any], image: str) -> list[dict[str, Any]]:
    """The ingest call server (component=call-server, not part of any meeting pool) and the
    Service sources publish to."""
    name = ingest_name(b["metadata"]["name"])
    sources = ",".join(s["name"] for s in b["spec"]["sources"])
    dep = media_deployment(b, name, "call-server", "call-server", image, 1,
                           {"PARLEY_BROADCAST": _bkey(b), "PARLEY_INGEST_SOURCES": sources},
                           extra_labels={"parley.dev/tier": "ingest"})
    svc = service(b, name, "call-server", dep["spec"]["selector"]["matchLabels"], [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "media-udp", "port": MEDIA_UDP_PORT, "targetPort": "media-udp",
         "protocol": "UDP"}])
    return [dep, svc]


def transcoder(b: dict[str, Any], rendition: dict[str, Any], image: str) -> dict[str, Any]:
    name = transcoder_name(b["metadata"]["name"], rendition["name"])
    env = {"PARLEY_BROADCAST": _bkey(b), "PARLEY_RENDITION": rendition["name"],
           "PARLEY_HEIGHT": str(rendition["height"]),
           "PARLEY_BITRATE_KBPS": str(rendition["bitrateKbps"]),
           "PARLEY_INGEST": f"{ingest_name(b['metadata']['name'])}:{MEDIA_UDP_PORT}"}
    return media_deployment(b, name, "transcoder", "transcoder", image, 1, env,
                            extra_labels={"parley.dev/rendition": rendition["name"]})


def relay_replicas(regions: int) -> int:
    """One relay fans out to up to four regions' edges."""
    return max(1, -(-regions // 4))


def relay(b: dict[str, Any], image: str) -> list[dict[str, Any]]:
    name = relay_name(b["metadata"]["name"])
    regions = len(b["spec"]["edge"]["regions"])
    dep = media_deployment(b, name, "relay", "edge-relay", image, relay_replicas(regions),
                           {"PARLEY_BROADCAST": _bkey(b), "PARLEY_TIER": "relay"},
                           extra_labels={"parley.dev/tier": "relay"})
    svc = service(b, name, "relay", dep["spec"]["selector"]["matchLabels"], [
        {"name": "media-udp", "port": MEDIA_UDP_PORT, "targetPort": "media-udp",
         "protocol": "UDP"}])
    return [dep, svc]


def edge(b: dict[str, Any], region: dict[str, Any], replicas: int, image: str
         ) -> dict[str, Any]:
    name = edge_name(b["metadata"]["name"], region["name"])
    env = {"PARLEY_BROADCAST": _bkey(b), "PARLEY_REGION": region["name"],
           "PARLEY_UPSTREAM": f"{relay_name(b['metadata']['name'])}:{MEDIA_UDP_PORT}"}
    ann = {"parley.dev/min-replicas": str(region.get("minReplicas", 1)),
           "parley.dev/max-replicas": str(region.get("maxReplicas", 10)),
           "parley.dev/viewers-per-replica": str(b["spec"]["edge"].get("viewersPerReplica",
                                                                       500))}
    return media_deployment(b, name, "edge-relay", "edge-relay", image, replicas, env,
                            extra_labels={REGION: region["name"]}, annotations=ann)


def broadcast_recorder(b: dict[str, Any], image: str) -> dict[str, Any]:
    env = {"PARLEY_BROADCAST": _bkey(b),
           "PARLEY_INGEST": f"{ingest_name(b['metadata']['name'])}:{MEDIA_UDP_PORT}"}
    return media_deployment(b, broadcast_recorder_name(b["metadata"]["name"]), "recorder",
                            "recorder", image, 1, env)


def edge_replicas(viewers: int, per_replica: int, lo: int, hi: int) -> int:
    """Replicas for ``viewers``, kept within [lo, hi]."""
    want = -(-viewers // max(per_replica, 1))
    return min(max(want, lo), hi)

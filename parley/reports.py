"""Media-node reports: the channel that carries participant and viewer counts to the operator.

Each media node (call server, edge relay) owns one ``coordination.k8s.io/v1`` Lease named
``parley-report-<pod>`` in its namespace: ``spec.renewTime`` is its heartbeat and the annotation
``parley.dev/report`` carries ``{"meetings": {"<ns>/<name>": participants},
"broadcasts": {"<ns>/<name>": viewers}}``; an edge relay adds ``"transports": {"<ns>/<name>":
{"whep": n, "hls": n}}`` and ``"renditions": {"<ns>/<name>": [renditions producing]}``; a
broadcast's ingest reports ``"sources": {"<ns>/<name>": {"connected", "onAir", "meetings"}}``
(media-node/broadcast/ingest_report.py); a broadcast's recorder reports ``"recordings":
{"<ns>/<name>": {"state", "id", "rendition", "segments", "seconds", "renditions",
"lastSegmentAt", "location", "error"}}``
(media-node/broadcast/recorder_report.py). A
Lease needs no CRD, media nodes only need ``create``/``update`` on leases in their own
namespace (not ``patch`` on pods), an owner reference to the pod garbage-collects it, and a
stale heartbeat means "no longer counted".
The media node (``parley.media.report``) and the tests both write it with :func:`publish`;
the operator reads it (``parley.operator.reports.collect``).
"""

from __future__ import annotations

import json
from typing import Any

from parley import kubeapi

REPORT_LABEL = "parley.dev/report"
REPORT_ANNOTATION = "parley.dev/report"
ROLE_LABEL = "parley.dev/role"
REGION_LABEL = "parley.dev/region"


# A Broadcast's ``status.recording``: what its recorder reports (media-node/broadcast/recorder.py
# ``BroadcastRecorder.report``), as the operator shows it and `parley up` answers
# ``GET /live/{b}/recording``.
RECORDING_FIELDS = ("state", "id", "rendition", "segments", "seconds", "renditions",
                    "lastSegmentAt", "location", "error")


def recording_view(report: dict[str, Any]) -> dict[str, Any]:
    """A recorder's report as ``status.recording``: the known fields that have a value."""
    return {k: report[k] for k in RECORDING_FIELDS if report.get(k) not in (None, "")}


def lease_name(pod: str) -> str:
    return f"parley-report-{pod}"[:253]


def resource_key(room: str) -> str | None:
    """The ``<ns>/<name>`` of the Meeting or Broadcast a room belongs to, or None for an ad
    hoc room. The operator's join URLs name rooms ``<ns>.<name>`` (a namespace has no dots);
    a peer pair's call-server meeting (``<room>:pair:<a>:<b>``) counts toward its room."""
    room = room.split(":pair:", 1)[0]
    ns, dot, name = room.partition(".")
    return f"{ns}/{name}" if dot and ns and name else None


def publish(namespace: str, pod: str, *, role: str, region: str,
            meetings: dict[str, int] | None = None, broadcasts: dict[str, int] | None = None,
            ttl_seconds: int = 30, pod_uid: str | None = None,
            transports: dict[str, dict[str, int]] | None = None,
            renditions: dict[str, list[str]] | None = None,
            sources: dict[str, dict[str, Any]] | None = None,
            recordings: dict[str, dict[str, Any]] | None = None) -> None:
    """Write (create or replace) this media node's report; idempotent. Blocking: media nodes
    call it from a worker thread."""
    report: dict[str, Any] = {"meetings": meetings or {}, "broadcasts": broadcasts or {}}
    if transports is not None:
        report["transports"] = transports
    if renditions is not None:
        report["renditions"] = renditions
    if sources is not None:
        report["sources"] = sources
    if recordings is not None:
        report["recordings"] = recordings
    body: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": lease_name(pod), "namespace": namespace,
            "labels": {REPORT_LABEL: "media-node", ROLE_LABEL: role, REGION_LABEL: region},
            "annotations": {REPORT_ANNOTATION: json.dumps(report, sort_keys=True)},
        },
        "spec": {"holderIdentity": pod, "leaseDurationSeconds": ttl_seconds,
                 "renewTime": kubeapi.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    }
    if pod_uid:
        body["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": pod_uid}]
    # Server-side apply: create or update in one idempotent call, no resourceVersion needed.
    kubeapi.coordination().patch_namespaced_lease(
        lease_name(pod), namespace, body, field_manager=f"parley-media-{role}", force=True,
        _content_type="application/apply-patch+yaml")

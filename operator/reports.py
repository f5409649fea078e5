"""Media-node reports: how participant and viewer counts reach the operator.

Each media node (call server, edge relay) owns one ``coordination.k8s.io/v1`` Lease named
``parley-report-<pod>`` in its namespace: ``spec.renewTime`` is its heartbeat and the annotation
``parley.dev/report`` carries ``{"meetings": {"<ns>/<name>": participants},
"broadcasts": {"<ns>/<name>": viewers}}``. A Lease needs no CRD, media nodes only need
``create``/``update`` on leases in their own namespace (not ``patch`` on pods), an owner
reference to the pod garbage-collects it, and a stale heartbeat means "no longer counted".
Tests call :func:`publish` exactly as a media node does.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from parley.operator import kube
from parley.operator.config import REGION

REPORT_LABEL = "parley.dev/report"
REPORT_ANNOTATION = "parley.dev/report"
ROLE_LABEL = "parley.dev/role"


def lease_name(pod: str) -> str:
    return f"parley-report-{pod}"[:253]


def publish(namespace: str, pod: str, *, role: str, region: str,
            meetings: dict[str, int] | None = None, broadcasts: dict[str, int] | None = None,
            ttl_seconds: int = 30, pod_uid: str | None = None) -> None:
    """Write (create or replace) this media node's report. Called by media nodes every few
    seconds; idempotent."""
    body: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {
            "name": lease_name(pod), "namespace": namespace,
            "labels": {REPORT_LABEL: "media-node", ROLE_LABEL: role, REGION: region},
            "annotations": {REPORT_ANNOTATION: json.dumps(
                {"meetings": meetings or {}, "broadcasts": broadcasts or {}}, sort_keys=True)},
        },
        "spec": {"holderIdentity": pod, "leaseDurationSeconds": ttl_seconds,
                 "renewTime": kube.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    }
    if pod_uid:
        body["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": pod_uid}]
    # Server-side apply: create or update in one idempotent call, no resourceVersion needed.
    kube.coordination().patch_namespaced_lease(
        lease_name(pod), namespace, body, field_manager=f"parley-media-{role}", force=True,
        _content_type="application/apply-patch+yaml")


@dataclass
class Reports:
    """Fresh reports of one namespace, summed per meeting / broadcast (and region)."""

    participants: dict[str, int] = field(default_factory=dict)
    viewers: dict[str, int] = field(default_factory=dict)
    viewers_by_region: dict[tuple[str, str], int] = field(default_factory=dict)
    viewers_by_pod: dict[str, int] = field(default_factory=dict)


def collect(namespace: str, ttl_seconds: float) -> Reports:
    """Read every fresh report in ``namespace``. A report is fresh while its renewTime plus
    the larger of its leaseDuration and ``ttl_seconds`` is in the future."""
    out = Reports()
    participants: dict[str, int] = defaultdict(int)
    viewers: dict[str, int] = defaultdict(int)
    by_region: dict[tuple[str, str], int] = defaultdict(int)
    now = kube.now()
    leases = kube.coordination().list_namespaced_lease(
        namespace, label_selector=REPORT_LABEL).items
    for lease in leases:
        renew = lease.spec.renew_time
        if renew is None:
            continue
        if renew.tzinfo is None:
            renew = renew.replace(tzinfo=dt.UTC)
        ttl = max(float(lease.spec.lease_duration_seconds or 0), ttl_seconds)
        if (now - renew).total_seconds() > ttl:
            continue
        try:
            report = json.loads((lease.metadata.annotations or {}).get(REPORT_ANNOTATION, "{}"))
        except ValueError:
            continue
        region = (lease.metadata.labels or {}).get(REGION, "")
        pod_viewers = 0
        for key, n in (report.get("meetings") or {}).items():
            participants[key] += max(int(n), 0)
        for key, n in (report.get("broadcasts") or {}).items():
            viewers[key] += max(int(n), 0)
            by_region[(key, region)] += max(int(n), 0)
            pod_viewers += max(int(n), 0)
        out.viewers_by_pod[lease.spec.holder_identity or ""] = pod_viewers
    out.participants = dict(participants)
    out.viewers = dict(viewers)
    out.viewers_by_region = dict(by_region)
    return out

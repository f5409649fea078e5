"""Media-node reports as the operator reads them: fresh Leases summed per meeting, broadcast
and region. The wire format and the writer live in the shared core (:mod:`parley.reports`)."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from parley.operator import kube
from parley.operator.config import REGION
from parley.reports import REPORT_ANNOTATION, REPORT_LABEL, publish

__all__ = ["Reports", "collect", "publish"]


@dataclass
class Reports:
    """Fresh reports of one namespace, summed per meeting / broadcast (and region)."""

    participants: dict[str, int] = field(default_factory=dict)
    viewers: dict[str, int] = field(default_factory=dict)
    viewers_by_region: dict[tuple[str, str], int] = field(default_factory=dict)
    viewers_by_pod: dict[str, int] = field(default_factory=dict)
    # edge relays only: {(broadcast, region): {"whep": n, "hls": n}}, broadcast -> renditions
    # whose frames reached at least one edge since its previous report
    transports_by_region: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    producing: dict[str, set[str]] = field(default_factory=dict)
    # the ingest's: broadcast -> {"connected": [{name, sending}], "onAir": {video, audio},
    # "meetings": {source: {meeting, callServer, joined, onAir, error}}}
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the recorder's: broadcast -> {"state", "id", "segments", "seconds", "lastSegmentAt",
    # "location", "error"} (media-node/broadcast/recorder_report.py)
    recordings: dict[str, dict[str, Any]] = field(default_factory=dict)


def collect(namespace: str, ttl_seconds: float) -> Reports:
    """Read every fresh report in ``namespace``. A report is fresh while its renewTime plus
    the larger of its leaseDuration and ``ttl_seconds`` is in the future."""
    out = Reports()
    participants: dict[str, int] = defaultdict(int)
    viewers: dict[str, int] = defaultdict(int)
    by_region: dict[tuple[str, str], int] = defaultdict(int)
    transports: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"whep": 0, "hls": 0})
    producing: dict[str, set[str]] = defaultdict(set)
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
        for key, per in (report.get("transports") or {}).items():
            for transport in ("whep", "hls"):
                transports[(key, region)][transport] += max(int(per.get(transport, 0)), 0)
        for key, names in (report.get("renditions") or {}).items():
            producing[key].update(str(n) for n in names)
        for key, snap in (report.get("sources") or {}).items():
            if isinstance(snap, dict):
                out.sources[key] = snap
        for key, rec in (report.get("recordings") or {}).items():
            if isinstance(rec, dict):
                out.recordings[key] = rec
        out.viewers_by_pod[lease.spec.holder_identity or ""] = pod_viewers
    out.participants = dict(participants)
    out.viewers = dict(viewers)
    out.viewers_by_region = dict(by_region)
    out.transports_by_region = dict(transports)
    out.producing = dict(producing)
    return out

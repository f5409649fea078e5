"""Broadcast reconciliation: ingest call server, one transcoder per rendition, a relay tier
and one edge-relay Deployment per region sized from the viewers the edges report.

Every pass applies the full desired set (server-side apply, deterministic names), deletes
what the spec no longer asks for (found by label, so leftovers of a crashed pass are found
too) and writes status. Owner references let the garbage collector clean up on delete, so
no finalizer is needed.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

from kubernetes.client.rest import ApiException

from parley.operator import kube, metrics, reports, resources
from parley.operator.config import (
    BROADCAST_LABEL,
    COMPONENT,
    DELETION_COST,
    MANAGED_BY,
    REGION,
    OperatorConfig,
)
from parley.operator.status import condition, differs

log = logging.getLogger("parley.operator.broadcasts")


class BroadcastController:
    def __init__(self, config: OperatorConfig):
        self.config = config
        self.applier = kube.Applier()
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def reconcile(self, b: dict[str, Any]) -> None:
        meta = b["metadata"]
        if meta.get("deletionTimestamp"):
            return
        key = (meta["namespace"], meta["name"])
        with self._guard:
            lock = self._locks[key]
        with lock, metrics.reconciling("Broadcast"):
            self._reconcile(b)

    def _reconcile(self, b: dict[str, Any]) -> None:
        meta, spec = b["metadata"], b["spec"]
        ns, name = meta["namespace"], meta["name"]
        bkey = f"{ns}/{name}"
        image = self.config.media_image
        existing = {d.metadata.name: d for d in kube.apps().list_namespaced_deployment(
            ns, label_selector=f"{MANAGED_BY}=parley-operator,{BROADCAST_LABEL}={name}").items}
        counts = reports.collect(ns, self.config.report_ttl_seconds)
        wanted: set[str] = set()

        def apply(obj: dict[str, Any], what: str) -> None:
            if obj["kind"] == "Deployment":
                wanted.add(obj["metadata"]["name"])
            if self.applier.apply(obj) and obj["kind"] == "Deployment" and \
                    obj["metadata"]["name"] not in existing:
                kube.event(b, "Created", f"created {what} Deployment {obj['metadata']['name']}")

        for obj in resources.ingest(b, image):
            apply(obj, "ingest")
        for r in spec["renditions"]:
            apply(resources.transcoder(b, r, image), f"transcoder ({r['name']})")
        for obj in resources.relay(b, image):
            apply(obj, "relay")
        per = int(spec["edge"].get("viewersPerReplica", 500))
        edges = []
        for region in spec["edge"]["regions"]:
            rname = region["name"]
            lo, hi = int(region.get("minReplicas", 1)), int(region.get("maxReplicas", 10))
            viewers = counts.viewers_by_region.get((bkey, rname), 0)
            want = resources.edge_replicas(viewers, per, lo, hi)
            dname = resources.edge_name(name, rname)
            cur = existing.get(dname)
            have = cur.spec.replicas if cur is not None else None
            if have is not None and want < have:
                self._prefer_idle(ns, dname, counts.viewers_by_pod)
            apply(resources.edge(b, region, want, image), f"edge-relay ({rname})")
            if have is not None and have != want:
                kube.event(b, "EdgeScaled",
                           f"edge relays in {rname}: {have} -> {want} replicas for {viewers} "
                           f"viewers at {per} per replica (bounds {lo}..{hi})")
            metrics.EDGE_REPLICAS.labels(ns, name, rname).set(want)
            edges.append({"region": rname, "deployment": dname, "viewers": viewers,
                          "replicas": want,
                          "readyReplicas": (cur.status.ready_replicas or 0) if cur else 0})
        if spec.get("recording", {}).get("enabled"):
            apply(resources.broadcast_recorder(b, image), "recorder")
        for dname in set(existing) - wanted:
            if self.applier.delete("Deployment", ns, dname):
                kube.event(b, "Deleted", f"deleted Deployment {dname}: no longer in the spec")
        self._status(b, existing, counts, edges)

    def _prefer_idle(self, ns: str, deployment: str, viewers_by_pod: dict[str, int]) -> None:
        """Before scaling edges down, make the ReplicaSet remove the pods serving fewest
        viewers (pod-deletion-cost = viewers)."""
        pods = kube.core().list_namespaced_pod(
            ns, label_selector=f"parley.dev/workload={deployment}").items
        for p in pods:
            cost = str(viewers_by_pod.get(p.metadata.name, 0))
            if (p.metadata.annotations or {}).get(DELETION_COST) != cost:
                try:
                    kube.core().patch_namespaced_pod(
                        p.metadata.name, ns, {"metadata": {"annotations": {DELETION_COST: cost}}})
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def _status(self, b: dict[str, Any], existing: dict[str, Any], counts: reports.Reports,
                edges: list[dict[str, Any]]) -> None:
        meta, spec = b["metadata"], b["spec"]
        ns, name = meta["namespace"], meta["name"]
        gen = int(meta.get("generation") or 0)
        old = b.get("status") or {}
        conds = old.get("conditions")

        def available(dname: str) -> bool:
            d = existing.get(dname)
            return bool(d is not None and (d.status.available_replicas or 0) > 0)

        tx_ready = sum(1 for r in spec["renditions"]
                       if available(resources.transcoder_name(name, r["name"])))
        missing = [n for n in [resources.ingest_name(name), resources.relay_name(name),
                               *(resources.transcoder_name(name, r["name"])
                                 for r in spec["renditions"])]
                   if not available(n)]
        missing += [e["deployment"] for e in edges
                    if e["replicas"] > 0 and not available(e["deployment"])]
        viewers = counts.viewers.get(f"{ns}/{name}", 0)
        ready = not missing
        rec = bool(spec.get("recording", {}).get("enabled"))
        rec_ready = rec and available(resources.broadcast_recorder_name(name))
        status = {
            "phase": ("Live" if viewers else "Ready") if ready else "Pending",
            "observedGeneration": gen,
            "ingestUrl": f"http://{resources.ingest_name(name)}.{ns}.svc:"
                         f"{resources.HTTP_PORT}/whip",
            "viewers": viewers,
            "transcoders": tx_ready,
            "playback": [{"rendition": r["name"],
                          "url": f"{self.config.public_url}/live/{ns}.{name}/{r['name']}.m3u8"}
                         for r in spec["renditions"]],
            "edges": edges,
            "conditions": [
                condition(conds, "Ready", ready, "Available" if ready else "Starting",
                          "ingest, ladder, relay and edges are available" if ready
                          else f"waiting for {', '.join(sorted(missing))}", gen),
                condition(conds, "Recording", rec_ready,
                          "Disabled" if not rec else ("Running" if rec_ready else "Starting"),
                          "recording is disabled" if not rec else
                          f"Deployment {resources.broadcast_recorder_name(name)} "
                          + ("is available" if rec_ready else "is starting"), gen),
            ],
        }
        if not differs(old, status):
            return
        if old.get("phase") != status["phase"]:
            kube.event(b, f"Phase{status['phase']}",
                       f"phase {old.get('phase') or '-'} -> {status['phase']}")
        try:
            kube.patch_status("broadcasts", ns, name, status)
        except ApiException as exc:
            if exc.status != 404:
                raise


def edge_selector(name: str, region: str) -> str:
    return f"{COMPONENT}=edge-relay,{BROADCAST_LABEL}={name},{REGION}={region}"

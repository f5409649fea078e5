"""Broadcast reconciliation: the ingest, one transcoder per rendition, a relay tier and one
edge-relay Deployment per region sized from the viewers the edges report.

Every tier pulls the one above it over WHEP (docs/broadcast.md), so each role gets its upstream as
a full URL through its Service: ingest ``/live/{ns}.{name}/whep`` (the programme) -> transcoder
``/live/{ns}.{name}/{rendition}/whep`` -> relay (every rendition) -> edges of each region.

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

from parley.operator import broadcast_access as access
from parley.operator import kube, metrics, reports, resources
from parley.operator.broadcast_recorder import (
    recorder_objects,
    recording_condition,
    recording_patch,
    recording_status,
)
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
HTTP = {"name": "http", "port": resources.HTTP_PORT, "targetPort": "http", "protocol": "TCP"}


def broadcast_url_key(b: dict[str, Any]) -> str:
    """``{namespace}.{name}``: the broadcast in every /live URL."""
    return f"{b['metadata']['namespace']}.{b['metadata']['name']}"


def _svc_url(b: dict[str, Any], service: str, path: str) -> str:
    return (f"http://{service}.{b['metadata']['namespace']}.svc:{resources.HTTP_PORT}"
            f"/live/{broadcast_url_key(b)}{path}")


def _set_env(dep: dict[str, Any], env: dict[str, str], drop: tuple[str, ...] = ()) -> None:
    c = dep["spec"]["template"]["spec"]["containers"][0]
    have = {e["name"]: e["value"] for e in c["env"] if e["name"] not in drop}
    c["env"] = [{"name": k, "value": v} for k, v in sorted({**have, **env}.items())]


# stream keys; the control key and the call-server directory for meeting sources
INGEST_SECRETS = (("PARLEY_TOKEN_SECRET", "token-secret", False),
                  ("PARLEY_CONTROL_KEY", "control-key", False),
                  ("PARLEY_REDIS_URL", "redis-url", True))


def ingest_objects(b: dict[str, Any], image: str, config: OperatorConfig
                   ) -> list[dict[str, Any]]:
    """The ingest role (WHIP in, the programme out over WHEP) and the Service sources publish to
    and transcoders pull from. Its broadcast.* events go where signaling's go
    (``OperatorConfig.event_env``); stream keys, the call servers' control key and the directory
    that locates a meeting source's call server come from ``config.broadcast_secret``."""
    name = resources.ingest_name(b["metadata"]["name"])
    sources = ",".join(s["name"] for s in b["spec"]["sources"])
    env = {**config.event_env(), "PARLEY_BROADCAST": broadcast_url_key(b),
           "PARLEY_INGEST_SOURCES": sources}
    video = (b["spec"].get("program") or {}).get("video")
    if video:
        env["PARLEY_PROGRAM_VIDEO"] = video
    dep = access.run_as(resources.media_deployment(
        b, name, "ingest", "ingest", image, 1, env, extra_labels={"parley.dev/tier": "ingest"}),
        access.ingest_account(b["metadata"]["name"]))  # it watches its Broadcast, reports
    resources.secret_env(dep, config.broadcast_secret, INGEST_SECRETS)
    resources.pod_identity(dep)  # its report: sources connected, what is on air
    svc = resources.service(b, name, "ingest", dep["spec"]["selector"]["matchLabels"], [
        HTTP, {"name": "media-udp", "port": resources.MEDIA_UDP_PORT,
               "targetPort": "media-udp", "protocol": "UDP"}])
    return [dep, svc]


def transcoder_objects(b: dict[str, Any], rendition: dict[str, Any], image: str
                       ) -> list[dict[str, Any]]:
    """One rung: pulls the ingest's programme, serves /live/{b}/{rendition}/whep."""
    dep = resources.transcoder(b, rendition, image)
    _set_env(dep, {"PARLEY_BROADCAST": broadcast_url_key(b),
                   "PARLEY_UPSTREAM_URL": _svc_url(
                       b, resources.ingest_name(b["metadata"]["name"]), "/whep")},
             drop=("PARLEY_INGEST",))
    svc = resources.service(b, dep["metadata"]["name"], "transcoder",
                            dep["spec"]["selector"]["matchLabels"], [HTTP])
    return [dep, svc]


def relay_objects(b: dict[str, Any], image: str) -> list[dict[str, Any]]:
    """The relay tier pulls every rendition from its transcoder's Service."""
    dep, svc = resources.relay(b, image)
    name = b["metadata"]["name"]
    _set_env(dep, {"PARLEY_BROADCAST": broadcast_url_key(b),
                   "PARLEY_RENDITIONS": ",".join(r["name"] for r in b["spec"]["renditions"]),
                   "PARLEY_UPSTREAM_URL": _svc_url(b, f"{name}-tx-{{rendition}}",
                                                   "/{rendition}/whep")})
    svc["spec"]["ports"] = [HTTP, *svc["spec"]["ports"]]
    return [dep, svc]


def edge_object(b: dict[str, Any], region: dict[str, Any], replicas: int, image: str
                ) -> dict[str, Any]:
    """Edges of a region pull every rendition from the relay Service."""
    dep = resources.edge(b, region, replicas, image)
    _set_env(dep, {"PARLEY_BROADCAST": broadcast_url_key(b), "PARLEY_TIER": "edge",
                   "PARLEY_RENDITIONS": ",".join(r["name"] for r in b["spec"]["renditions"]),
                   "PARLEY_UPSTREAM_URL": _svc_url(
                       b, resources.relay_name(b["metadata"]["name"]), "/{rendition}/whep")},
             drop=("PARLEY_UPSTREAM",))
    resources.pod_identity(dep)  # its viewers' report (media-node/broadcast/edge_report.py)
    return access.run_as(dep, access.edge_account(b["metadata"]["name"]))


def edge_service(b: dict[str, Any], region: str) -> dict[str, Any]:
    """The region's own Service over its edge pods (selector: component, broadcast and the
    region label), named like the edge Deployment: what a region's host name (Ingress,
    LoadBalancer, GeoDNS) points at, so a viewer reaches its own region's edges."""
    name = b["metadata"]["name"]
    return resources.service(
        b, resources.edge_name(name, region), "edge-relay",
        {COMPONENT: "edge-relay", BROADCAST_LABEL: name, REGION: region},
        [HTTP, {"name": "media-udp", "port": resources.MEDIA_UDP_PORT,
                "targetPort": "media-udp", "protocol": "UDP"}])


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

        for obj in access.access_objects(b):  # the ingest's and edges' identities
            self.applier.apply(obj)
        for obj in ingest_objects(b, image, self.config):
            apply(obj, "ingest")
        for r in spec["renditions"]:
            for obj in transcoder_objects(b, r, image):
                apply(obj, f"transcoder ({r['name']})")
        for obj in relay_objects(b, image):
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
            apply(edge_object(b, region, want, image), f"edge-relay ({rname})")
            apply(edge_service(b, rname), f"edge Service ({rname})")
            if have is not None and have != want:
                kube.event(b, "EdgeScaled",
                           f"edge relays in {rname}: {have} -> {want} replicas for {viewers} "
                           f"viewers at {per} per replica (bounds {lo}..{hi})")
            metrics.EDGE_REPLICAS.labels(ns, name, rname).set(want)
            edges.append({"region": rname, "deployment": dname, "viewers": viewers,
                          "transports": counts.transports_by_region.get(
                              (bkey, rname), {"whep": 0, "hls": 0}),
                          "replicas": want,
                          "readyReplicas": (cur.status.ready_replicas or 0) if cur else 0,
                          **self._edge_url(b, rname)})
        for obj in recorder_objects(b, self.config, image):  # spec.recording.enabled
            apply(obj, "recorder")
        for dname in set(existing) - wanted:
            if self.applier.delete("Deployment", ns, dname):
                kube.event(b, "Deleted", f"deleted Deployment {dname}: no longer in the spec")
            self.applier.delete("Service", ns, dname)  # a region's or rendition's, same name
        self._status(b, existing, counts, edges)

    def _edge_url(self, b: dict[str, Any], region: str) -> dict[str, str]:
        """Where viewers of ``region`` play: its own host (PARLEY_EDGE_URL_TEMPLATE) or else the
        region's edge Service inside the cluster, under which they use the usual /live/{b}/...
        paths (docs/broadcast.md, "Viewers"); ``hls`` is the region's multivariant playlist."""
        service = resources.edge_name(b["metadata"]["name"], region)
        template = self.config.edge_url_template
        url = (template.replace("{region}", region).rstrip("/") if template else
               f"http://{service}.{b['metadata']['namespace']}.svc:{resources.HTTP_PORT}")
        return {"url": url, "service": service,
                "hls": f"{url}/live/{broadcast_url_key(b)}/index.m3u8"}

    @staticmethod
    def _sources(b: dict[str, Any], report: dict[str, Any] | None
                 ) -> tuple[list[dict[str, Any]], dict[str, Any], tuple[bool, str, str]]:
        """``status.sources``, ``status.onAir`` and the ``OnAir`` condition from the ingest's
        own report (ingest_report.py): each spec source connected and sending, a meeting
        source's call server and who of the meeting is on air; nothing reported, nothing
        claimed."""
        got = {c.get("name"): c for c in (report or {}).get("connected") or []
               if isinstance(c, dict)}
        meetings = (report or {}).get("meetings") or {}
        out = []
        for s in b["spec"]["sources"]:
            c = got.get(s["name"])
            entry: dict[str, Any] = {"name": s["name"], "connected": c is not None,
                                     "sending": bool(c and c.get("sending"))}
            m = meetings.get(s["name"])
            if s.get("meeting") and isinstance(m, dict):
                entry["meeting"] = {"callServer": m.get("callServer") or "",
                                    "joined": bool(m.get("joined")),
                                    "participant": m.get("onAir") or "",
                                    "error": m.get("error") or ""}
            out.append(entry)
        raw = (report or {}).get("onAir") or {}
        on_air = {"video": raw.get("video") or "", "audio": raw.get("audio") or ""}
        connected = sum(1 for e in out if e["connected"])
        video = on_air["video"]
        if report is None:
            return out, on_air, (False, "NoReport", "the ingest has not reported (starting, "
                                 "or it runs outside a pod)")
        if not video:
            return out, on_air, (False, "NoSource", f"{connected} of {len(out)} sources "
                                 "connected, none on air")
        if not any(e["name"] == video and e["sending"] for e in out):
            return out, on_air, (False, "SourceSilent", f"{video} is on air but sent nothing "
                                 "since the ingest's previous report")
        return out, on_air, (True, "OnAir", f"{video} on air (audio: {on_air['audio'] or '-'}); "
                             f"{connected} of {len(out)} sources connected")

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
        sources, on_air, live = self._sources(b, counts.sources.get(f"{ns}/{name}"))
        reported = recording_status(counts.recordings.get(f"{ns}/{name}"), None)
        recording = recording_status(reported, old.get("recording"))
        playback_base = self.config.broadcast_url or self.config.public_url
        status = {
            "phase": ("Live" if viewers else "Ready") if ready else "Pending",
            "observedGeneration": gen,
            "ingestUrl": _svc_url(b, resources.ingest_name(name), "/whip"),
            "viewers": viewers,
            "transcoders": tx_ready,
            # producing: frames of the rendition reached an edge since its previous report
            "renditions": [{"name": r["name"], "transcoderReady": available(
                resources.transcoder_name(name, r["name"])), "producing": r["name"] in
                counts.producing.get(f"{ns}/{name}", set())} for r in spec["renditions"]],
            # WHEP per rendition; LL-HLS per region in edges[].hls (the region's index.m3u8)
            "playback": [{"rendition": r["name"], "url": f"{playback_base}/live/"
                          f"{broadcast_url_key(b)}/{r['name']}/whep"}
                         for r in spec["renditions"]],
            "edges": edges,
            "sources": sources,
            "onAir": on_air,
            # the recorder's own report (recorder_report.py); a finished one stays shown
            "recording": recording_patch(recording, old.get("recording")),
            "conditions": [
                condition(conds, "OnAir", *live, gen),
                condition(conds, "Ready", ready, "Available" if ready else "Starting",
                          "ingest, ladder, relay and edges are available" if ready
                          else f"waiting for {', '.join(sorted(missing))}", gen),
                recording_condition(b, self.config, available(
                    resources.broadcast_recorder_name(name)), reported, conds, gen),
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

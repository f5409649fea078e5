"""Meeting reconciliation: reservations in the region's call-server pool, placement on a
Ready pod, pool scaling with drain-before-remove, recorder/transcoder workloads, status.

Level-triggered: every pass recomputes the whole pool plan from the Meetings (spec and the
placements recorded in their status), the pool's pods and the media nodes' reports. Nothing
is remembered between passes except a cache of our own latest status writes, which only
closes the gap until the watch delivers them. A pass that finds everything as it should be
writes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from parley.directory import MeetingPolicy
from parley.operator import kube, metrics, reports, resources
from parley.operator.config import (
    BROADCAST_LABEL,
    COMPONENT,
    DELETION_COST,
    DRAINING_SINCE,
    MANAGED_BY,
    MEETING_LABEL,
    PUBLIC_ENDPOINT,
    REGION,
    OperatorConfig,
)
from parley.operator.directory import MeetingDirectory, room
from parley.operator.placement import Demand, PodInfo, PoolSettings, plan_pool
from parley.operator.status import condition, differs, find, rv

log = logging.getLogger("parley.operator.meetings")

PoolKey = tuple[str, str]  # (namespace, region)
MeetingKey = tuple[str, str]  # (namespace, name)
Snapshot = Callable[[], tuple[dict[MeetingKey, dict[str, Any]], dict[PoolKey, dict[str, Any]]]]
POOL_SELECTOR = f"{COMPONENT}=call-server,{REGION},!{BROADCAST_LABEL}"


@dataclass
class Phase:
    """Where a meeting is in time, and how much it should reserve now."""

    name: str  # Scheduled | Active | Ended
    demand: int
    detail: str = ""


class MeetingController:
    def __init__(self, config: OperatorConfig):
        self.config = config
        self.applier = kube.Applier()
        self._own: dict[MeetingKey, dict[str, Any]] = {}  # our latest status writes
        self._locks: dict[PoolKey, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._running: dict[PoolKey, bool] = {}
        self._dirty: dict[PoolKey, bool] = {}
        self.directory = MeetingDirectory(config.redis_url) if config.redis_url else None

    # --- views ---------------------------------------------------------------------------

    def effective(self, meetings: dict[MeetingKey, dict[str, Any]]
                  ) -> dict[MeetingKey, dict[str, Any]]:
        """The watch's view, with our own newer status writes laid over it."""
        out = {}
        with self._guard:
            for key in list(self._own):
                if key not in meetings:
                    del self._own[key]
            for key, m in meetings.items():
                mine = self._own.get(key)
                if mine and rv(mine) > rv(m) and mine["metadata"]["uid"] == m["metadata"]["uid"]:
                    m = {**m, "status": mine["status"]}
                out[key] = m
        return out

    def pool_for(self, m: dict[str, Any], pools: dict[PoolKey, dict[str, Any]]
                 ) -> PoolKey | None:
        """A pool in the meeting's own namespace wins; else the shared pool namespace."""
        region = m["spec"].get("region", "default")
        ns = m["metadata"]["namespace"]
        if (ns, region) in pools:
            return ns, region
        if self.config.pool_namespace and (self.config.pool_namespace, region) in pools:
            return self.config.pool_namespace, region
        return None

    def lock(self, key: PoolKey) -> threading.Lock:
        with self._guard:
            return self._locks[key]

    # --- time ----------------------------------------------------------------------------

    def phase_of(self, m: dict[str, Any], participants: int) -> Phase:
        spec = m["spec"]
        sched = spec.get("schedule") or {}
        start, end = kube.parse_time(sched.get("start")), kube.parse_time(sched.get("end"))
        now = kube.now()
        demand = int(spec.get("maxParticipants", 100))
        if spec.get("topology") == "p2p":
            demand = 0
        if end and now >= end:
            # Keep the reservation while participants are still leaving (Draining).
            return Phase("Ended", demand if participants > 0 else 0, f"ended at {sched['end']}")
        if start and (start - now).total_seconds() > self.config.prescale_seconds:
            return Phase("Scheduled", 0,
                         f"starts at {sched['start']}; capacity is reserved "
                         f"{int(self.config.prescale_seconds)}s before")
        if start and now < start:
            return Phase("Prescaled", demand, f"starts at {sched['start']}")
        return Phase("Active", demand)

    # --- reconcile -----------------------------------------------------------------------

    def reconcile_meeting(self, key: MeetingKey, meetings: dict[MeetingKey, dict[str, Any]],
                          pools: dict[PoolKey, dict[str, Any]],
                          fresh: Snapshot | None = None) -> None:
        """Entry point for a change to one Meeting."""
        view = self.effective(meetings)
        m = view.get(key)
        if m is None or m["metadata"].get("deletionTimestamp"):
            return
        pool = self.pool_for(m, pools)
        if pool is None or m["spec"].get("topology") == "p2p":
            with metrics.reconciling("Meeting"):
                self._reconcile_unpooled(m)
            return
        self.reconcile_pool(pool, meetings, pools, fresh)

    def _reconcile_unpooled(self, m: dict[str, Any]) -> None:
        ns, name = m["metadata"]["namespace"], m["metadata"]["name"]
        counts = reports.collect(ns, self.config.report_ttl_seconds).participants
        participants = counts.get(f"{ns}/{name}", 0)
        phase = self.phase_of(m, participants)
        gen = int(m["metadata"].get("generation") or 0)
        old = m.get("status") or {}
        conds = old.get("conditions")
        region = m["spec"].get("region", "default")
        if m["spec"].get("topology") == "p2p":
            ready = phase.name in ("Active", "Prescaled")
            status_phase = {"Ended": "Ended", "Scheduled": "Scheduled"}.get(
                phase.name, "Live" if participants else "Ready")
            new_conds = [
                condition(conds, "Ready", ready, "PeerToPeer" if ready else phase.name,
                          "peers connect directly; no call server is used" if ready
                          else phase.detail, gen),
                condition(conds, "CapacityReserved", True, "NotNeeded",
                          "topology p2p reserves no call-server capacity", gen),
                condition(conds, "Recording", False, "Disabled", "recording is disabled", gen),
                condition(conds, "Transcoding", False, "Disabled", "transcoding is disabled",
                          gen),
            ]
        else:
            where = (f"'{self.config.pool_namespace}' or '{m['metadata']['namespace']}'"
                     if self.config.pool_namespace else f"'{m['metadata']['namespace']}'")
            msg = (f"no call-server pool for region '{region}': expected a Deployment labelled "
                   f"{COMPONENT}=call-server,{REGION}={region} in namespace {where}; add the "
                   f"region to the chart's callServer.pools or change spec.region")
            status_phase = "Ended" if phase.name == "Ended" else (
                "Scheduled" if phase.name == "Scheduled" else "Pending")
            new_conds = [
                condition(conds, "Ready", False, "PoolNotFound", msg, gen),
                condition(conds, "CapacityReserved", False, "PoolNotFound", msg, gen),
                condition(conds, "Recording", False,
                          "Disabled" if not m["spec"].get("recording", {}).get("enabled")
                          else "WaitingForCallServer", "no call server yet", gen),
                condition(conds, "Transcoding", False,
                          "Disabled" if not m["spec"].get("transcoding", {}).get("enabled")
                          else "WaitingForCallServer", "no call server yet", gen),
            ]
        status = {"phase": status_phase, "observedGeneration": gen,
                  "participants": participants, "reservedParticipants": 0,
                  "joinUrl": self.join_url(m), "callServer": None, "conditions": new_conds}
        self._publish(m, None, phase.name == "Ended" and participants == 0)
        self._write(m, status)

    def join_url(self, m: dict[str, Any]) -> str:
        return f"{self.config.public_url}/m/{m['metadata']['namespace']}.{m['metadata']['name']}"

    def reconcile_pool(self, pool_key: PoolKey, meetings: dict[MeetingKey, dict[str, Any]],
                       pools: dict[PoolKey, dict[str, Any]],
                       fresh: Snapshot | None = None) -> None:
        """One level-triggered pass over a pool and every meeting it hosts.

        Passes coalesce: a request that arrives while a pass runs only marks the pool dirty,
        and the running pass goes round once more with a fresh snapshot (``fresh``). A burst
        of N new meetings thus costs a few passes, not N.
        """
        with self._guard:
            if self._running.get(pool_key):
                self._dirty[pool_key] = True
                if fresh is not None:
                    return
            self._running[pool_key] = True
        try:
            while True:
                with self._guard:
                    self._dirty[pool_key] = False
                with self.lock(pool_key), metrics.reconciling("CallServerPool"):
                    self._reconcile_pool(pool_key, meetings, pools)
                with self._guard:
                    if not self._dirty.get(pool_key) or fresh is None:
                        self._running[pool_key] = False
                        return
                meetings, pools = fresh()
        except BaseException:
            with self._guard:
                self._running[pool_key] = False
            raise

    def _reconcile_pool(self, pool_key: PoolKey, meetings: dict[MeetingKey, dict[str, Any]],
                        pools: dict[PoolKey, dict[str, Any]]) -> None:
        pns, region = pool_key
        pool_name = pools[pool_key]["name"]
        try:
            dep = kube.apps().read_namespaced_deployment(pool_name, pns)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        settings = PoolSettings.from_annotations(dep.metadata.annotations or {})
        view = self.effective(meetings)
        members = {k: m for k, m in view.items()
                   if not m["metadata"].get("deletionTimestamp")
                   and m["spec"].get("topology") != "p2p"
                   and m["spec"].get("region", "default") == region
                   and self.pool_for(m, pools) == pool_key}
        selector = ",".join(f"{k}={v}" for k, v in (dep.spec.selector.match_labels or {}).items())
        pods = [p for p in kube.core().list_namespaced_pod(pns, label_selector=selector).items
                if not p.metadata.deletion_timestamp
                and p.status.phase not in ("Succeeded", "Failed")]
        counts = reports.collect(pns, self.config.report_ttl_seconds).participants
        infos = [PodInfo(p.metadata.name, _ready(p), _draining(p)) for p in pods]
        phases = {k: self.phase_of(m, counts.get(f"{k[0]}/{k[1]}", 0))
                  for k, m in members.items()}
        live = (self.directory.observed([room(*k) for k in members],
                                        {p.metadata.name for p in pods})
                if self.directory is not None else {})
        demands = [Demand(f"{k[0]}/{k[1]}", phases[k].demand, live.get(room(*k)) or (
                          (m.get("status") or {}).get("callServer") or {}).get("pod"))
                   for k, m in members.items()]
        current = dep.spec.replicas if dep.spec.replicas is not None else 1
        plan = plan_pool(infos, demands, settings, current, time.time())
        self._annotate_pods(pods, plan, settings)
        if plan.replicas != current:
            kube.apps().patch_namespaced_deployment_scale(
                pool_name, pns, {"spec": {"replicas": plan.replicas}})
            reserved = sum(d.amount for d in demands)
            why = (f"removing drained pods {', '.join(plan.removable)}" if plan.removable
                   else f"{reserved} participants reserved, "
                        f"{settings.participants_per_pod} per pod, "
                        f"{settings.headroom_pods} headroom")
            kube.event(_deployment_ref(dep), "PoolScaled",
                       f"call-server pool {region}: {current} -> {plan.replicas} replicas ({why})")
        ready = sum(1 for i in infos if i.ready)
        metrics.POOL_REPLICAS.labels(pns, region, "desired").set(plan.replicas)
        metrics.POOL_REPLICAS.labels(pns, region, "ready").set(ready)
        metrics.POOL_RESERVED.labels(pns, region).set(
            sum(d.amount for d in demands))
        pod_by_name = {p.metadata.name: p for p in pods}
        workloads = self._workload_status(members)
        for key, m in members.items():
            skey = f"{key[0]}/{key[1]}"
            pod = plan.placements.get(skey)
            self._finish(m, phases[key], counts.get(skey, 0), pod and pod_by_name.get(pod),
                         pool_key, pool_name, plan.replicas, skey in plan.exhausted, settings,
                         workloads)
        if self.directory is not None:
            self.directory.forget_missing({room(*key) for key, m in meetings.items()
                                           if not m["metadata"].get("deletionTimestamp")})

    def _annotate_pods(self, pods: list[Any], plan: Any, settings: PoolSettings) -> None:
        """Deletion cost steers the ReplicaSet to remove exactly the drained pods; the
        draining mark keeps new meetings off pods that are on their way out."""
        for p in pods:
            ann = p.metadata.annotations or {}
            name = p.metadata.name
            want: dict[str, str | None] = {
                DELETION_COST: str(-1000 if name in plan.removable
                                   else min(plan.loads.get(name, 0), 1_000_000))}
            if name in plan.drain and DRAINING_SINCE not in ann:
                want[DRAINING_SINCE] = str(int(time.time()))
                tell_node(p, "POST", {"deadline": settings.drain_deadline_seconds},
                          self.config.control_key)
                kube.event(_pod_ref(p), "Draining",
                           f"pod {name} takes no new meetings; removed once empty or after "
                           f"{int(settings.drain_deadline_seconds)}s")
            if name in plan.undrain:
                want[DRAINING_SINCE] = None
                tell_node(p, "DELETE", None, self.config.control_key)
            changed = {k: v for k, v in want.items() if ann.get(k) != v}
            if changed:
                try:
                    kube.core().patch_namespaced_pod(
                        name, p.metadata.namespace, {"metadata": {"annotations": changed}})
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def _workload_status(self, members: dict[MeetingKey, dict[str, Any]]
                         ) -> dict[tuple[str, str], int]:
        """availableReplicas of meeting transcoder Deployments, by (namespace, name)."""
        out: dict[tuple[str, str], int] = {}
        namespaces = {k[0] for k, m in members.items()
                      if m["spec"].get("transcoding", {}).get("enabled")}
        for ns in namespaces:
            for d in kube.apps().list_namespaced_deployment(
                    ns, label_selector=f"{MANAGED_BY}=parley-operator,{MEETING_LABEL}").items:
                out[(ns, d.metadata.name)] = (d.status.available_replicas or 0)
        return out

    def _finish(self, m: dict[str, Any], phase: Phase, participants: int, pod: Any,
                pool_key: PoolKey, pool_name: str, replicas: int, exhausted: bool,
                settings: PoolSettings, workloads: dict[tuple[str, str], int]) -> None:
        """Workloads, status and events of one meeting, given the pool plan."""
        meta = m["metadata"]
        gen = int(meta.get("generation") or 0)
        old = m.get("status") or {}
        conds = old.get("conditions")
        region = pool_key[1]
        ended = phase.name == "Ended"
        call_server = None
        if pod is not None:
            endpoint = (pod.metadata.annotations or {}).get(PUBLIC_ENDPOINT) or (
                f"{pod.status.pod_ip}:{settings.media_port}")
            call_server = {"pod": pod.metadata.name, "namespace": pool_key[0],
                           "endpoint": endpoint}
        if phase.demand == 0:
            reserved_c = condition(conds, "CapacityReserved", False,
                                   "Released" if ended else "NotYetReserved",
                                   phase.detail, gen)
        elif exhausted:
            reserved_c = condition(
                conds, "CapacityReserved", False, "PoolExhausted",
                f"pool {pool_name} in region {region} is at its maximum of {settings.max_replicas}"
                f" pods of {settings.participants_per_pod} participants: raise the pool's "
                f"parley.dev/max-replicas annotation or lower spec.maxParticipants", gen)
        else:
            extra = ("" if phase.demand <= settings.participants_per_pod else
                     f"; participants beyond {settings.participants_per_pod} cascade to "
                     f"{-(-phase.demand // settings.participants_per_pod) - 1} reserved pods")
            reserved_c = condition(conds, "CapacityReserved", True, "Reserved",
                                   f"{phase.demand} participants reserved in pool {pool_name} "
                                   f"({replicas} replicas){extra}", gen)
        if call_server:
            ready_c = condition(conds, "Ready", True, "Placed",
                                f"on call server {call_server['pod']} at "
                                f"{call_server['endpoint']}", gen)
        elif ended:
            ready_c = condition(conds, "Ready", False, "Ended", phase.detail, gen)
        elif phase.name == "Scheduled":
            ready_c = condition(conds, "Ready", False, "NotStarted", phase.detail, gen)
        else:
            ready_c = condition(conds, "Ready", False, "WaitingForCallServer",
                                f"pool {pool_name} is scaling to {replicas} replicas; waiting "
                                f"for a Ready call-server pod with room", gen)
        recording_c = self._recording(m, ended, conds, gen)
        transcoding_c = self._workload(m, call_server, ended, conds, gen, workloads)
        if ended:
            status_phase = "Draining" if participants > 0 else "Ended"
        elif phase.name in ("Scheduled", "Prescaled"):
            status_phase = "Scheduled"
        elif call_server:
            status_phase = "Live" if participants > 0 else "Ready"
        else:
            status_phase = "Pending"
        status = {"phase": status_phase, "observedGeneration": gen, "participants": participants,
                  "reservedParticipants": phase.demand,
                  "joinUrl": self.join_url(m), "callServer": call_server,
                  "conditions": [ready_c, reserved_c, recording_c, transcoding_c]}
        self._publish(m, call_server["pod"] if call_server else None,
                      ended and participants == 0)
        before = old.get("callServer") or {}
        if call_server and before.get("pod") != call_server["pod"]:
            kube.event(m, "Placed" if not before else "Replaced",
                       f"placed on call server {call_server['pod']} ({call_server['endpoint']})"
                       + (f", moved from {before.get('pod')}" if before else ""))
        if before and not call_server and phase.demand == 0:
            kube.event(m, "Released", f"released call server {before.get('pod')}: "
                                      f"{phase.detail or 'no longer needs capacity'}")
        old_reason = find(conds, "CapacityReserved").get("reason")
        if reserved_c["reason"] != old_reason and reserved_c["reason"] in (
                "Reserved", "PoolExhausted", "NotYetReserved"):
            kube.event(m, reserved_c["reason"], reserved_c["message"],
                       "Warning" if reserved_c["reason"] == "PoolExhausted" else "Normal")
        self._write(m, status)

    def _recording(self, m: dict[str, Any], ended: bool, conds: list[dict[str, Any]] | None,
                   gen: int) -> dict[str, Any]:
        """The Recording condition, observed: the recording tap runs in the call server and
        signaling starts it when the Meeting's first participant joins (the policy says so),
        so the operator reports what signaling records rather than running anything itself."""
        if not m["spec"].get("recording", {}).get("enabled"):
            return condition(conds, "Recording", False, "Disabled", "recording is disabled", gen)
        if ended:
            return condition(conds, "Recording", False, "Ended", "the meeting has ended", gen)
        if self.directory is None:
            return condition(conds, "Recording", False, "NoDirectory",
                             "the operator has no PARLEY_REDIS_URL, so signaling cannot learn "
                             "that this meeting is to be recorded", gen)
        active = self.directory.recording(room(m["metadata"]["namespace"],
                                               m["metadata"]["name"]))
        if active:
            if find(conds, "Recording").get("status") != "True":
                kube.event(m, "RecordingStarted", f"signaling is recording it as {active}")
            return condition(conds, "Recording", True, "Recording",
                             f"recording {active} is being written by the call server", gen)
        return condition(conds, "Recording", False, "WaitingForParticipants",
                         "recording starts when the first participant joins", gen)

    def _workload(self, m: dict[str, Any], call_server: dict[str, str] | None, ended: bool,
                  conds: list[dict[str, Any]] | None, gen: int,
                  workloads: dict[tuple[str, str], int]) -> dict[str, Any]:
        """Create or remove a meeting's transcoder and describe it as a condition."""
        meta, spec = m["metadata"], m["spec"]
        enabled = bool(spec.get("transcoding", {}).get("enabled"))
        name = resources.meeting_transcoder_name(meta["name"])
        ns = meta["namespace"]
        if enabled and call_server and not ended:
            obj = resources.meeting_transcoder(m, self.config.media_image,
                                               call_server["endpoint"], self.config.redis_url)
            if self.applier.apply(obj) and (ns, name) not in workloads:
                kube.event(m, "TranscoderCreated", f"created Deployment {name}")
            available = workloads.get((ns, name), 0) > 0
            return condition(conds, "Transcoding", available,
                             "Running" if available else "Starting",
                             f"Deployment {name} " + ("is available" if available
                                                      else "is starting"), gen)
        if (ns, name) in workloads or (enabled and ended):
            if self.applier.delete("Deployment", ns, name):
                kube.event(m, "TranscoderRemoved", f"deleted Deployment {name}")
        if not enabled:
            return condition(conds, "Transcoding", False, "Disabled", "transcoding is disabled",
                             gen)
        if ended:
            return condition(conds, "Transcoding", False, "Ended", "the meeting has ended", gen)
        return condition(conds, "Transcoding", False, "WaitingForCallServer",
                         "transcoder starts once the meeting is placed", gen)

    def _publish(self, m: dict[str, Any], pod: str | None, released: bool) -> None:
        """The Meeting's placement and policy, for signaling (``kube-operator/directory.py``)."""
        if self.directory is None:
            return
        key = room(m["metadata"]["namespace"], m["metadata"]["name"])
        if released:
            self.directory.release(key)
        else:
            self.directory.publish(key, pod, MeetingPolicy.from_spec(m["spec"]))

    def _write(self, m: dict[str, Any], status: dict[str, Any]) -> None:
        old = m.get("status") or {}
        if not differs(old, status):
            return
        ns, name = m["metadata"]["namespace"], m["metadata"]["name"]
        if old.get("phase") != status["phase"]:
            kube.event(m, f"Phase{status['phase']}", f"phase {old.get('phase') or '-'} -> "
                                                      f"{status['phase']}")
        try:
            obj = kube.patch_status("meetings", ns, name, status)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        stored = {**m, "metadata": {**m["metadata"],
                                    "resourceVersion": obj["metadata"]["resourceVersion"]},
                  "status": {k: v for k, v in status.items() if v is not None}}
        with self._guard:
            self._own[(ns, name)] = stored


def tell_node(pod: Any, method: str, body: dict[str, Any] | None,
              control_key: str | None) -> None:
    """Start (POST) or cancel (DELETE) the call server's own drain, so signaling's placement
    (the node directory in Redis) stops sending it meetings as the operator's does. Best
    effort and off the reconcile thread: the annotation is the record, and an unreachable pod
    (kwok's have no process) is only logged."""
    ip = pod.status.pod_ip if pod.status else None
    if not ip:
        return
    url = f"http://{ip}:{resources.HTTP_PORT}/v1/drain"

    def send() -> None:
        headers = {"Content-Type": "application/json",
                   **({"Authorization": f"Bearer {control_key}"} if control_key else {})}
        req = urllib.request.Request(url, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body else None)
        try:
            with urllib.request.urlopen(req, timeout=3):
                pass
        except OSError as exc:
            log.info("drain %s of pod %s not delivered: %s", method, pod.metadata.name, exc)

    threading.Thread(target=send, name=f"drain-{pod.metadata.name}", daemon=True).start()


def _ready(pod: Any) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _draining(pod: Any) -> float | None:
    value = (pod.metadata.annotations or {}).get(DRAINING_SINCE)
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _deployment_ref(dep: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": dep.metadata.name, "namespace": dep.metadata.namespace,
                         "uid": dep.metadata.uid}}


def _pod_ref(pod: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace,
                         "uid": pod.metadata.uid}}

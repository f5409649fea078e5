"""kopf wiring: which watch events, and the periodic resync, lead to which reconciler.

Handlers are async only to snapshot kopf's in-memory indexes on the event loop (where they
are mutated); the reconcilers themselves use the blocking Kubernetes client in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from parley.operator import metrics
from parley.operator.broadcasts import BroadcastController
from parley.operator.config import BROADCAST_LABEL, COMPONENT, GROUP, REGION, VERSION
from parley.operator.meetings import MeetingController
from parley.operator.status import snapshot

RESYNC = float(os.environ.get("PARLEY_RESYNC_SECONDS") or 10)
log = logging.getLogger(__name__)
POOL_LABELS = {COMPONENT: "call-server", REGION: kopf.PRESENT, BROADCAST_LABEL: kopf.ABSENT}

meetings: MeetingController | None = None
broadcasts: BroadcastController | None = None


def _plain(index: Any) -> dict[Any, Any]:
    """A plain copy of a kopf index. Normally called on the event loop; when called from a
    worker thread the index may change underneath, so retry a few times."""
    for _ in range(20):
        try:
            out = {}
            for key, store in list(index.items()):
                values = sorted(store,
                                key=lambda v: v.get("name", "") if isinstance(v, dict) else "")
                if values:
                    out[key] = values[0]
            return out
        except RuntimeError:  # "changed size during iteration"
            continue
    raise kopf.TemporaryError("index kept changing", delay=1)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="operator.parley.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="operator.parley.dev", key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events record the decisions
    settings.execution.max_workers = 8
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60


@kopf.index(GROUP, VERSION, "meetings")
def meeting_idx(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): snapshot(body)}


@kopf.index("apps", "v1", "deployments", labels=POOL_LABELS)
def pool_idx(body: kopf.Body, namespace: str, name: str, labels: kopf.Labels, **_: Any
             ) -> dict[Any, Any]:
    return {(namespace, labels[REGION]): {"name": name, "uid": body["metadata"]["uid"]}}


async def _meeting(namespace: str, name: str, meeting_idx: kopf.Index, pool_idx: kopf.Index
                   ) -> None:
    assert meetings is not None
    ms, ps = _plain(meeting_idx), _plain(pool_idx)
    metrics.MANAGED.labels("Meeting").set(len(ms))

    def fresh() -> tuple[dict[Any, Any], dict[Any, Any]]:
        return _plain(meeting_idx), _plain(pool_idx)

    await asyncio.to_thread(meetings.reconcile_meeting, (namespace, name), ms, ps, fresh)


@kopf.on.resume(GROUP, VERSION, "meetings")
@kopf.on.create(GROUP, VERSION, "meetings")
@kopf.on.update(GROUP, VERSION, "meetings", field="spec")
async def meeting_changed(namespace: str, name: str, meeting_idx: kopf.Index,
                          pool_idx: kopf.Index, **_: Any) -> None:
    await _meeting(namespace, name, meeting_idx, pool_idx)


@kopf.on.delete(GROUP, VERSION, "meetings", optional=True)
async def meeting_deleted(namespace: str, spec: kopf.Spec, meeting_idx: kopf.Index,
                          pool_idx: kopf.Index, **_: Any) -> None:
    """Best effort, no finalizer: release the reservation now instead of at the next resync."""
    assert meetings is not None
    ps = _plain(pool_idx)
    region = spec.get("region", "default")
    for key in ((namespace, region), (meetings.config.pool_namespace or "", region)):
        if key in ps:
            await asyncio.to_thread(meetings.reconcile_pool, key, _plain(meeting_idx), ps)
            return


@kopf.on.resume(GROUP, VERSION, "broadcasts")
@kopf.on.create(GROUP, VERSION, "broadcasts")
@kopf.on.update(GROUP, VERSION, "broadcasts", field="spec")
async def broadcast_changed(body: kopf.Body, **_: Any) -> None:
    assert broadcasts is not None
    await asyncio.to_thread(broadcasts.reconcile, snapshot(body))


@kopf.index(GROUP, VERSION, "broadcasts")
def broadcast_idx(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): snapshot(body)}


# ---- resync ----------------------------------------------------------------------------
# What watch events alone miss (a pod that became ready, a report, drift) is caught by one
# operator-level loop over kopf's indexes, not by kopf timers: kopf puts its finalizer on every
# object a timer or daemon serves (requires_finalizer, no opt-out), so deleting a Meeting,
# Broadcast or pool Deployment would hang while the operator is down. Parley's cleanup is
# garbage collection (owner references); nothing needs a finalizer.

_resync_task: asyncio.Task[None] | None = None


def _unpooled(meeting: dict[str, Any]) -> bool:
    """Meetings no pool pass looks after: peer-to-peer ones and ones still without a pool."""
    return (meeting["spec"].get("topology") == "p2p"
            or not meeting["status"].get("callServer"))


async def _resync_once(meeting_idx: kopf.Index, pool_idx: kopf.Index,
                       broadcast_idx: kopf.Index) -> None:
    assert meetings is not None and broadcasts is not None
    ms, ps, bs = _plain(meeting_idx), _plain(pool_idx), _plain(broadcast_idx)
    metrics.MANAGED.labels("Meeting").set(len(ms))
    metrics.MANAGED.labels("Broadcast").set(len(bs))
    for (namespace, name), m in ms.items():
        if _unpooled(m):
            await _meeting(namespace, name, meeting_idx, pool_idx)
    for key in ps:
        await asyncio.to_thread(meetings.reconcile_pool, key, _plain(meeting_idx),
                                _plain(pool_idx))
    for b in bs.values():
        await asyncio.to_thread(broadcasts.reconcile, b)


async def _resync(meeting_idx: kopf.Index, pool_idx: kopf.Index,
                  broadcast_idx: kopf.Index) -> None:
    while True:
        await asyncio.sleep(RESYNC)
        try:
            await _resync_once(meeting_idx, pool_idx, broadcast_idx)
        except Exception:  # one bad pass must not end resyncing; the next one retries
            log.exception("resync failed")


@kopf.on.startup()
async def start_resync(meeting_idx: kopf.Index, pool_idx: kopf.Index,
                       broadcast_idx: kopf.Index, **_: Any) -> None:
    global _resync_task
    _resync_task = asyncio.create_task(_resync(meeting_idx, pool_idx, broadcast_idx))


@kopf.on.cleanup()
async def stop_resync(**_: Any) -> None:
    if _resync_task is not None:
        _resync_task.cancel()

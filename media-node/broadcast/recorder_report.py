"""The broadcast recorder's report to the operator: what it really archives, as a Lease heartbeat
(the channel of :mod:`parley.reports`, as the ingest's sources and the edges' viewers). The
operator turns it into the Broadcast's ``status.recording`` and the ``Recording`` condition
(kube-operator/broadcast_recorder.py): True only while segments keep arriving in the store, which
a running recorder Deployment alone does not prove (an upstream with nothing to record, a store
that refuses writes, a recorder stuck on a hung PUT).

On only in a pod (downward-API ``POD_NAMESPACE``/``POD_NAME``, which the operator sets on the
recorder Deployment). It counts the programme rung (the first of ``PARLEY_RECORD_RENDITIONS``,
the one ``programme.mp4`` is made of): segments, seconds, and the wall time of the last segment
this process copied, so the operator judges "recently" with its own clock. On stop the last
report is the recording's final state (``ready``), not an empty one: the archive outlives the
recorder.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from parley import reports

from ..report import LeaseHeartbeat
from .recorder import BroadcastRecorder


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RecorderReport(LeaseHeartbeat):
    role = "recorder"

    def __init__(self, recorder: BroadcastRecorder, *, broadcast: str, namespace: str, pod: str,
                 pod_uid: str | None, interval: float = 5.0, ttl_seconds: int = 30) -> None:
        super().__init__(namespace=namespace, pod=pod, pod_uid=pod_uid, interval=interval,
                         ttl_seconds=ttl_seconds)
        self.recorder = recorder
        self.key = reports.resource_key(broadcast) or broadcast
        self.last: dict[str, Any] = {}

    @classmethod
    def from_env(cls, recorder: BroadcastRecorder, broadcast: str) -> RecorderReport | None:
        namespace, pod = os.environ.get("POD_NAMESPACE"), os.environ.get("POD_NAME")
        if not namespace or not pod:
            return None
        return cls(recorder, broadcast=broadcast, namespace=namespace, pod=pod,
                   pod_uid=os.environ.get("POD_UID"),
                   interval=float(os.environ.get("PARLEY_REPORT_INTERVAL", "5")))

    def snapshot(self) -> dict[str, Any]:
        """``state``: ``waiting`` (nothing archived yet by this recorder), ``recording``, or the
        last finished recording's ``ready``/``failed``; with ``id``, ``segments`` and
        ``seconds`` of the programme rung, ``location`` (the recording's files in the store),
        ``lastSegmentAt`` and ``error`` (a failure newer than the last segment copied)."""
        rec = self.recorder
        programme = next(iter(rec.urls))
        out: dict[str, Any] = {"state": "waiting", "rendition": programme}
        if rec.manifest is not None:
            a = rec.archives.get(programme)
            out.update(state="recording", id=rec.manifest["id"],
                       segments=len(a.segments) if a else 0,
                       seconds=round(a.duration(), 3) if a else 0.0)
        elif rec.finished:
            done = rec.finished[-1]
            out.update(state=done["state"], id=done["id"],
                       segments=int((done.get("segments") or {}).get(programme, 0)),
                       seconds=float(done.get("duration") or 0.0))
            if done.get("error"):
                out["error"] = str(done["error"])
        if "id" in out:
            out["location"] = f"{rec.store.url.rstrip('/')}/recordings/{out['id']}/files/"
        if rec.archived_at is not None:
            out["lastSegmentAt"] = rfc3339(rec.archived_at)
        if rec.error and (rec.archived_at is None or (rec.error_at or 0) > rec.archived_at):
            out.setdefault("error", rec.error)
        return out

    async def publish(self, empty: bool = False) -> None:
        """``empty`` (the stop) is ignored: the final state is what the operator should see."""
        snap = self.snapshot()
        await self.write(region="", recordings={self.key: snap})
        self.last = snap

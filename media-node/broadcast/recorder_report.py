"""The broadcast recorder's report to the operator: what it really archives, as a Lease heartbeat
(the channel of :mod:`parley.reports`, as the ingest's sources and the edges' viewers). The
operator turns it into the Broadcast's ``status.recording`` and the ``Recording`` condition
(kube-operator/broadcast_recorder.py): True only while segments keep arriving in the store, which
a running recorder Deployment alone does not prove (an upstream with nothing to record, a store
that refuses writes, a recorder stuck on a hung PUT).

On only in a pod (downward-API ``POD_NAMESPACE``/``POD_NAME``, which the operator sets on the
recorder Deployment). What it says is :meth:`BroadcastRecorder.report` (the programme rung's
segments and seconds, every rung's when several are recorded, the wall time of the last segment
this process copied, so the operator judges "recently" with its own clock); `parley up` shows the
same at ``GET /live/{b}/recording``. On stop the last report is the recording's final state
(``ready``), not an empty one: the archive outlives the recorder.
"""

from __future__ import annotations

import os
from typing import Any

from parley import reports

from ..report import LeaseHeartbeat
from .recorder import BroadcastRecorder


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
        return self.recorder.report()

    async def publish(self, empty: bool = False) -> None:
        """``empty`` (the stop) is ignored: the final state is what the operator should see."""
        snap = self.snapshot()
        await self.write(region="", recordings={self.key: snap})
        self.last = snap

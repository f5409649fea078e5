"""The ingest's report to the operator: which sources are connected, which of them are sending,
what is on air and how each meeting source stands, as a Lease heartbeat (the channel of
:mod:`parley.reports`, as the edges' viewer counts). The operator turns it into the Broadcast's
``status.sources``, ``status.onAir`` and the ``SourcesConnected`` condition.

On only in a pod (downward-API ``POD_NAMESPACE``/``POD_NAME``, which the operator sets on the
ingest Deployment). Only states go in, no counters: the operator writes status only when it
changes, and a frame count would change it on every pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from parley import reports

from ..report import LeaseHeartbeat
from .programme import Programme


class IngestReport(LeaseHeartbeat):
    """``programme()``: the broadcast's programme (None before a first source);
    ``meetings()``: the meeting sources' status (``MeetingSources.status``)."""

    role = "ingest"

    def __init__(self, programme: Callable[[], Programme | None],
                 meetings: Callable[[], dict[str, dict[str, Any]]], *, broadcast: str,
                 namespace: str, pod: str, pod_uid: str | None, interval: float = 5.0,
                 ttl_seconds: int = 30) -> None:
        super().__init__(namespace=namespace, pod=pod, pod_uid=pod_uid, interval=interval,
                         ttl_seconds=ttl_seconds)
        self.programme, self.meetings = programme, meetings
        self.key = reports.resource_key(broadcast) or broadcast
        self._frames: dict[str, int] = {}
        self.last: dict[str, Any] = {}

    @classmethod
    def from_env(cls, programme: Callable[[], Programme | None],
                 meetings: Callable[[], dict[str, dict[str, Any]]], broadcast: str
                 ) -> IngestReport | None:
        namespace, pod = os.environ.get("POD_NAMESPACE"), os.environ.get("POD_NAME")
        if not namespace or not pod:
            return None
        return cls(programme, meetings, broadcast=broadcast, namespace=namespace, pod=pod,
                   pod_uid=os.environ.get("POD_UID"),
                   interval=float(os.environ.get("PARLEY_REPORT_INTERVAL", "5")))

    def snapshot(self) -> dict[str, Any]:
        """Connected sources with ``sending`` (frames arrived since the previous snapshot), the
        programme's on-air video and audio, and each meeting source's call server, whether it
        joined, who is on air and its last error."""
        p = self.programme()
        sources: list[dict[str, Any]] = []
        on_air: dict[str, str | None] = {"video": None, "audio": None}
        if p is not None:
            for name, s in sorted(p.sources.items()):
                n = s.frames["video"] + s.frames["audio"]
                sources.append({"name": name, "sending": n > self._frames.get(name, 0)})
                self._frames[name] = n
            on_air = dict(p.status()["onAir"])
        meetings = {name: {k: m.get(k) for k in ("meeting", "callServer", "joined", "onAir",
                                                   "error")}
                    for name, m in sorted(self.meetings().items())}
        return {"connected": sources, "onAir": on_air, "meetings": meetings}

    async def publish(self, empty: bool = False) -> None:
        snap = ({"connected": [], "onAir": {"video": None, "audio": None}, "meetings": {}}
                if empty else self.snapshot())
        await self.write(region="", sources={self.key: snap})
        self.last = snap

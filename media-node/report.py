"""The call server's report to the operator: participants per Meeting, as a Lease heartbeat.

Kubernetes-only and off the media path: once a ``interval`` the counts are read from the
node's meetings and written from a worker thread (:func:`parley.reports.publish`). An
apiserver that is down or slow delays the report, never a packet; the operator treats a report
older than its TTL as "no longer counted". On shutdown an empty report goes out, so the
operator sees the node's participants leave at once instead of after the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import defaultdict

from parley import reports

from .node import CallServer

log = logging.getLogger("parley.media.report")


class LeaseHeartbeat:
    """A Lease report written every ``interval`` from a worker thread, and an empty one on stop.

    Subclasses say what they count in :meth:`publish`; the loop, its failure logging and the
    last empty report are the same for every media role that reports (call server, edge)."""

    role = ""

    def __init__(self, *, namespace: str, pod: str, pod_uid: str | None,
                 interval: float = 5.0, ttl_seconds: int = 30) -> None:
        self.namespace, self.pod, self.pod_uid = namespace, pod, pod_uid
        self.interval, self.ttl_seconds = interval, ttl_seconds
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.failures = 0

    async def publish(self, empty: bool = False) -> None:
        raise NotImplementedError

    async def write(self, **counts: object) -> None:
        """One report with ``counts`` (the fields of :func:`parley.reports.publish`)."""
        await asyncio.to_thread(
            reports.publish, self.namespace, self.pod, role=self.role,
            ttl_seconds=self.ttl_seconds, pod_uid=self.pod_uid, **counts)
        self.published += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.publish(empty=True), 5)

    async def _run(self) -> None:
        while True:
            try:
                await self.publish()
            except Exception as exc:  # the apiserver's trouble is never the media's
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("report to %s/%s failed (%d so far): %s", self.namespace,
                                reports.lease_name(self.pod), self.failures, exc)
            await asyncio.sleep(self.interval)


class NodeReport(LeaseHeartbeat):
    role = "call-server"

    def __init__(self, server: CallServer, *, namespace: str, pod: str, pod_uid: str | None,
                 interval: float = 5.0, ttl_seconds: int = 30) -> None:
        super().__init__(namespace=namespace, pod=pod, pod_uid=pod_uid, interval=interval,
                         ttl_seconds=ttl_seconds)
        self.server = server

    @classmethod
    def from_env(cls, server: CallServer) -> NodeReport | None:
        """Enabled in a pod (the downward API sets POD_NAMESPACE and POD_NAME)."""
        namespace, pod = os.environ.get("POD_NAMESPACE"), os.environ.get("POD_NAME")
        if not namespace or not pod:
            return None
        return cls(server, namespace=namespace, pod=pod, pod_uid=os.environ.get("POD_UID"),
                   interval=float(os.environ.get("PARLEY_REPORT_INTERVAL", "5")))

    def meetings(self) -> dict[str, int]:
        """Distinct participants per Meeting (``<ns>/<name>``); a participant in several of a
        room's call-server meetings (peer-pair fallbacks) counts once."""
        people: dict[str, set[str]] = defaultdict(set)
        for meeting in self.server.meetings.values():
            key = reports.resource_key(meeting.id)
            if key is not None:
                people[key].update(meeting.participants)
        return {key: len(ids) for key, ids in sorted(people.items())}

    async def publish(self, empty: bool = False) -> None:
        await self.write(region=self.server.region, meetings={} if empty else self.meetings())

"""An edge relay's report to the operator: its viewers per transport and the renditions that
reach it, as a Lease heartbeat (the channel of :mod:`parley.reports`, as the call server's).

On only in a pod of tier ``edge`` (downward-API ``POD_NAMESPACE``/``POD_NAME``): a relay's WHEP
sessions are edges, not viewers, and must not be counted twice. Every
``PARLEY_REPORT_INTERVAL`` seconds (default 5) the counts are read (:class:`EdgeViewers`) and
written from a worker thread, so an apiserver hiccup never delays a request; an empty report
goes out on shutdown, so the operator sees the viewers leave at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from parley import reports

from ..report import LeaseHeartbeat
from .edge_fanout import PacketFeed
from .viewers import EdgeViewers


class EdgeReport(LeaseHeartbeat):
    """``feeds()``: rendition -> the feed pulled for it (a rendition whose video packet count
    grew since the last report is *producing*)."""

    role = "edge-relay"

    def __init__(self, viewers: EdgeViewers, feeds: Callable[[], dict[str, PacketFeed]], *,
                 broadcast: str, namespace: str, pod: str, pod_uid: str | None, region: str,
                 interval: float = 5.0, ttl_seconds: int = 30) -> None:
        super().__init__(namespace=namespace, pod=pod, pod_uid=pod_uid, interval=interval,
                         ttl_seconds=ttl_seconds)
        self.viewers, self.feeds = viewers, feeds
        self.key = reports.resource_key(broadcast) or broadcast
        self.region = region
        self._packets: dict[str, int] = {}
        self.last: dict[str, object] = {}

    @classmethod
    def from_env(cls, viewers: EdgeViewers, feeds: Callable[[], dict[str, PacketFeed]],
                 broadcast: str) -> EdgeReport | None:
        namespace, pod = os.environ.get("POD_NAMESPACE"), os.environ.get("POD_NAME")
        if not namespace or not pod or os.environ.get("PARLEY_TIER", "edge") != "edge":
            return None
        return cls(viewers, feeds, broadcast=broadcast, namespace=namespace, pod=pod,
                   pod_uid=os.environ.get("POD_UID"),
                   region=os.environ.get("PARLEY_REGION", ""),
                   interval=float(os.environ.get("PARLEY_REPORT_INTERVAL", "5")))

    def producing(self) -> list[str]:
        """Renditions whose video packets kept arriving since the previous call."""
        out = []
        for name, feed in self.feeds().items():
            n = feed.packets["video"]
            if n > self._packets.get(name, 0):
                out.append(name)
            self._packets[name] = n
        return sorted(out)

    async def publish(self, empty: bool = False) -> None:
        snap = {"whep": 0, "hls": 0, "total": 0} if empty else self.viewers.snapshot()
        producing = [] if empty else self.producing()
        await self.write(region=self.region, broadcasts={self.key: snap["total"]},
                         transports={self.key: {"whep": snap["whep"], "hls": snap["hls"]}},
                         renditions={self.key: producing})
        self.last = {"viewers": snap, "producing": producing}

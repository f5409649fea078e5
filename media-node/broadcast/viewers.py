"""Who is watching an edge relay: WHEP sessions and recent LL-HLS clients, per rendition.

What the operator scales edges by (issue 11 item 4), so it must be cheap where requests arrive
and honest about who is a viewer:

- **WHEP**: a live session of :class:`~parley.media.broadcast.whep.Playback` is a viewer (its
  sessions end on DELETE or when ICE/DTLS fails).
- **LL-HLS**: a client that fetched a part or segment (not a playlist, not an init segment) in
  the last ``window`` seconds (``PARLEY_HLS_VIEWER_WINDOW_S``, default 10). A player fetches a
  part every ~1/3 s, so 10 s rides out a stall without counting a departed viewer for long.

A client is identified by its ``X-Playback-Session-Id`` header when it sends one (AVPlayer does,
one id per playback), else by ``remote address + User-Agent``. Either is hashed to 8 bytes and
only the hash is kept: the count needs no address, and a playlist URL carries no per-viewer
token, so CDNs in front still cache one object per part (a CDN-served audience is the CDN's to
count: the edge sees the CDN as one client).

Hot path: one hash and one dict store per part request; expiry is done when a count is read
(once per report interval and per scrape of ``/metrics``), never per request.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request

MAX_CLIENTS = 1_000_000  # past this, expire at once rather than at the next count


def window_from_env() -> float:
    return float(os.environ.get("PARLEY_HLS_VIEWER_WINDOW_S", "10"))


def client_id(request: Request) -> bytes:
    """A stable, non-identifying key for one HLS client."""
    sid = request.headers.get("x-playback-session-id")
    if sid:
        raw = "s|" + sid[:128]
    else:
        host = request.client.host if request.client is not None else ""
        raw = f"a|{host}|{request.headers.get('user-agent', '')[:256]}"
    return hashlib.blake2b(raw.encode(), digest_size=8).digest()


def is_media(file: str) -> bool:
    """A part (``{msn}.{part}.m4s``) or a segment (``{msn}.m4s``): what a playing client
    fetches continuously. Init segments and playlists are fetched by anyone who looks."""
    return file.endswith(".m4s")


class HlsViewers:
    """Clients that fetched media recently, with the rendition they fetched last."""

    def __init__(self, window: float | None = None) -> None:
        self.window = window_from_env() if window is None else window
        self._seen: dict[bytes, tuple[float, str]] = {}

    def seen(self, rendition: str, request: Request) -> None:
        self._seen[client_id(request)] = (time.monotonic(), rendition)
        if len(self._seen) > MAX_CLIENTS:
            self.expire()

    def expire(self) -> None:
        cutoff = time.monotonic() - self.window
        self._seen = {k: v for k, v in self._seen.items() if v[0] >= cutoff}

    def by_rendition(self) -> dict[str, int]:
        self.expire()
        out: dict[str, int] = {}
        for _, rendition in self._seen.values():
            out[rendition] = out.get(rendition, 0) + 1
        return out


class EdgeViewers:
    """Both transports of one edge relay: ``whep()`` gives WHEP sessions per rendition."""

    def __init__(self, whep: Callable[[], dict[str | None, int]], hls: HlsViewers) -> None:
        self.whep, self.hls = whep, hls

    def snapshot(self) -> dict[str, Any]:
        """``{"whep": n, "hls": n, "total": n, "renditions": {r: {"whep": n, "hls": n}}}``."""
        whep = self.whep()
        hls = self.hls.by_rendition()
        renditions: dict[str, dict[str, int]] = {}
        for transport, counts in (("whep", whep), ("hls", hls)):
            for r, n in counts.items():
                renditions.setdefault(r or "", {"whep": 0, "hls": 0})[transport] += n
        w, h = sum(whep.values()), sum(hls.values())
        return {"whep": w, "hls": h, "total": w + h, "renditions": renditions}


class EdgeViewerMetrics(Collector):
    """``parley_edge_viewers{broadcast, rendition, transport}`` on the edge's ``/metrics``,
    computed at scrape time from the same :meth:`EdgeViewers.snapshot` the Lease report
    sends: no second count, nothing on the request path. Every served rendition has both
    transports, zero included, so a dashboard's series do not vanish when viewers leave."""

    def __init__(self, viewers: EdgeViewers, broadcast: str, renditions: list[str]) -> None:
        self.viewers, self.broadcast, self.renditions = viewers, broadcast, renditions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("parley_edge_viewers", "Viewers of this edge relay: live WHEP "
                                   "sessions and HLS clients that fetched media in the window",
                                   labels=["broadcast", "rendition", "transport"])
        counts = self.viewers.snapshot()["renditions"]
        for r in sorted({*self.renditions, *counts}):
            for transport in ("whep", "hls"):
                family.add_metric([self.broadcast, r, transport],
                                  counts.get(r, {}).get(transport, 0))
        yield family

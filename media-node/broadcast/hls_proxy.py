"""LL-HLS on edge relays: a caching, coalescing HTTP proxy of the transcoder's packaging.

An edge pulls its rungs over WHEP, which carry Opus, not AAC; rather than encode audio again at
every edge, the edge forwards HLS requests to the tier it pulls from (the same host as its WHEP
upstream, so relay -> edge chains work the same way) and behaves like a CDN node: identical
requests in flight are sent upstream once (N viewers blocking on the same next part cost one
upstream request), and immutable parts, segments and init segments are kept in a bounded LRU.
Playlists keep the upstream's Cache-Control; an answer to a blocking reload (``_HLS_msn``) is also
kept for its max-age, as a CDN would: a viewer that asks for the same part after the first answer
came back gets that answer rather than a second upstream request. ``index.m3u8`` is composed
from each rung's upstream (the operator runs one transcoder per rendition).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from .hls import CORS, PLAYLIST
from .sessions import SessionError
from .viewers import HlsViewers, is_media
from .whip import check_name

CACHE_ITEMS = 512  # immutable objects kept (parts of ~1/3 s: minutes of a few rungs)
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PASS = ("cache-control", "content-type", "retry-after")
_MAX_AGE = re.compile(r"max-age=(\d+)")
_DIRECTIVES = ("_HLS_msn", "_HLS_part", "_HLS_skip")  # forwarded, so part of the cache key
BLOCKING_ITEMS = 256  # blocking-reload answers kept (a few per rung and part)


class HlsProxy:
    """``upstreams``: rendition -> base URL (``http://host:port``) that serves its HLS."""

    def __init__(self, broadcast: str, upstreams: dict[str, str]) -> None:
        self.broadcast = broadcast
        self.upstreams = upstreams
        self.http = httpx.AsyncClient(timeout=15)
        self.cache: OrderedDict[str, tuple[int, bytes, dict[str, str]]] = OrderedDict()
        self.inflight: dict[str, asyncio.Future[tuple[int, bytes, dict[str, str]]]] = {}
        self.blocking: OrderedDict[str, tuple[float, tuple[int, bytes, dict[str, str]]]] = (
            OrderedDict())
        self.upstream_requests = 0
        self.requests = 0
        self.viewers: HlsViewers | None = None  # counts clients fetching parts (viewers.py)

    async def fetch(self, url: str, immutable: bool) -> tuple[int, bytes, dict[str, str]]:
        """GET ``url`` upstream once for all concurrent askers; cache it when immutable."""
        self.requests += 1
        if url in self.cache:
            self.cache.move_to_end(url)
            return self.cache[url]
        kept = self.blocking.get(url)
        if kept is not None:
            if kept[0] > time.monotonic():
                return kept[1]
            del self.blocking[url]
        if url in self.inflight:
            return await asyncio.shield(self.inflight[url])
        future: asyncio.Future[tuple[int, bytes, dict[str, str]]] = (
            asyncio.get_running_loop().create_future())
        self.inflight[url] = future
        try:
            self.upstream_requests += 1
            try:
                r = await self.http.get(url)
                got = (r.status_code, r.content,
                       {k: r.headers[k] for k in _PASS if k in r.headers})
            except httpx.HTTPError as exc:
                got = (502, b'{"detail": {"code": "hls_upstream", "message": "upstream '
                       + type(exc).__name__.encode() + b'"}}',
                       {"content-type": "application/json", "cache-control": "no-store"})
            if immutable and got[0] == 200:
                self.cache[url] = got
                while len(self.cache) > CACHE_ITEMS:
                    self.cache.popitem(last=False)
            elif "_HLS_msn=" in url and got[0] == 200:
                age = _MAX_AGE.search(got[2].get("cache-control", ""))
                if age:
                    self.blocking[url] = (time.monotonic() + int(age.group(1)), got)
                    while len(self.blocking) > BLOCKING_ITEMS:
                        self.blocking.popitem(last=False)
            future.set_result(got)
            return got
        finally:
            del self.inflight[url]

    def base(self, rendition: str) -> str:
        base = self.upstreams.get(rendition)
        if base is None:
            raise SessionError(404, "rendition_unknown",
                               f"no rendition {rendition[:40]!r}; this edge has "
                               f"{', '.join(self.upstreams)}", {"Cache-Control": "no-store"})
        return base

    async def index(self) -> Response:
        """The multivariant playlist: each rung's STREAM-INF from its own upstream."""
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
        results = await asyncio.gather(*(
            self.fetch(f"{b}/live/{self.broadcast}/index.m3u8", False)
            for b in self.upstreams.values()))
        for rendition, (status, body, headers) in zip(self.upstreams, results, strict=True):
            if status != 200:
                return Response(body, status, headers={**CORS, **headers})
            text = body.decode().splitlines()
            for i, line in enumerate(text[1:], 1):
                if line.strip() == f"{rendition}.m3u8" and text[i - 1].startswith(
                        "#EXT-X-STREAM-INF"):
                    lines += [text[i - 1], line]
        return Response("\n".join(lines) + "\n", media_type=PLAYLIST,
                        headers={**CORS, "Cache-Control": "public, max-age=1"})

    def status(self) -> dict[str, Any]:
        return {"requests": self.requests, "upstreamRequests": self.upstream_requests,
                "cached": len(self.cache)}

    async def close(self) -> None:
        await self.http.aclose()


def add_proxy_routes(app: FastAPI, proxy: HlsProxy) -> None:
    """The same URLs as hls.add_routes, answered from upstream."""

    def check(broadcast: str) -> None:
        check_name(broadcast)
        if broadcast != proxy.broadcast:
            raise SessionError(404, "broadcast_unknown", f"no broadcast {broadcast} here",
                               {"Cache-Control": "no-store"})

    @app.get("/{broadcast}/{name}.m3u8")
    async def playlist(broadcast: str, name: str, request: Request) -> Response:
        check(broadcast)
        if name == "index":
            return await proxy.index()
        query = {k: v for k, v in request.query_params.items() if k in _DIRECTIVES}
        qs = "&".join(f"{k}={httpx.QueryParams({k: v})[k]}" for k, v in sorted(query.items()))
        url = f"{proxy.base(name)}/live/{broadcast}/{name}.m3u8" + (f"?{qs}" if qs else "")
        status, body, headers = await proxy.fetch(url, False)
        return Response(body, status, headers={**CORS, **headers})

    @app.get("/{broadcast}/{name}/{run}/{file}")
    async def media(broadcast: str, name: str, run: str, file: str,
                    request: Request) -> Response:
        check(broadcast)
        if not (_SAFE.match(run) and _SAFE.match(file)):
            raise SessionError(404, "hls_gone", "no such object", {"Cache-Control": "no-store"})
        status, body, headers = await proxy.fetch(
            f"{proxy.base(name)}/live/{broadcast}/{name}/{run}/{file}", True)
        if status == 200 and proxy.viewers is not None and is_media(file):
            proxy.viewers.seen(name, request)
        return Response(body, status, headers={**CORS, **headers})

"""`parley media-node --role ingest` and the broadcast routes inside `parley up`.

The ingest serves one broadcast (``PARLEY_BROADCAST``, ``namespace/name`` from the operator,
``namespace.name`` in URLs) to the sources listed in ``PARLEY_INGEST_SOURCES``; it also plays the
programme over WHEP, which is what a transcoder or a relay pulls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .feed import Feed
from .hls import Ladder, add_routes
from .hls_proxy import HlsProxy, add_proxy_routes
from .ladder import DEFAULT_LADDER, Rung, parse_ladder
from .live import create_app as live_app
from .pull import Pull
from .whep import Playback
from .whip import Ingest


def broadcast_key(value: str) -> str:
    """``namespace/name`` (the operator's PARLEY_BROADCAST) -> ``namespace.name`` (URLs)."""
    return value.strip().replace("/", ".")


def ingest_apps(secret: str, broadcasts: list[str] | None = None,
                sources: list[str] | None = None,
                ladder: list[Rung] | None = None) -> tuple[FastAPI, Ingest, Playback]:
    """The /live app of an ingest: WHIP in, the programme out over WHEP. With a ``ladder``
    (`parley up`) the first viewer of a rung starts an in-process transcoder of that broadcast's
    programme (the same Transcoder as the role, fed without the WHEP hop)."""
    from .transcoder import Transcoder

    ingest = Ingest(secret, broadcasts=broadcasts, sources=sources)
    renditions: dict[tuple[str, str], Feed] = {}
    transcoders: dict[str, Transcoder] = {}

    def start(broadcast: str) -> Transcoder | None:
        """The broadcast's ladder, started (with LL-HLS packaging) on first demand."""
        p = ingest.programme(broadcast)
        if broadcast not in transcoders and p is not None and ladder:
            tx = transcoders[broadcast] = Transcoder(broadcast, p.feed, ladder, hls=True)
            tx.start()
            renditions.update({(broadcast, n): f for n, f in tx.feeds.items()})
        return transcoders.get(broadcast)

    def lookup(broadcast: str, rendition: str | None) -> Feed | None:
        p = ingest.programme(broadcast)
        if rendition is not None:
            if any(r.name == rendition for r in ladder or []):
                start(broadcast)
            return renditions.get((broadcast, rendition))
        return p.feed if p is not None else None

    def hls_ladder(broadcast: str) -> Ladder | None:
        tx = start(broadcast)
        return tx.hls if tx is not None else None

    playback = Playback(lookup)

    def status(broadcast: str) -> dict[str, Any] | None:
        p = ingest.programme(broadcast)
        if p is None:
            return None
        tx = transcoders.get(broadcast)
        return {**p.status(), "renditions": sorted(r for b, r in renditions if b == broadcast),
                "ladder": [r.name for r in ladder or []],
                "transcoder": tx.status() if tx is not None else None}

    app = live_app(playback, ingest, status)
    if ladder:
        add_routes(app, hls_ladder)
    app.state.renditions = renditions
    app.state.transcoders = transcoders
    return app, ingest, playback


def mount(app: FastAPI, secret: str) -> Ingest:
    """`parley up`: publishing to /live/NAME/whip creates broadcast NAME; its rungs
    (PARLEY_BROADCAST_LADDER, default 720p:3000,360p:800) play at /live/NAME/{rung}/whep."""
    ladder = parse_ladder(os.environ.get("PARLEY_BROADCAST_LADDER") or DEFAULT_LADDER)
    live, ingest, _ = ingest_apps(secret, ladder=ladder)
    app.mount("/live", live)
    return ingest


def node_app(live: FastAPI) -> FastAPI:
    """A broadcast role's whole HTTP surface: /live plus probes and metrics."""
    app = FastAPI(title="Parley broadcast node")

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/live", live)
    return app


async def serve_ingest(args: argparse.Namespace) -> None:
    from parley.config import Settings

    secret = Settings.from_env().token_secret
    key = os.environ.get("PARLEY_BROADCAST")
    sources = [s for s in os.environ.get("PARLEY_INGEST_SOURCES", "").split(",") if s]
    live, ingest, playback = ingest_apps(secret, [broadcast_key(key)] if key else None,
                                         sources or None)
    video = os.environ.get("PARLEY_PROGRAM_VIDEO")
    if key and video:
        programme = ingest.programme(broadcast_key(key))
        if programme is not None:
            programme.set_program(video, None)
    config = uvicorn.Config(node_app(live), host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    print(f"ingest listening on http://{args.host}:{args.port}/live/"
          f"{broadcast_key(key) if key else '{broadcast}'}/whip", flush=True)
    try:
        await server.serve()
    finally:
        await playback.close()
        await ingest.close()


async def serve_edge(args: argparse.Namespace) -> None:
    """A relay or edge (PARLEY_TIER=relay|edge: the same code): pulls PARLEY_UPSTREAM_URL (a WHEP
    URL: the ingest's programme, a transcoder's rendition or a relay) and serves it over WHEP at
    /live/{PARLEY_BROADCAST}[/{PARLEY_RENDITION}]/whep. With PARLEY_RENDITIONS (``720p,360p``)
    and ``{rendition}`` in PARLEY_UPSTREAM_URL it pulls and serves each rendition. Named
    renditions are also served over LL-HLS, proxied from the upstream's host (PARLEY_HLS=0: off)."""
    upstream = os.environ.get("PARLEY_UPSTREAM_URL", "")
    key = broadcast_key(os.environ.get("PARLEY_BROADCAST", ""))
    if not upstream.startswith(("http://", "https://")) or not key:
        raise SystemExit("edge-relay needs PARLEY_UPSTREAM_URL (a WHEP URL) and PARLEY_BROADCAST")
    several = [r for r in os.environ.get("PARLEY_RENDITIONS", "").split(",") if r]
    if several and "{rendition}" not in upstream:
        raise SystemExit("PARLEY_RENDITIONS needs {rendition} in PARLEY_UPSTREAM_URL")
    wanted: list[str | None] = [*several] if several else [
        os.environ.get("PARLEY_RENDITION") or None]
    pulls = {r: Pull(upstream.replace("{rendition}", r or ""), key) for r in wanted}

    def lookup(broadcast: str, r: str | None) -> Feed | None:
        pull = pulls.get(r) if broadcast == key else None
        return pull.feed if pull is not None else None

    playback = Playback(lookup)

    # LL-HLS: proxied from the tier the rung is pulled from (see hls_proxy.py)
    bases = {r: p.url.split("/live/", 1)[0] for r, p in pulls.items() if r}
    proxy = HlsProxy(key, bases) if bases and os.environ.get("PARLEY_HLS", "1") != "0" else None

    def one(r: str | None, pull: Pull) -> dict[str, Any]:
        return {"rendition": r, "upstream": pull.url, "connected": pull.connected,
                "upstreamSessions": pull.sessions, "viewers": pull.feed.viewers(),
                "frames": dict(pull.feed.frames)}

    def status(broadcast: str) -> dict[str, Any] | None:
        if broadcast != key:
            return None
        tier = os.environ.get("PARLEY_TIER", "edge")
        hls = {"hls": proxy.status()} if proxy is not None else {}
        if not several:
            r = wanted[0]
            return {"broadcast": key, "tier": tier, **one(r, pulls[r]), **hls}
        return {"broadcast": key, "tier": tier,
                "viewers": sum(p.feed.viewers() for p in pulls.values()),
                "renditions": [one(r, p) for r, p in pulls.items()], **hls}

    live = live_app(playback, None, status)
    if proxy is not None:
        add_proxy_routes(live, proxy)
    config = uvicorn.Config(node_app(live), host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    for pull in pulls.values():
        pull.start()
    print(f"edge relay for {key} pulling {', '.join(p.url for p in pulls.values())}", flush=True)
    try:
        await server.serve()
    finally:
        await playback.close()
        if proxy is not None:
            await proxy.close()
        for pull in pulls.values():
            await pull.close()


def run(args: argparse.Namespace) -> int:
    if args.role == "ingest":
        asyncio.run(serve_ingest(args))
        return 0
    if args.role == "edge-relay":
        asyncio.run(serve_edge(args))
        return 0
    if args.role == "transcoder":
        from .transcoder import serve_transcoder

        asyncio.run(serve_transcoder(args))
        return 0
    raise ValueError(f"not a broadcast role: {args.role}")

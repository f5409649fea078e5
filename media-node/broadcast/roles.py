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

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from parley import reports
from parley.tokens import control_key

from .edge_fanout import PacketFeed
from .edge_report import EdgeReport
from .feed import Feed
from .hls import Ladder, add_routes
from .hls_proxy import HlsProxy, add_proxy_routes
from .ingest_report import IngestReport
from .ladder import DEFAULT_LADDER, Rung, parse_ladder
from .live import create_app as live_app
from .meeting_access import authorize as authorize_meeting
from .meeting_source import MeetingSources
from .pull import Pull
from .serving import serve_role
from .spec_watch import SpecWatch, watch_wanted
from .viewers import EdgeViewerMetrics, EdgeViewers, HlsViewers
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

    playback = Playback(lookup, stamp_timeline=True)  # transcoders align on it

    def status(broadcast: str) -> dict[str, Any] | None:
        p = ingest.programme(broadcast)
        if p is None:
            return None
        tx = transcoders.get(broadcast)
        return {**p.status(), "renditions": sorted(r for b, r in renditions if b == broadcast),
                "ladder": [r.name for r in ladder or []],
                "rungs": [{"name": r.name, "height": r.height, "bitrateKbps": r.bitrate_kbps}
                          for r in ladder or []],
                "transcoder": tx.status() if tx is not None else None,
                "meetings": ingest.meetings.status(broadcast) if ingest.meetings else {}}

    app = live_app(playback, ingest, status)
    if ladder:
        add_routes(app, hls_ladder)
    app.state.renditions = renditions
    app.state.transcoders = transcoders
    return app, ingest, playback


def mount(app: FastAPI, secret: str, call_server_url: str | None = None) -> Ingest:
    """`parley up`: publishing to /live/NAME/whip creates broadcast NAME; its rungs
    (PARLEY_BROADCAST_LADDER, default 720p:3000,360p:800) play at /live/NAME/{rung}/whep.
    Meeting sources come from the embedded call server at ``call_server_url``."""
    ladder = parse_ladder(os.environ.get("PARLEY_BROADCAST_LADDER") or DEFAULT_LADDER)
    live, ingest, _ = ingest_apps(secret, ladder=ladder)
    if call_server_url is not None:
        async def here(_: str) -> str | None:
            return call_server_url

        ingest.meetings = MeetingSources(here, control_key(secret))
    from .recorder import embed as embed_recorder  # PUT /live/{b}/recording

    embed_recorder(live, ingest, ladder, app)
    app.mount("/live", live)  # the pages /golive and /watch: signaling (broadcast_pages.py)
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


def meeting_sources(secret: str) -> MeetingSources | None:
    """Where the role finds a meeting's call server: the nodes registered in Redis
    (``PARLEY_REDIS_URL``, placed as signaling places a room) or one control API
    (``PARLEY_CALL_SERVER_URL``); its key: ``PARLEY_CONTROL_KEY`` or derived from the token
    secret. Neither: no meeting sources."""
    key = os.environ.get("PARLEY_CONTROL_KEY") or control_key(secret)
    fixed = os.environ.get("PARLEY_CALL_SERVER_URL")
    redis_url = os.environ.get("PARLEY_REDIS_URL")
    if fixed:
        async def one(_: str) -> str | None:
            return fixed.rstrip("/")

        return MeetingSources(one, key)
    if redis_url:
        from ..directory import RedisDirectory

        directory = RedisDirectory(redis_url, os.environ.get("PARLEY_REGION"))

        async def placed(meeting: str) -> str | None:
            p = await directory.place(meeting, 1, [])
            return p.url if p is not None else None

        return MeetingSources(placed, key)
    return None


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
    ingest.meetings = meeting_sources(secret)
    spec = SpecWatch(broadcast_key(key), ingest) if key and watch_wanted() else None
    if spec is not None:  # spec.program / spec.sources live from the apiserver
        spec.start(asyncio.get_running_loop())
        if ingest.meetings is not None:  # and the apiserver's RBAC says which Meetings
            ingest.meetings.authorize = authorize_meeting
    report = IngestReport.from_env(  # in a pod: sources and what is on air, to the operator
        lambda: ingest.programme(broadcast_key(key)) if key else None,
        lambda: ingest.meetings.status(broadcast_key(key)) if key and ingest.meetings else {},
        broadcast_key(key)) if key else None
    if report is not None:
        report.start()
    print(f"ingest listening on http://{args.host}:{args.port}/live/"
          f"{broadcast_key(key) if key else '{broadcast}'}/whip", flush=True)

    async def close() -> None:
        if spec is not None:
            spec.stop()
        if report is not None:
            await report.stop()  # an empty report: the operator sees the sources go
        await playback.close()
        await ingest.close()
    await serve_role(node_app(live), args.host, args.port, close)


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
    pulls = {r: Pull(upstream.replace("{rendition}", r or ""), key, packets=True)
             for r in wanted}  # RTP forwarded to viewers as it comes (edge_fanout.py)

    def lookup(broadcast: str, r: str | None) -> Feed | PacketFeed | None:
        pull = pulls.get(r) if broadcast == key else None
        return pull.feed if pull is not None else None

    playback = Playback(lookup)

    # LL-HLS: proxied from the tier the rung is pulled from (see hls_proxy.py)
    bases = {r: p.url.split("/live/", 1)[0] for r, p in pulls.items() if r}
    proxy = HlsProxy(key, bases) if bases and os.environ.get("PARLEY_HLS", "1") != "0" else None
    hls_viewers = HlsViewers()
    if proxy is not None:
        proxy.viewers = hls_viewers

    def whep_viewers() -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for s in playback.sessions.values():
            out[s.rendition] = out.get(s.rendition, 0) + 1
        return out

    viewers = EdgeViewers(whep_viewers, hls_viewers)
    REGISTRY.register(EdgeViewerMetrics(viewers, reports.resource_key(key) or key,
                                        [r or "" for r in wanted]))  # parley_edge_viewers
    feeds = {r: p.feed for r, p in pulls.items() if isinstance(p.feed, PacketFeed)}
    report = EdgeReport.from_env(viewers, lambda: {r or "": f for r, f in feeds.items()}, key)

    def one(r: str | None, feed: PacketFeed) -> dict[str, Any]:
        pull = pulls[r]
        return {"rendition": r, "upstream": pull.url, "connected": pull.connected,
                "upstreamSessions": pull.sessions, "viewers": feed.viewers(),
                "packets": feed.packets, "cachedStarts": feed.cached_starts,
                "forwarding": feed.forwarding(), "cacheStarts": feed.starts}

    def status(broadcast: str) -> dict[str, Any] | None:
        if broadcast != key:
            return None
        tier = os.environ.get("PARLEY_TIER", "edge")
        hls = {"hls": proxy.status()} if proxy is not None else {}
        hls["audience"] = viewers.snapshot()  # WHEP sessions + HLS clients (viewers.py)
        if not several:
            r = wanted[0]
            return {"broadcast": key, "tier": tier, **one(r, feeds[r]), **hls}
        return {"broadcast": key, "tier": tier,
                "viewers": sum(f.viewers() for f in feeds.values()),
                "renditions": [one(r, f) for r, f in feeds.items()], **hls}

    live = live_app(playback, None, status)
    if proxy is not None:
        add_proxy_routes(live, proxy)
    for pull in pulls.values():
        pull.start()
    if report is not None:
        report.start()
    print(f"edge relay for {key} pulling {', '.join(p.url for p in pulls.values())}", flush=True)

    async def close() -> None:
        if report is not None:
            await report.stop()  # an empty report: the operator sees the viewers leave
        await playback.close()
        if proxy is not None:
            await proxy.close()
        for pull in pulls.values():
            await pull.close()  # DELETEs the upstream WHEP session
    await serve_role(node_app(live), args.host, args.port, close)


def run(args: argparse.Namespace) -> int:
    if args.role == "ingest":
        asyncio.run(serve_ingest(args))
        return 0
    if args.role == "edge-relay":
        asyncio.run(serve_edge(args))
        return 0
    if args.role == "transcoder" and os.environ.get("PARLEY_MEETING"):  # a meeting's
        from ..meeting_transcoder import serve_meeting_transcoder

        asyncio.run(serve_meeting_transcoder(args))
        return 0
    if args.role == "transcoder":
        from .transcoder import serve_transcoder

        asyncio.run(serve_transcoder(args))
        return 0
    if args.role == "recorder":
        from .recorder import serve_recorder

        asyncio.run(serve_recorder(args))
        return 0
    raise ValueError(f"not a broadcast role: {args.role}")

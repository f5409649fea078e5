"""The signaling service's HTTP application: wiring of the WebSocket endpoint, the guest-token
and user-service APIs, metrics and the web client's pages."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Header, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from parley import __version__, tokens
from parley.analytics.report import router_for as analytics_report
from parley.config import Settings
from parley.signaling import broadcast_pages, guests
from parley.signaling import protocol as p
from parley.signaling.client_files import ClientFiles
from parley.signaling.guard import Guard
from parley.signaling.hub import Hub
from parley.signaling.recordings import Recordings
from parley.signaling.recordings import router as recordings_api
from parley.signaling.session import Session
from parley.turn import ice_servers

STATIC = Path(str(resources.files("parley.signaling").joinpath("static")))


def create_app(settings: Settings, hub: Hub | None = None) -> FastAPI:
    hub = hub or Hub(settings)
    recordings = Recordings(settings, hub)  # docs/recording.md
    hub.recordings = recordings  # type: ignore[attr-defined]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        await recordings.open()
        try:
            yield
        finally:
            await recordings.close()
            await hub.stop()

    app = FastAPI(title="Parley signaling", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.hub = hub
    client = ClientFiles(STATIC)  # the web client, from memory (signaling/client_files.py)
    app.mount("/static", client, name="static")
    broadcast_pages.add_routes(app, STATIC, settings.broadcast_url)  # /golive, /watch/{b}

    @app.get("/")
    async def index(request: Request) -> Response:
        return client.response("index.html", request)

    @app.get("/m/{room}")
    async def meeting(room: str, request: Request) -> Response:
        if not guests.ID_RE.match(room):
            raise HTTPException(404, "room names are letters, digits and _.:@+-")
        return client.response("room.html", request)

    @app.get("/recordings", include_in_schema=False)
    async def recordings_page() -> FileResponse:
        """A room's (or ``broadcast:<name>``'s) recordings, played through the API."""
        return FileResponse(STATIC / "recordings.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon(request: Request) -> Response:
        """The pages link /static/icon.png; this answers what asks the conventional path. A
        PNG, not an SVG: the browser has the page's renderer decode its tab icon on the main
        thread, and an SVG icon is a document of its own (24-37 ms there, while a joining page
        connects its call: bench/join_time with a devtools trace)."""
        return client.response("icon.png", request)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/v1/guest-token")
    async def guest_token(body: dict[str, Any] = Body(default_factory=dict),  # noqa: B008
                          authorization: str | None = Header(None)) -> dict[str, Any]:
        """Tokens for the web page when guests are allowed (the embedded default). The identity
        is always server-made (``guest-<hex>``; a requested one is ignored); with the page's
        current guest token as bearer, the same guest gets a fresh token (refresh)."""
        if not settings.allow_guests:
            raise HTTPException(403, {"code": "guests_disabled",
                                      "message": "this deployment does not admit guests"})
        if authorization:
            current = bearer(authorization)
            if not current.guest:
                raise HTTPException(403, {"code": "not_a_guest_token", "message": (
                    "only guest tokens are refreshed here; the deployment refreshes its own")})
            room, name, identity = current.room, current.name, current.identity
            since: int | None = current.since
            limit = hub.options.guest_max_session_s  # docs/signaling.md, "Limits"
            if limit > 0 and time.time() - current.since >= limit:
                raise HTTPException(403, {
                    "code": "guest_session_limit", "maxSessionS": int(limit),
                    "message": f"a guest session lives at most {int(limit)} s; a new guest "
                               "token (without Authorization) starts a new one"})
        else:
            room, name = body.get("room") or "lobby", body.get("name") or "Guest"
            identity, since = "", None
        try:
            guests.check(settings, room, name)
            identity = identity or await guests.new_identity(hub.users)
        except guests.GuestRefused as exc:
            raise HTTPException(exc.status, {"code": exc.code, "message": exc.message}) from None
        token = guests.mint(settings, identity, room, name, since)
        return {"token": token, "identity": identity, "room": room, "name": name,
                "grants": sorted(settings.guest_grants), "guest": True,
                "expiresIn": settings.guest_ttl_s,
                "iceServers": ice_servers(settings.stun_uris, settings.turn_uris,
                                          settings.turn_secret, identity)}

    def bearer(authorization: str | None) -> tokens.AccessToken:
        token = (authorization or "").removeprefix("Bearer ").strip()
        try:
            return tokens.verify(settings.token_secret, token)
        except tokens.TokenError as exc:
            raise HTTPException(401, {"code": exc.code, "message": str(exc)}) from None

    def admin(authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        try:
            tokens.verify(settings.token_secret, token).require("admin")
        except tokens.TokenError as exc:
            raise HTTPException(401 if exc.code != "grant_missing" else 403,
                                {"code": exc.code, "message": str(exc)}) from None

    @app.get("/api/v1/users/{identity}")
    async def get_user(identity: str) -> dict[str, Any]:
        return (await hub.users.get(identity)).to_json()

    @app.put("/api/v1/users/{identity}")
    async def put_user(identity: str, body: dict[str, Any] = Body(...),  # noqa: B008
                       authorization: str | None = Header(None)) -> dict[str, Any]:
        admin(authorization)
        try:
            return (await hub.users.put(identity, body)).to_json()
        except ValueError as exc:
            raise HTTPException(400, {"code": "bad_request", "message": str(exc)}) from None

    @app.put("/api/v1/users-policy")
    async def put_policy(body: dict[str, Any] = Body(...),  # noqa: B008
                         authorization: str | None = Header(None)) -> dict[str, str]:
        admin(authorization)
        try:
            await hub.users.set_policy(str(body.get("policy")))
        except ValueError as exc:
            raise HTTPException(400, {"code": "bad_request", "message": str(exc)}) from None
        return {"policy": await hub.users.policy()}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        address = websocket.client.host if websocket.client else "?"
        cap = hub.options.max_connections_per_ip
        if cap and hub.connections.get(address, 0) >= cap:
            await websocket.accept()
            await websocket.send_text(json.dumps(p.error(
                "too_many_connections", f"at most {cap} connections per address")))
            await websocket.close(p.CLOSE_TOO_MANY_CONNECTIONS, "too many connections")
            return
        hub.connections[address] = hub.connections.get(address, 0) + 1
        try:
            await Session(hub, websocket).run()
        finally:
            hub.connections[address] -= 1
            if not hub.connections[address]:
                del hub.connections[address]

    app.include_router(recordings_api(recordings))
    app.include_router(analytics_report(settings))  # /analytics (issue 13, admin grant)
    app.add_middleware(Guard, hosts=settings.hosts(),  # type: ignore[arg-type]
                       max_body=hub.options.max_body_bytes)
    return app

"""HTTP control API that signaling drives (docs/call-server.md).

Media never touches HTTP: this is join/leave, renegotiation, the per-participant event stream
(long poll) that carries server offers and drain moves, drain, and health endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .node import CallServer, Refused
from .participant import Glare, NotAllowed, Participant


class Join(BaseModel):
    sdp: str
    type: str = "offer"
    participant: str | None = None  # the identity: a label; the node makes the session's id
    subscribe: bool = True  # False for publish-only participants
    publish: bool = True  # False: subscribe-only (its sending m-lines are answered inactive)
    early: bool = False  # the client takes our offers before its connection is up (browsers)


class Sdp(BaseModel):
    sdp: str
    type: str


class Publish(BaseModel):
    kinds: list[str]


class Unpublish(BaseModel):
    track: str  # the track id the client announced (a=msid)


class View(BaseModel):
    views: dict[str, int] | None = None  # remote track id -> rendered tile height (pixels)
    # the most the client wants to receive, bits/s (a data saver, a weak device); null: no cap.
    # Below a track's lowest layer it gets a transcoded rung (docs/call-server.md).
    maxBitrate: int | None = None  # the protocol's name


class Drain(BaseModel):
    deadline: float = 30.0


OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics"})  # probes and scrapes carry no key


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"code": code, "message": message}}, status_code=status)


class ControlKey:
    """Every call but the probes needs ``Authorization: Bearer <control key>``. Plain ASGI, not
    ``@app.middleware``: Starlette's BaseHTTPMiddleware runs each request in a task of its own
    with memory streams between, a cost on every control call (a join makes about ten of
    them: the join, the event stream's polls, views, the others' renegotiations)."""

    def __init__(self, app: ASGIApp, control_key: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {control_key}".encode() if control_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # the path as routed (under `parley up` the app is mounted at /media), matched exactly
        if scope["type"] != "http" or (get_route_path(scope) in OPEN_PATHS
                                       and scope["method"] in ("GET", "HEAD")):
            return await self.app(scope, receive, send)
        if self.expected is None:
            refusal = _refuse(503, "control_key_missing",
                              "this call server has no control key (PARLEY_CONTROL_KEY)")
        elif hmac.compare_digest(Headers(scope=scope).get("authorization", "").encode(),
                                 self.expected):
            return await self.app(scope, receive, send)
        else:
            refusal = _refuse(401, "control_key_invalid",
                              "the call server's control API needs its control key")
        await refusal(scope, receive, send)


def create_app(server: CallServer, control_key: str | None) -> FastAPI:
    """The control API. Every call but the probes needs ``Authorization: Bearer <control key>``
    (``parley.tokens.control_key``), so only signaling and the operator drive it; a node
    without a key refuses them all (503), it never runs open."""
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.open()
        yield

    app = FastAPI(title="Parley call server", lifespan=lifespan)
    app.add_middleware(ControlKey, control_key=control_key)

    def get(meeting: str, pid: str) -> Participant:
        """The participant, only in the meeting the caller names (an id from one meeting never
        acts in another)."""
        p = server.participant(pid)
        if p is None or p.meeting_id != meeting:
            raise HTTPException(404, {"code": "no_participant",
                                      "message": "no such participant in this meeting"})
        return p

    def live(meeting: str, pid: str) -> Participant:
        p = get(meeting, pid)
        if p.closed:
            raise HTTPException(410, {"code": "participant_closed",
                                      "message": "this session has ended"})
        return p

    @app.post("/v1/meetings/{meeting}/participants")
    async def join(meeting: str, body: Join) -> dict[str, Any]:
        if body.type != "offer":
            raise HTTPException(400, "join with an offer")
        try:
            p, answer = await server.join(meeting, body.sdp, body.participant, body.subscribe,
                                          body.publish, early=body.early)
        except Refused as exc:
            raise HTTPException(503, str(exc)) from exc
        except NotAllowed as exc:
            raise HTTPException(403, {"code": exc.code, "message": str(exc)}) from exc
        except ValueError as exc:
            raise HTTPException(400, f"bad offer: {exc}") from exc
        return {"participant": p.id, "node": server.id, "type": "answer", "sdp": answer}

    base = "/v1/meetings/{meeting}/participants/{pid}"

    @app.post(f"{base}/sdp", response_model=None)
    async def sdp(meeting: str, pid: str, body: Sdp) -> Response | dict[str, Any]:
        """A client offer (publishing more) gets an answer; a client answer completes a server
        offer. 409 on glare: answer the pending server offer first, then offer again."""
        p = live(meeting, pid)
        try:
            if body.type == "offer":
                return {"type": "answer", "sdp": await server.offer(pid, body.sdp)}
            if body.type == "answer":
                await p.accept_answer(body.sdp)
                return Response(status_code=204)
        except Glare as exc:
            raise HTTPException(409, "another offer is outstanding") from exc
        except NotAllowed as exc:
            raise HTTPException(403, {"code": exc.code, "message": str(exc)}) from exc
        except ValueError as exc:
            raise HTTPException(400, f"bad description: {exc}") from exc
        raise HTTPException(400, "type must be offer or answer")

    @app.post(f"{base}/view")
    async def view(meeting: str, pid: str, body: View) -> Response:
        """The tile sizes the client renders (no layer taller than needed is sent) and its
        receive cap ``maxBitrate``; each is changed only when present."""
        views = body.views
        if views is not None and (len(views) > 64
                                  or any(not 0 <= h <= 4320 for h in views.values())):
            raise HTTPException(400, "views: at most 64 track ids, heights 0-4320")
        cap = body.maxBitrate
        if cap is not None and not 30_000 <= cap <= 100_000_000:
            raise HTTPException(400, {"code": "bad_max_bitrate",
                                      "message": "maxBitrate: 30000-100000000 bits/s or null"})
        p = live(meeting, pid)
        if views is not None:
            p.views = dict(views)
        if "maxBitrate" in body.model_fields_set:
            p.max_bps = None if cap is None else float(cap)
        return Response(status_code=204)

    @app.post(f"{base}/publish")
    async def publish(meeting: str, pid: str, body: Publish) -> Response:
        """Ask for m-lines to publish more (e.g. ["video"] for a screen share); they arrive as a
        server offer on the event stream, and the client's answer attaches its tracks."""
        try:
            live(meeting, pid).request_publish(body.kinds)
        except NotAllowed as exc:
            raise HTTPException(403, {"code": exc.code, "message": str(exc)}) from exc
        return Response(status_code=202)

    @app.post(f"{base}/unpublish")
    async def unpublish(meeting: str, pid: str, body: Unpublish) -> Response:
        """The client stopped a track (a screen share): the others' copies end."""
        live(meeting, pid)
        if not server.unpublish(pid, body.track):
            raise HTTPException(404, {"code": "no_track", "message": "no such published track"})
        return Response(status_code=204)

    @app.get(f"{base}/events")
    async def events(meeting: str, pid: str, after: int = 0,
                     wait: float = 20.0) -> dict[str, Any]:
        p = get(meeting, pid)
        return {"events": await p.wait_events(after, min(wait, 55.0))}

    @app.delete(base)
    async def leave(meeting: str, pid: str) -> Response:
        get(meeting, pid)
        if not await server.leave(pid):
            raise HTTPException(404, {"code": "no_participant", "message": "already left"})
        return Response(status_code=204)

    @app.post("/v1/drain")
    async def drain(body: Drain) -> dict[str, Any]:
        return server.drain(body.deadline)

    @app.delete("/v1/drain")
    async def undrain() -> dict[str, Any]:
        return server.undrain()

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return server.status()

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        # The event loop answered: forwarding (same loop) is alive.
        await asyncio.sleep(0)
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        if server.ready():
            return Response('{"status":"ready"}', media_type="application/json")
        reason = "draining" if server.draining else "at capacity"
        return Response(f'{{"status":"{reason}"}}', status_code=503,
                        media_type="application/json")

    @app.get("/metrics")
    async def prom() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    from .recorder_tap import add_routes  # recording (docs/recording.md)

    add_routes(app, server)
    return app

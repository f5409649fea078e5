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

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from .node import CallServer, Refused
from .participant import Glare, Participant


class Join(BaseModel):
    sdp: str
    type: str = "offer"
    participant: str | None = None
    subscribe: bool = True  # False for publish-only participants


class Sdp(BaseModel):
    sdp: str
    type: str


class Publish(BaseModel):
    kinds: list[str]


class Drain(BaseModel):
    deadline: float = 30.0


OPEN_PATHS = ("/livez", "/readyz", "/metrics")  # probes and scrapes carry no key


def create_app(server: CallServer, control_key: str | None = None) -> FastAPI:
    """The control API; with ``control_key`` every ``/v1`` call needs ``Authorization: Bearer
    <key>`` (``parley.tokens.control_key``), so only signaling and the operator drive it."""
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.open()
        yield

    app = FastAPI(title="Parley call server", lifespan=lifespan)
    if control_key:
        expected = f"Bearer {control_key}".encode()

        @app.middleware("http")
        async def authorize(request: Request, call_next: Any) -> Response:
            if request.url.path.endswith(OPEN_PATHS):
                return await call_next(request)
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse({"detail": {
                    "code": "control_key_invalid",
                    "message": "the call server's control API needs its control key"}},
                    status_code=401)
            return await call_next(request)

    def get(pid: str) -> Participant:
        p = server.participant(pid)
        if p is None:
            raise HTTPException(404, "no such participant")
        return p

    @app.post("/v1/meetings/{meeting}/participants")
    async def join(meeting: str, body: Join) -> dict[str, Any]:
        if body.type != "offer":
            raise HTTPException(400, "join with an offer")
        try:
            p, answer = await server.join(meeting, body.sdp, body.participant, body.subscribe)
        except Refused as exc:
            raise HTTPException(503, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(400, f"bad offer: {exc}") from exc
        return {"participant": p.id, "node": server.id, "type": "answer", "sdp": answer}

    @app.post("/v1/participants/{pid}/sdp", response_model=None)
    async def sdp(pid: str, body: Sdp) -> Response | dict[str, Any]:
        """A client offer (publishing more) gets an answer; a client answer completes a server
        offer. 409 on glare: answer the pending server offer first, then offer again."""
        p = get(pid)
        try:
            if body.type == "offer":
                return {"type": "answer", "sdp": await server.offer(pid, body.sdp)}
            if body.type == "answer":
                await p.accept_answer(body.sdp)
                return Response(status_code=204)
        except Glare as exc:
            raise HTTPException(409, "another offer is outstanding") from exc
        raise HTTPException(400, "type must be offer or answer")

    @app.post("/v1/participants/{pid}/publish")
    async def publish(pid: str, body: Publish) -> Response:
        """Ask for m-lines to publish more (e.g. ["video"] for a screen share); they arrive as a
        server offer on the event stream, and the client's answer attaches its tracks."""
        get(pid).request_publish(body.kinds)
        return Response(status_code=202)

    @app.get("/v1/participants/{pid}/events")
    async def events(pid: str, after: int = 0, wait: float = 20.0) -> dict[str, Any]:
        p = get(pid)
        return {"events": await p.wait_events(after, min(wait, 55.0))}

    @app.delete("/v1/participants/{pid}")
    async def leave(pid: str) -> Response:
        if not await server.leave(pid):
            raise HTTPException(404, "no such participant")
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

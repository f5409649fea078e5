"""The ``/live`` HTTP app every broadcast role mounts (docs/broadcast.md has the table).

    POST   /live/{b}/whip               WHIP publish (ingest, `parley up`)
    DELETE /live/{b}/whip/{id}          end that source
    POST   /live/{b}/whep               WHEP play the programme (ingest, `parley up`)
    POST   /live/{b}/{rendition}/whep   WHEP play a rendition (transcoder, edge, `parley up`)
    GET    /live/{b}/whep/{id}          that viewer's session is alive here (players probe it)
    DELETE /live/{b}/whep/{id}          end that viewer
    PATCH  /live/{b}/whip/{id}          trickle ICE (204); ICE restart 422 (trickle.py)
    PATCH  /live/{b}/whep/{id}          405 (WHEP viewers put candidates in the offer)
    OPTIONS any of the above            CORS preflight for browser publishers and players
    GET    /live/{b}                    status: sources, programme, viewers, renditions
    PUT    /live/{b}/program            {"video": "cam2", "audio": ["cam1"]} (admin token)
    PUT    /live/{b}/sources            {"sources": [{"name": "stage", "meeting": "weekly"}]}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .sessions import (
    CORS,
    SessionError,
    bearer,
    options_response,
    patch_response,
    read_offer,
    sdp_response,
)
from .trickle import TRICKLE
from .whep import Playback
from .whip import Ingest, check_name

SOURCE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # as the CRD's


def meeting_entries(raw: Any) -> list[dict[str, Any]]:
    """spec.sources items with a meeting, checked as the CRD checks them (ValueError)."""
    out = []
    if not isinstance(raw, list) or len(raw) > 16:
        raise ValueError("sources: a list of at most 16")
    for e in raw:
        name, meeting, who = e.get("name"), e.get("meeting"), e.get("participant")
        if not (isinstance(name, str) and SOURCE_NAME.match(name) and isinstance(meeting, str)
                and 0 < len(meeting) <= 253 and (who is None or (
                    isinstance(who, str) and 0 < len(who) <= 253))):
            raise ValueError(f"bad source {e!r}")
        out.append({"name": name, "meeting": meeting, "participant": who})
    return out

PREFIX = "/live"


def create_app(playback: Playback, ingest: Ingest | None = None,
               status: Callable[[str], dict[str, Any] | None] | None = None) -> FastAPI:
    """The broadcast routes of one role: ``ingest`` only where sources publish."""
    app = FastAPI(title="Parley live")

    @app.exception_handler(SessionError)
    async def refused(_: Request, exc: SessionError) -> JSONResponse:
        return exc.response()

    @app.middleware("http")
    async def cors(request: Request, call_next: Any) -> Response:
        """Every /live answer is readable from another origin (a watch page served by
        `parley signaling` reads GET /live/{b} here); the routes that set CORS keep theirs."""
        response: Response = await call_next(request)
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        return response

    if ingest is not None:
        @app.post("/{broadcast}/whip")
        async def publish(broadcast: str, request: Request) -> Response:
            name = ingest.admit(broadcast, bearer(request))
            session, sdp = await ingest.publish(broadcast, name, await read_offer(request))
            return sdp_response(sdp, f"{PREFIX}/{broadcast}/whip/{session.id}", session.etag)

        @app.delete("/{broadcast}/whip/{sid}")
        async def unpublish(broadcast: str, sid: str, request: Request) -> Response:
            await ingest.unpublish(broadcast, sid, bearer(request))
            return Response(status_code=200, headers=CORS)

        @app.put("/{broadcast}/program")
        async def program(broadcast: str, request: Request) -> dict[str, Any]:
            try:
                body = await request.json()
                video = body.get("video")
                audio = body.get("audio")
                bad_video = video is not None and not isinstance(video, str)
                bad_audio = audio is not None and (
                    not isinstance(audio, list) or not all(isinstance(a, str) for a in audio))
                if bad_video or bad_audio:
                    raise ValueError
            except Exception as exc:
                raise SessionError(400, "program_invalid", 'send {"video": "<source>", '
                                   '"audio": ["<source>", ...]} as JSON') from exc
            return ingest.set_program(broadcast, bearer(request), video, audio).status()

        @app.put("/{broadcast}/sources")
        async def sources(broadcast: str, request: Request) -> dict[str, Any]:
            """Meeting sources (spec.sources[] with a meeting) where no apiserver gives them."""
            token = bearer(request)
            ingest.authorize(broadcast, token, "admin")  # before the body is read
            try:
                entries = meeting_entries((await request.json())["sources"])
            except Exception as exc:
                raise SessionError(400, "sources_invalid", 'send {"sources": [{"name": '
                                   '"stage", "meeting": "<meeting>", "participant": '
                                   '"<optional>"}]}') from exc
            await ingest.set_meetings(broadcast, token, entries)
            return status(broadcast) or {}

    @app.post("/{broadcast}/whep")
    async def play(broadcast: str, request: Request) -> Response:
        return await _play(broadcast, None, request)

    @app.post("/{broadcast}/{rendition}/whep")
    async def play_rendition(broadcast: str, rendition: str, request: Request) -> Response:
        return await _play(broadcast, rendition, request)

    async def _play(broadcast: str, rendition: str | None, request: Request) -> Response:
        check_name(broadcast)
        offer = await read_offer(request)
        session, sdp = await playback.play(broadcast, rendition, offer)
        return sdp_response(sdp, f"{PREFIX}/{broadcast}/whep/{session.id}", session.etag)

    @app.get("/{broadcast}/whep/{sid}")
    async def viewing(broadcast: str, sid: str) -> dict[str, Any]:
        """Is this WHEP session alive here? A player whose video stopped asks: 200 means the
        edge is up and the gap is upstream (stay), anything else means move to another edge."""
        session = playback.sessions.get(sid)
        if session is None or session.broadcast != broadcast:
            raise SessionError(404, "session_unknown", "no such WHEP session")
        return {"id": sid, "rendition": session.rendition,
                "connection": session.pc.connectionState}

    @app.delete("/{broadcast}/whep/{sid}")
    async def stop(broadcast: str, sid: str) -> Response:
        # the session id is the unguessable capability (draft-ietf-wish-whep section 4.2)
        session = playback.sessions.get(sid)
        if session is None or session.broadcast != broadcast:
            raise SessionError(404, "session_unknown", "no such WHEP session")
        await playback.stop(sid)
        return Response(status_code=200, headers=CORS)

    @app.patch("/{broadcast}/{kind}/{sid}")
    async def patch(broadcast: str, kind: str, sid: str, request: Request) -> Response:
        if kind != "whip" or ingest is None:
            return patch_response()
        session = ingest.owned(broadcast, sid, bearer(request))  # before the body is read
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        await ingest.trickle(session, ctype, request.headers.get("if-match"),
                             await request.body())
        return Response(status_code=204, headers={**CORS, "ETag": f'"{session.etag}"'})

    @app.options("/{path:path}")
    async def preflight(path: str) -> Response:
        out = options_response()
        if ingest is not None and "/whip/" in f"/{path}":
            out.headers["Accept-Patch"] = TRICKLE
        return out

    @app.get("/{broadcast}")
    async def get_status(broadcast: str) -> dict[str, Any]:
        check_name(broadcast)
        out = status(broadcast) if status is not None else None
        if out is None:
            raise SessionError(404, "broadcast_unknown", f"no broadcast {broadcast} here")
        return out

    return app

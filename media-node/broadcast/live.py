"""The ``/live`` HTTP app every broadcast role mounts (docs/broadcast.md has the table).

    POST   /live/{b}/whip               WHIP publish (ingest, `parley up`)
    DELETE /live/{b}/whip/{id}          end that source
    POST   /live/{b}/whep               WHEP play the programme (ingest, `parley up`)
    POST   /live/{b}/{rendition}/whep   WHEP play a rendition (transcoder, edge, `parley up`)
    DELETE /live/{b}/whep/{id}          end that viewer
    PATCH  .../{id}                     405 (no trickle ICE: candidates go in the offer)
    OPTIONS any of the above            CORS preflight for browser publishers and players
    GET    /live/{b}                    status: sources, programme, viewers, renditions
    PUT    /live/{b}/program            {"video": "cam2", "audio": ["cam1"]} (admin token)
"""

from __future__ import annotations

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
from .whep import Playback
from .whip import Ingest, check_name

PREFIX = "/live"


def create_app(playback: Playback, ingest: Ingest | None = None,
               status: Callable[[str], dict[str, Any] | None] | None = None) -> FastAPI:
    """The broadcast routes of one role: ``ingest`` only where sources publish."""
    app = FastAPI(title="Parley live")

    @app.exception_handler(SessionError)
    async def refused(_: Request, exc: SessionError) -> JSONResponse:
        return exc.response()

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

    @app.delete("/{broadcast}/whep/{sid}")
    async def stop(broadcast: str, sid: str) -> Response:
        # the session id is the unguessable capability (draft-ietf-wish-whep section 4.2)
        session = playback.sessions.get(sid)
        if session is None or session.broadcast != broadcast:
            raise SessionError(404, "session_unknown", "no such WHEP session")
        await playback.stop(sid)
        return Response(status_code=200, headers=CORS)

    @app.patch("/{broadcast}/{kind}/{sid}")
    async def patch(broadcast: str, kind: str, sid: str) -> Response:
        return patch_response()

    @app.options("/{path:path}")
    async def preflight(path: str) -> Response:
        return options_response()

    @app.get("/{broadcast}")
    async def get_status(broadcast: str) -> dict[str, Any]:
        check_name(broadcast)
        out = status(broadcast) if status is not None else None
        if out is None:
            raise SessionError(404, "broadcast_unknown", f"no broadcast {broadcast} here")
        return out

    return app

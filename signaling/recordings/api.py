"""The recordings REST API: start/stop (``record`` grant), list and download (``record`` or
``admin``, or having been in the meeting; ``access.py``). Refusals are 4xx with a JSON body."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Header, HTTPException
from fastapi.responses import FileResponse, Response

from parley.recorder import links, state
from parley.signaling.recordings import access, playback
from parley.signaling.recordings.lifecycle import Recordings


def router(rec: Recordings) -> APIRouter:
    secret = rec.settings.token_secret
    api = APIRouter()

    @api.post("/api/v1/rooms/{room}/recording")
    async def control(room: str, body: dict[str, Any] = Body(...),  # noqa: B008
                      authorization: str | None = Header(None)) -> dict[str, Any]:
        who = access.authorize(secret, access.bearer(authorization), room, "record")
        action = body.get("action")
        if action == "start":
            return rec.public(await rec.start(room, who.identity))
        if action == "stop":
            return rec.public(await rec.stop(room, who.identity))
        raise HTTPException(400, {"code": "bad_request",
                                  "message": "action must be 'start' or 'stop'"})

    @api.get("/api/v1/recordings")
    async def listing(room: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        who = access.authorize(secret, access.bearer(authorization), room, None)
        found = [m for m in await rec.for_room(room) if access.may_view(who, m)]
        if not found and not who.allows(access.VIEW_GRANT):
            raise access.not_a_participant(room)
        return {"recordings": [rec.public(m) for m in found]}

    @api.get("/api/v1/recordings/{recording}/files/{name:path}", response_model=None)
    async def download(recording: str, name: str, expires: int = 0, sig: str = "",
                       token: str | None = None,
                       authorization: str | None = Header(None)) -> Response:
        """A signed link from the API or ``recording.ready``, fetched with the token of
        someone who may see the recording (header, or ``token=`` for a plain link). A
        broadcast archive's HLS playlists come back with every URI in them signed likewise
        (``playback.py``), so a player plays it through this API and nothing else."""
        try:
            links.check(secret, recording, name, expires, sig)
        except links.LinkError as exc:
            raise HTTPException(403, {"code": exc.code, "message": str(exc)}) from None
        if not playback.file_name(name):
            raise HTTPException(404, {"code": "not_found", "message": "no such file"})
        try:
            manifest = await asyncio.to_thread(state.load, rec.store, recording)
        except KeyError:
            raise HTTPException(404, {"code": "not_found",
                                      "message": "no such recording"}) from None
        who = access.authorize(secret, access.bearer(authorization, token), manifest["room"],
                               None)
        if not access.may_view(who, manifest):
            raise access.not_a_participant(manifest["room"])
        key = f"recordings/{recording}/files/{name}"
        media, cache = playback.content_type(name), playback.cache_control(name)
        if name.endswith(".m3u8"):
            try:
                text = (await asyncio.to_thread(rec.store.get, key)).decode()
            except KeyError:
                raise HTTPException(404, {"code": "not_found",
                                          "message": "no such file"}) from None
            body = playback.signed_playlist(text, secret, recording, name, expires, token)
            return Response(body, media_type=media, headers={"Cache-Control": cache})
        path = rec.store.local_path(key)
        if path is not None:
            if not path.is_file():
                raise HTTPException(404, {"code": "not_found", "message": "no such file"})
            return FileResponse(path, media_type=media, headers={"Cache-Control": cache},
                                filename=name.rsplit("/", 1)[-1])
        try:
            data = await asyncio.to_thread(rec.store.get, key)
        except KeyError:
            raise HTTPException(404, {"code": "not_found", "message": "no such file"}) from None
        return Response(data, media_type=media, headers={"Cache-Control": cache})

    return api

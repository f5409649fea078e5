"""Recording API and orchestration on signaling (docs/recording.md).

Signaling starts and stops the call server's tap for a room, has the file creator run when a
recording stops, and tells people: a ``recording.started`` / ``recording.ready`` WebSocket message
to every participant (with signed, expiring links) and a signed webhook for integrations. All
recording state lives in the recording store, so any replica can answer for any recording.

Where the file creator runs is ``Settings.file_creator``: ``inline`` compiles on a worker thread
(``parley up``); ``job`` leaves a ``pending/<id>`` marker for the operator, which runs a
Kubernetes Job, and only watches the manifest to notify when it turns ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, Body, Header, HTTPException
from fastapi.responses import FileResponse, Response

from parley import tokens
from parley.config import Settings
from parley.recorder import job, links, state, webhook
from parley.recorder.store import default_store_url, open_store
from parley.signaling.switching import move_room_to_call_server

if TYPE_CHECKING:
    from parley.signaling.hub import Hub

log = logging.getLogger("parley.signaling.recordings")


def _num(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


# A Job may take activeDeadlineSeconds (1 h) times four attempts; past that, stop watching (the
# operator marks a Job that gave up as failed, so this only bounds a watcher if it never does).
JOB_WATCH_LIMIT_S = 6 * 3600


class Recordings:
    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self.store = open_store(default_store_url(settings.data_dir))
        self.chunk_s = _num("PARLEY_RECORDING_CHUNK_S", 2.0)
        self.link_ttl_s = int(_num("PARLEY_RECORDING_LINK_TTL_S", 24 * 3600))
        self.fps = int(_num("PARLEY_RECORDING_FPS", 15))
        self.webhook_url = os.environ.get("PARLEY_RECORDING_WEBHOOK_URL") or None
        self.webhook_secret = os.environ.get("PARLEY_RECORDING_WEBHOOK_SECRET") or ""
        self.watch_s = _num("PARLEY_RECORDING_WATCH_S", 2.0)
        self.jobs: set[asyncio.Task[None]] = set()

    # -- helpers -------------------------------------------------------------------------
    def authorize(self, authorization: str | None, room: str, grant: str | None) -> \
            tokens.AccessToken:
        token = (authorization or "").removeprefix("Bearer ").strip()
        try:
            access = tokens.verify(self.settings.token_secret, token, room=room)
            if grant:
                access.require(grant)
        except tokens.TokenError as exc:
            status = 403 if exc.code == "grant_missing" else 401
            message = str(exc) + (" (ask the meeting host for a token with the record grant)"
                                  if exc.code == "grant_missing" else "")
            raise HTTPException(status, {"code": exc.code, "message": message}) from None
        return access

    async def _save(self, manifest: dict[str, Any]) -> None:
        await asyncio.to_thread(state.save, self.store, manifest)

    async def _members(self, room: str) -> list[str]:
        return list(await self.hub.rooms.members(room))

    async def _tell(self, identities: list[str], msg: dict[str, Any]) -> None:
        for identity in dict.fromkeys(identities):
            await self.hub.presence.deliver(identity, msg)

    def public(self, m: dict[str, Any]) -> dict[str, Any]:
        """The API shape: signed links for whatever files exist."""
        base = self.settings.public_url or ""
        out = {k: m.get(k) for k in ("id", "room", "state", "startedAt", "stoppedAt",
                                     "progress", "error", "duration")}
        out["compositeUrl"], out["tracks"], out["expiresAt"] = None, [], None
        files = m.get("files")
        if files:
            url, exp = links.link(self.settings.token_secret, m["id"], files["composite"],
                                  self.link_ttl_s, base=base)
            out["compositeUrl"], out["expiresAt"] = url, exp
            out["tracks"] = [{**{k: t[k] for k in ("participant", "track", "kind", "codec")},
                              "url": links.link(self.settings.token_secret, m["id"], t["file"],
                                                self.link_ttl_s, base=base)[0]}
                             for t in files["tracks"]]
        return out

    # -- start / stop --------------------------------------------------------------------
    async def start(self, room: str, by: str) -> dict[str, Any]:
        active = await self.hub.store.get(f"recording:active:{room}")
        if active:
            return await asyncio.to_thread(state.load, self.store, active)
        placement = await self.hub.directory.place(room, 1, [])
        if placement is None:
            raise HTTPException(503, {"code": "no_call_server",
                                      "message": "recording needs a call server; none is "
                                                 "available"})
        manifest = state.new(room, by)
        manifest.update(node=placement.node, nodeUrl=placement.url, nodes=[placement.url],
                        participants=await self._members(room))
        if not await self._tap(placement.url, room, manifest["id"], "start"):
            raise HTTPException(502, {"code": "call_server_error",
                                      "message": "the call server did not start recording"})
        await self._save(manifest)
        await self.hub.store.set(f"recording:active:{room}", manifest["id"], ttl_s=24 * 3600)
        # Recording goes through the call server: a peer-to-peer room moves there now, without
        # anyone rejoining (a room already on a call server stays where it is).
        await move_room_to_call_server(self.hub, room, reason="recording")
        await self._tell(manifest["participants"], {
            "type": "recording.started", "room": room, "recording": manifest["id"], "by": by})
        self._spawn(self._watch(room, manifest["id"], manifest["nodeUrl"]))
        return manifest

    def _spawn(self, coro: Any) -> None:
        job = asyncio.create_task(coro)
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)

    async def _node_meeting(self, node_url: str, room: str) -> list[str] | None:
        """Participants of the meeting on that call server; None if the node is unreachable."""
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                status = (await client.get(f"{node_url}/v1/status")).json()
        except (httpx.HTTPError, ValueError):
            return None
        return list(status.get("participant_ids", {}).get(room, []))

    async def _tap(self, url: str, room: str, recording: str, action: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=15) as client:
                r = await client.post(f"{url}/v1/meetings/{room}/recording", json={
                    "action": action, "id": recording, "store": self.store.url,
                    "chunk_s": self.chunk_s})
            return r.status_code == 200
        except httpx.HTTPError as exc:
            log.warning("recording %s: %s on %s failed (%s)", recording, action, url, exc)
            return False

    async def _follow(self, room: str, recording: str, lost: str) -> str | None:
        """The node died: start a tap where the room is placed now, so media of participants
        who rejoin there goes on into the same recording (as a new run)."""
        placement = await self.hub.directory.place(room, 1, [])
        if placement is None or placement.url == lost:
            return None
        if not await self._tap(placement.url, room, recording, "start"):
            return None
        manifest = await asyncio.to_thread(state.load, self.store, recording)
        manifest.update(node=placement.node, nodeUrl=placement.url,
                        nodes=[*manifest.get("nodes", []), placement.url], nodeLost=True)
        await self._save(manifest)
        log.info("recording %s: follows room %s to %s", recording, room, placement.node)
        return placement.url

    async def _watch(self, room: str, recording: str, node_url: str) -> None:
        """While recording: follow the room to a new node if its node dies, and stop by itself
        when the meeting ended - nobody in the room on signaling and nobody in the meeting on
        the call server, twice in a row - so a recording is never left running (or stuck in
        "recording") because nobody pressed stop."""
        idle = 0
        while await self.hub.store.get(f"recording:active:{room}") == recording:
            await asyncio.sleep(self.watch_s)
            present = await self._node_meeting(node_url, room)
            if present is None:
                node_url = await self._follow(room, recording, node_url) or node_url
            empty = not present and not await self._members(room)
            idle = idle + 1 if empty else 0
            if idle >= 2 and await self.hub.store.get(f"recording:active:{room}") == recording:
                log.info("recording %s: meeting ended, stopping", recording)
                with contextlib.suppress(HTTPException):
                    await self.stop(room, "auto")
                return

    async def stop(self, room: str, by: str) -> dict[str, Any]:
        active = await self.hub.store.get(f"recording:active:{room}")
        if not active:
            raise HTTPException(409, {"code": "not_recording",
                                      "message": f"room '{room}' is not being recorded"})
        await self.hub.store.delete(f"recording:active:{room}")
        manifest = await asyncio.to_thread(state.load, self.store, active)
        # every node that tapped this recording flushes; a dead one cannot, and its sealed
        # chunks are already in the store
        results = [await self._tap(url, room, active, "stop")
                   for url in dict.fromkeys(manifest.get("nodes", [manifest["nodeUrl"]]))]
        manifest["nodeLost"] = manifest.get("nodeLost", False) or not all(results)
        manifest.update(state="processing", stoppedAt=time.time(), stoppedBy=by,
                        participants=list(dict.fromkeys(
                            manifest["participants"] + await self._members(room))))
        await self._save(manifest)
        await self._tell(manifest["participants"], {
            "type": "recording.stopped", "room": room, "recording": active})
        if self.settings.file_creator == "job":
            await asyncio.to_thread(state.mark_pending, self.store, active)
            self._spawn(self._await_job(active))
        else:
            self._spawn(self._compile(manifest))
        return manifest

    async def _compile(self, manifest: dict[str, Any]) -> None:
        """Run the file creator (``parley.recorder.job``) off the event loop, then notify."""
        manifest = await asyncio.to_thread(job.compile_recording, self.store, manifest["id"],
                                           fps=self.fps)
        await self._notify(manifest)

    async def _await_job(self, recording: str, every_s: float = 1.0) -> None:
        """Poll the manifest the operator's Job writes until it is ready or failed, then notify
        exactly as the inline path does. The store is the only channel: no event to miss."""
        deadline = time.monotonic() + JOB_WATCH_LIMIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(every_s)
            try:
                manifest = await asyncio.to_thread(state.load, self.store, recording)
            except Exception as exc:  # a store hiccup: the next poll will tell
                log.warning("recording %s: reading the manifest failed (%s)", recording, exc)
                continue
            if manifest["state"] in state.DONE:
                await self._notify(manifest)
                return
        log.warning("recording %s: no file creator finished within %d s; not notifying",
                    recording, JOB_WATCH_LIMIT_S)

    async def _notify(self, manifest: dict[str, Any]) -> None:
        """``recording.ready`` to every participant and the webhook; nothing for a failure."""
        if manifest["state"] != "ready":
            return
        public = self.public(manifest)
        await self._tell(manifest["participants"], {"type": "recording.ready", **public})
        if self.webhook_url:
            await webhook.send(self.webhook_url, self.webhook_secret,
                               {"type": "recording.ready", **public})


def router(settings: Settings, hub: Hub) -> APIRouter:
    rec = Recordings(settings, hub)
    api = APIRouter()
    hub.recordings = rec  # type: ignore[attr-defined]

    @api.post("/api/v1/rooms/{room}/recording")
    async def control(room: str, body: dict[str, Any] = Body(...),  # noqa: B008
                      authorization: str | None = Header(None)) -> dict[str, Any]:
        access = rec.authorize(authorization, room, "record")
        action = body.get("action")
        if action == "start":
            return rec.public(await rec.start(room, access.identity))
        if action == "stop":
            return rec.public(await rec.stop(room, access.identity))
        raise HTTPException(400, {"code": "bad_request",
                                  "message": "action must be 'start' or 'stop'"})

    @api.get("/api/v1/recordings")
    async def listing(room: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        rec.authorize(authorization, room, None)
        found = await asyncio.to_thread(state.for_room, rec.store, room)
        return {"recordings": [rec.public(m) for m in found]}

    @api.get("/api/v1/recordings/{recording}/files/{name}", response_model=None)
    async def download(recording: str, name: str, expires: int = 0,
                       sig: str = "") -> Response:
        try:
            links.check(settings.token_secret, recording, name, expires, sig)
        except links.LinkError as exc:
            raise HTTPException(403, {"code": exc.code, "message": str(exc)}) from None
        key = f"recordings/{recording}/files/{name}"
        media = "video/mp4" if name.endswith(".mp4") else "video/webm"
        path = rec.store.local_path(key)
        if path is not None:
            if not path.is_file():
                raise HTTPException(404, {"code": "not_found", "message": "no such file"})
            return FileResponse(path, media_type=media, filename=name)
        try:
            data = await asyncio.to_thread(rec.store.get, key)
        except KeyError:
            raise HTTPException(404, {"code": "not_found", "message": "no such file"}) from None
        return Response(data, media_type=media)

    return api

"""Recording API and orchestration on signaling (docs/recording.md).

Signaling starts and stops the call server's tap for a room, has the file creator run when a
recording stops, and tells people: a ``recording.started`` / ``recording.ready`` WebSocket message
to every participant (with signed, expiring links) and a signed webhook for integrations. All
recording state lives in the recording store, so any replica can answer for any recording.

Where the file creator runs is ``Settings.file_creator``: ``inline`` compiles on a worker thread
(``parley up``); ``job`` leaves a ``pending/<id>`` marker for the operator, which runs a
Kubernetes Job, and only watches the manifest to notify when it turns ``ready``.

The background work of a recording (the watcher while it records, compiling or waiting for the
Job and notifying after it stops) belongs to no replica in particular: ``recordings:live`` in
the signaling store lists every unfinished recording with its phase, a replica works on a phase
only while it holds the phase's owner lease, and every replica's sweeper takes over the phases
whose owner died (level-triggered, so a replica that dies loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import APIRouter, Body, Header, HTTPException
from fastapi.responses import FileResponse, Response

from parley import tokens
from parley.config import Settings
from parley.directory import active_recording
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
# recording id -> {"room", "phase": "recording"|"processing", "nodeUrl"[, "by"]}, until notified
LIVE = "recordings:live"
PHASES = ("recording", "processing")


def _owner(recording: str, phase: str) -> str:
    return f"recording:owner:{recording}:{phase}"


def _entry(raw: str) -> dict[str, str]:
    """A ``recordings:live`` value, checked (ValueError otherwise)."""
    entry = json.loads(raw)
    if not (isinstance(entry, dict) and entry.get("phase") in PHASES
            and isinstance(entry.get("room"), str) and isinstance(entry.get("nodeUrl"), str)):
        raise ValueError(f"malformed entry {raw!r}")
    return entry


class Recordings:
    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self.store = open_store(default_store_url(settings.data_dir))
        self.control = tokens.control_headers(settings.token_secret)  # call servers' API
        self.chunk_s = _num("PARLEY_RECORDING_CHUNK_S", 2.0)
        self.link_ttl_s = int(_num("PARLEY_RECORDING_LINK_TTL_S", 24 * 3600))
        self.fps = int(_num("PARLEY_RECORDING_FPS", 15))
        hook = webhook.from_env()  # a URL without a secret refuses to start
        self.webhook_url = hook.url if hook else None
        self.webhook_secret = hook.secret if hook else ""
        self.watch_s = _num("PARLEY_RECORDING_WATCH_S", 2.0)
        self.lease_s = 3 * self.watch_s  # an owner lease outlives two missed renewals
        self.jobs: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

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
        active = await self.hub.store.get(active_recording(room))
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
        await self.hub.store.set(active_recording(room), manifest["id"], ttl_s=24 * 3600)
        await self._take(manifest["id"], "recording",
                         partial(self._watch, room, manifest["id"], placement.url),
                         {"room": room, "nodeUrl": placement.url})
        # Recording goes through the call server: a peer-to-peer room moves there now, without
        # anyone rejoining (a room already on a call server stays where it is).
        await move_room_to_call_server(self.hub, room, reason="recording")
        await self._tell(manifest["participants"], {
            "type": "recording.started", "room": room, "recording": manifest["id"], "by": by})
        return manifest

    # -- ownership: who works on which recording -----------------------------------------
    async def open(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        """Stop the sweeper and this replica's work; the leases are released on the way out,
        so another replica takes over at its next sweep instead of after the lease TTL."""
        tasks = [t for t in (self._sweeper, *self.jobs) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _take(self, recording: str, phase: str, work: Callable[[], Awaitable[Any]],
                    entry: dict[str, str] | None = None) -> bool:
        """Run ``work`` in the background as the owner of this phase of the recording, unless
        a replica already is. ``entry`` (start, stop) moves the recording into the phase in
        ``recordings:live``, after the lease is taken so no sweeper can take it in between."""
        if not await self.hub.store.set_nx(_owner(recording, phase), self.hub.instance,
                                           self.lease_s):
            return False
        if entry is not None:
            await self.hub.store.hset(LIVE, recording, json.dumps({**entry, "phase": phase}))
        elif (await self._live(recording) or {}).get("phase") != phase:
            # its owner finished it (and released the lease) while this sweep was reading
            await self.hub.store.delete_if(_owner(recording, phase), self.hub.instance)
            return False
        job = asyncio.create_task(self._owned(recording, phase, work))
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)
        return True

    async def _owned(self, recording: str, phase: str, work: Callable[[], Awaitable[Any]]) \
            -> None:
        key = _owner(recording, phase)
        keeper = asyncio.create_task(self._keep(key, asyncio.current_task()))
        try:
            await work()
        except Exception:
            log.exception("recording %s: %s failed", recording, phase)
        finally:
            keeper.cancel()
            with contextlib.suppress(Exception):  # else it expires after the TTL
                await self.hub.store.delete_if(key, self.hub.instance)

    async def _keep(self, key: str, owner: asyncio.Task[Any] | None) -> None:
        """Renew the lease every TTL/3; if another replica holds it now (this one stalled past
        the TTL), stop working rather than work twice."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                ours = await self.hub.store.expire_if(key, self.hub.instance, self.lease_s) \
                    or await self.hub.store.set_nx(key, self.hub.instance, self.lease_s)
            except Exception as exc:  # a store hiccup: the next renewal may do
                log.warning("renewing %s failed (%s)", key, exc)
                continue
            if not ours:
                log.warning("%s is held by another replica now; leaving the work to it", key)
                if owner is not None:
                    owner.cancel()
                return

    async def _sweep(self) -> None:
        """Every watch interval, take over what no live replica owns."""
        while True:
            try:
                await self._adopt()
            except Exception:
                log.exception("recording sweep failed")
            await asyncio.sleep(self.watch_s)

    async def _adopt(self) -> None:
        for recording, raw in (await self.hub.store.hgetall(LIVE)).items():
            try:
                entry = _entry(raw)
            except ValueError:
                log.warning("recording %s: dropping malformed %s entry %r", recording, LIVE, raw)
                await self.hub.store.hdel(LIVE, recording)
                continue
            phase = entry["phase"]
            work = partial(self._watch, entry["room"], recording, entry["nodeUrl"]) \
                if phase == "recording" else \
                partial(self._process, recording, entry.get("by") or "auto")
            if await self._take(recording, phase, work):
                log.info("recording %s: took over %s", recording, phase)

    async def _live(self, recording: str) -> dict[str, str] | None:
        raw = await self.hub.store.hget(LIVE, recording)
        with contextlib.suppress(ValueError):
            return _entry(raw) if raw else None
        return None

    async def _node_meeting(self, node_url: str, room: str) -> list[str] | None:
        """Participants of the meeting on that call server; None if the node is unreachable."""
        try:
            async with httpx.AsyncClient(timeout=5, headers=self.control) as client:
                r = await client.get(f"{node_url}/v1/status")
                r.raise_for_status()
                status = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        return list(status.get("participant_ids", {}).get(room, []))

    async def _tap(self, url: str, room: str, recording: str, action: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=15, headers=self.control) as client:
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
                        nodes=list(dict.fromkeys([*manifest.get("nodes", []), placement.url])),
                        nodeLost=True)
        await self._save(manifest)
        log.info("recording %s: follows room %s to %s", recording, room, placement.node)
        return placement.url

    async def _watch(self, room: str, recording: str, node_url: str) -> None:
        """While recording: follow the room to a new node if its node dies, and stop by itself
        when the meeting ended - nobody in the room on signaling and nobody in the meeting on
        the call server, twice in a row - so a recording is never left running (or stuck in
        "recording") because nobody pressed stop."""
        idle = 0
        while idle < 2 and await self.hub.store.get(active_recording(room)) == recording:
            await asyncio.sleep(self.watch_s)
            present = await self._node_meeting(node_url, room)
            if present is None:
                node_url = await self._follow(room, recording, node_url) or node_url
            empty = not present and not await self._members(room)
            idle = idle + 1 if empty else 0
        # Stopped by someone: the entry says processing. Still "recording": the meeting ended,
        # or the room's active key is gone without a stop (its 24 h ran out).
        if (await self._live(recording) or {}).get("phase") == "recording":
            log.info("recording %s: meeting ended or no longer active, stopping", recording)
            with contextlib.suppress(HTTPException):
                await self._stop(recording, room, "auto")

    async def stop(self, room: str, by: str) -> dict[str, Any]:
        active = await self.hub.store.get(active_recording(room))
        if not active:
            raise HTTPException(409, {"code": "not_recording",
                                      "message": f"room '{room}' is not being recorded"})
        return await self._stop(active, room, by)

    async def _stop(self, recording: str, room: str, by: str) -> dict[str, Any]:
        """Move the recording to processing; the owner of that phase halts the taps, and this
        returns its manifest once it has."""
        halted: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry = {"room": room, "nodeUrl": "", **(await self._live(recording) or {}), "by": by}
        if not await self._take(recording, "processing",
                                partial(self._process, recording, by, halted), entry):
            raise HTTPException(409, {"code": "not_recording",
                                      "message": f"room '{room}' is being stopped already"})
        return await halted

    async def _process(self, recording: str, by: str,
                       halted: asyncio.Future[dict[str, Any]] | None = None) -> None:
        """Everything after stop, from wherever a dead replica left it: halt the taps if that
        did not happen yet, compile (inline) or wait for the Job, notify, then leave
        ``recordings:live``. A crash after the notification and before that repeats it."""
        try:
            manifest = await asyncio.to_thread(state.load, self.store, recording)
            if manifest["state"] == "recording":
                manifest = await self._halt(manifest, by)
            if halted is not None:
                halted.set_result(manifest)
        except Exception as exc:
            if isinstance(exc, KeyError):  # no manifest in this store: nothing can finish it
                await self.hub.store.hdel(LIVE, recording)
            if halted is not None:
                halted.set_exception(exc)
            raise
        finally:
            if halted is not None and not halted.done():  # cancelled (shutdown, lease lost)
                halted.cancel()
        if manifest["state"] == "processing":
            manifest = await (self._await_job(recording) if self.settings.file_creator == "job"
                              else self._compile(recording))
        await self._notify(manifest)
        await self.hub.store.hdel(LIVE, recording)

    async def _halt(self, manifest: dict[str, Any], by: str) -> dict[str, Any]:
        room, recording = manifest["room"], manifest["id"]
        await self.hub.store.delete_if(active_recording(room), recording)
        # every node that tapped this recording flushes; a dead one cannot, and its sealed
        # chunks are already in the store
        results = [await self._tap(url, room, recording, "stop")
                   for url in dict.fromkeys(manifest.get("nodes", [manifest["nodeUrl"]]))]
        manifest["nodeLost"] = manifest.get("nodeLost", False) or not all(results)
        manifest.update(state="processing", stoppedAt=time.time(), stoppedBy=by,
                        participants=list(dict.fromkeys(
                            manifest["participants"] + await self._members(room))))
        await self._save(manifest)
        await self._tell(manifest["participants"], {
            "type": "recording.stopped", "room": room, "recording": recording})
        if self.settings.file_creator == "job":
            await asyncio.to_thread(state.mark_pending, self.store, recording)
        return manifest

    async def _compile(self, recording: str) -> dict[str, Any]:
        """Run the file creator (``parley.recorder.job``) off the event loop. Running it again
        after a replica died mid-way rewrites the same files."""
        return await asyncio.to_thread(job.compile_recording, self.store, recording,
                                       fps=self.fps)

    async def _await_job(self, recording: str, every_s: float = 1.0) -> dict[str, Any] | None:
        """Poll the manifest the operator's Job writes until it is ready or failed. The store
        is the only channel: no event to miss."""
        deadline = time.monotonic() + JOB_WATCH_LIMIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(every_s)
            try:
                manifest = await asyncio.to_thread(state.load, self.store, recording)
            except Exception as exc:  # a store hiccup: the next poll will tell
                log.warning("recording %s: reading the manifest failed (%s)", recording, exc)
                continue
            if manifest["state"] in state.DONE:
                return manifest
        log.warning("recording %s: no file creator finished within %d s; not notifying",
                    recording, JOB_WATCH_LIMIT_S)
        return None

    async def _notify(self, manifest: dict[str, Any] | None) -> None:
        """``recording.ready`` to every participant and the webhook; nothing for a failure."""
        if manifest is None or manifest["state"] != "ready":
            return
        public = self.public(manifest)
        await self._tell(manifest["participants"], {"type": "recording.ready", **public})
        if self.webhook_url:
            await webhook.send(self.webhook_url, self.webhook_secret,
                               {"type": "recording.ready", **public})


def router(rec: Recordings) -> APIRouter:
    settings = rec.settings
    api = APIRouter()

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

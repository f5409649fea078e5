"""A recording's life on signaling: start the tap, watch the meeting (follow a dead node, stop
when the meeting ends), stop, have the file creator run, notify (docs/recording.md).

Where the file creator runs is ``Settings.file_creator``: ``inline`` compiles on a worker thread
(``parley up``); ``job`` leaves a ``pending/<id>`` marker for the operator, which runs a
Kubernetes Job, and only watches the manifest to notify when it turns ``ready``. All recording
state lives in the recording store, so any replica can answer for any recording; which replica
works on what is ``leases.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from parley import tokens
from parley.config import Settings
from parley.directory import active_recording
from parley.events import make_event
from parley.recorder import job, state
from parley.recorder.store import default_store_url, open_store
from parley.signaling.recordings.leases import PhaseLeases, Work
from parley.signaling.recordings.notify import Notifier
from parley.signaling.recordings.tap import TapClient
from parley.signaling.switching import move_room_to_call_server

if TYPE_CHECKING:
    from parley.signaling.hub import Hub

log = logging.getLogger("parley.signaling.recordings")

# A Job may take activeDeadlineSeconds (1 h) times four attempts; past that, stop watching (the
# operator marks a Job that gave up as failed, so this only bounds a watcher if it never does).
JOB_WATCH_LIMIT_S = 6 * 3600
ACTIVE_TTL_S = 24 * 3600


def _num(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def joined_key(recording: str) -> str:
    """Identities who joined the room while it was recorded (merged into the manifest's
    ``participants`` on stop: they may list and download it)."""
    return f"recording:joined:{recording}"


class Recordings:
    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.hub = hub
        self.store = open_store(default_store_url(settings.data_dir))
        self.chunk_s = _num("PARLEY_RECORDING_CHUNK_S", 2.0)
        self.fps = int(_num("PARLEY_RECORDING_FPS", 15))
        self.watch_s = _num("PARLEY_RECORDING_WATCH_S", 2.0)
        self.lease_s = 3 * self.watch_s  # an owner lease outlives two missed renewals
        self.notifier = Notifier(settings, hub, int(_num("PARLEY_RECORDING_LINK_TTL_S",
                                                         24 * 3600)))
        self.tap = TapClient(tokens.control_headers(settings.token_secret))  # call servers' API
        self.leases = PhaseLeases(hub.store, hub.instance, self.lease_s, self.watch_s,
                                  self._adopted)
        self.public = self.notifier.public

    async def open(self) -> None:
        self.leases.open()

    async def close(self) -> None:
        await self.leases.close()
        await self.tap.close()

    def _adopted(self, recording: str, entry: dict[str, str]) -> Work:
        """The work of a phase whose owner died."""
        if entry["phase"] == "recording":
            return partial(self._watch, entry["room"], recording, entry["nodeUrl"])
        return partial(self._process, recording, entry.get("by") or "auto")

    # -- helpers -------------------------------------------------------------------------
    async def _save(self, manifest: dict[str, Any]) -> None:
        await asyncio.to_thread(state.save, self.store, manifest)

    def _event(self, etype: str, manifest: dict[str, Any], **data: Any) -> None:
        """A recording.* analytics event. Its id is the recording's and the type's, so one that
        a takeover emits again (a crash after it, before the phase ended) is counted once."""
        try:
            self.hub.events.emit(make_event(
                etype, instance=self.hub.instance, room=manifest["room"],
                event_id=f"{etype}:{manifest['id']}",
                data={"recording": manifest["id"], **data}))
        except Exception:
            log.exception("event %s dropped", etype)

    async def _members(self, room: str) -> list[str]:
        return list(await self.hub.rooms.members(room))

    async def _tap(self, url: str, room: str, recording: str, action: str) -> bool:
        return await self.tap.tap(url, room, recording, action, self.store.url, self.chunk_s)

    async def for_room(self, room: str) -> list[dict[str, Any]]:
        """Every recording of the room; the one running now counts whoever is in the room
        as a participant (they are in the meeting being recorded)."""
        found = await asyncio.to_thread(state.for_room, self.store, room)
        running = [m for m in found if m.get("state") == "recording"]
        if running:
            members = await self._members(room)
            for m in running:
                m["participants"] = list(dict.fromkeys([*m.get("participants", []),
                                                        *members]))
        return found

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
        await self.hub.store.set(active_recording(room), manifest["id"], ttl_s=ACTIVE_TTL_S)
        await self.leases.take(manifest["id"], "recording",
                               partial(self._watch, room, manifest["id"], placement.url),
                               {"room": room, "nodeUrl": placement.url})
        # Recording goes through the call server: a peer-to-peer room moves there now, without
        # anyone rejoining (a room already on a call server stays where it is).
        await move_room_to_call_server(self.hub, room, reason="recording")
        await self.notifier.tell(manifest["participants"], {
            "type": "recording.started", "room": room, "recording": manifest["id"], "by": by})
        self._event("recording.started", manifest, by=by, node=placement.node)
        return manifest

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
        entry = {"room": room, "nodeUrl": "", **(await self.leases.live(recording) or {}),
                 "by": by}
        if not await self.leases.take(recording, "processing",
                                      partial(self._process, recording, by, halted), entry):
            raise HTTPException(409, {"code": "not_recording",
                                      "message": f"room '{room}' is being stopped already"})
        return await halted

    # -- while recording -----------------------------------------------------------------
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
        """While recording: note who joins (they were in the meeting), follow the room to a
        new node if its node dies, and stop by itself when the meeting ended - nobody in the
        room on signaling and nobody in the meeting on the call server, twice in a row - so a
        recording is never left running (or stuck in "recording") because nobody pressed
        stop."""
        idle = 0
        seen: set[str] = set()
        while idle < 2 and await self.hub.store.get(active_recording(room)) == recording:
            await asyncio.sleep(self.watch_s)
            members = await self._members(room)
            for identity in set(members) - seen:
                await self.hub.store.hset(joined_key(recording), identity, "1")
                seen.add(identity)
            present = await self.tap.meeting(node_url, room)
            if present is None:
                node_url = await self._follow(room, recording, node_url) or node_url
            idle = idle + 1 if not present and not members else 0
        # Stopped by someone: the entry says processing. Still "recording": the meeting ended,
        # or the room's active key is gone without a stop (its 24 h ran out).
        if (await self.leases.live(recording) or {}).get("phase") == "recording":
            log.info("recording %s: meeting ended or no longer active, stopping", recording)
            with contextlib.suppress(HTTPException):
                await self._stop(recording, room, "auto")

    # -- after stop ----------------------------------------------------------------------
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
                await self.leases.finish(recording)
            if halted is not None:
                halted.set_exception(exc)
            raise
        finally:
            if halted is not None and not halted.done():  # cancelled (shutdown, lease lost)
                halted.cancel()
        if manifest["state"] == "processing":
            manifest = await (self._await_job(recording) if self.settings.file_creator == "job"
                              else self._compile(recording))
        if manifest is not None and manifest["state"] == "ready":
            tracks = (manifest.get("files") or {}).get("tracks", [])
            self._event("recording.ready", manifest, tracks=len(tracks),
                        durationMs=int(1000 * (manifest.get("duration") or 0)))
        elif manifest is not None and manifest["state"] == "failed":
            self._event("recording.failed", manifest,
                        error=str(manifest.get("error") or "")[:200])
        await self.notifier.ready(manifest)
        await self.leases.finish(recording)

    async def _halt(self, manifest: dict[str, Any], by: str) -> dict[str, Any]:
        room, recording = manifest["room"], manifest["id"]
        await self.hub.store.delete_if(active_recording(room), recording)
        # every node that tapped this recording flushes; a dead one cannot, and its sealed
        # chunks are already in the store
        results = [await self._tap(url, room, recording, "stop")
                   for url in dict.fromkeys(manifest.get("nodes", [manifest["nodeUrl"]]))]
        joined = await self.hub.store.hgetall(joined_key(recording))
        manifest["nodeLost"] = manifest.get("nodeLost", False) or not all(results)
        manifest.update(state="processing", stoppedAt=time.time(), stoppedBy=by,
                        participants=list(dict.fromkeys(
                            [*manifest["participants"], *joined,
                             *await self._members(room)])))
        await self._save(manifest)
        for identity in joined:
            await self.hub.store.hdel(joined_key(recording), identity)
        await self.notifier.tell(manifest["participants"], {
            "type": "recording.stopped", "room": room, "recording": recording})
        self._event("recording.stopped", manifest, by=by, nodeLost=manifest["nodeLost"],
                    durationMs=int(1000 * max(manifest["stoppedAt"]
                                              - manifest.get("startedAt", 0), 0)))
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

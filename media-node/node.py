"""The call server: meetings on this node, admission, drain, load and metrics.

Control logic lives here, out of the forwarding path: a one-second tick turns the hot path's plain
counters into Prometheus metrics and load figures, refreshes RTCP sender-report state and enforces
the drain deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
import uuid
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from . import metrics
from .meeting import Meeting
from .participant import Participant
from .publisher import PUBLISH_BPS, UpTrack, allow
from .subscriber import DownTrack
from .tasks import spawn
from .transcoding import Transcoding
from .udpmux import UdpMux

log = logging.getLogger("parley.media.node")
ALLOCATE_EVERY_S = 0.25  # layer choice; metrics, sender reports and REMBs every 4th beat
NEEDS_KEY = "parley:media:needs:{meeting}"  # hash: subscriber label -> {track id: rung}
NEEDS_TTL_S = 3600


class Refused(Exception):
    """The node takes no new meeting (draining or at capacity)."""


class CallServer:
    """Holds meetings and participants; one per process."""

    def __init__(self, node_id: str | None = None, *, region: str = "local", url: str = "",
                 capacity_subscriptions: int = 400, capacity_pps: int = 40000,
                 capacity_participants: int = 0, udp_port: int | None = None,
                 udp_host: str = "0.0.0.0", advertise: list[str] | None = None,
                 ice_servers: list[RTCIceServer] | None = None,
                 transcoder: str | None = None) -> None:
        self.id = node_id or f"cs-{uuid.uuid4().hex[:8]}"
        self.region = region
        self.url = url
        self.capacity_subscriptions = capacity_subscriptions
        self.capacity_pps = capacity_pps
        self.capacity_participants = capacity_participants  # 0: no participant limit
        self.udp_port = udp_port  # None: a UDP port per participant; else one shared port
        self.udp_host = udp_host
        self.advertise = advertise or []
        self.mux: UdpMux | None = None
        # max-bundle: with aiortc's default (balanced) a renegotiation that adds two m-lines of one
        # kind leaves the second on a transport that bundling then stops.
        self.config = RTCConfiguration(iceServers=ice_servers or [],
                                       bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self.meetings: dict[str, Meeting] = {}
        # the meetings' transcoder processes: one address for all (``transcoder``: `parley
        # up`, PARLEY_MEETING_TRANSCODER), else each meeting's from Redis once it is set
        self.transcoding = Transcoding(transcoder)
        self.redis: Any = None  # set by the process when it has Redis: subscribers' needs go there
        self._needs_saved: dict[str, dict[str, Any]] = {}  # participant id -> needs last written
        self.participants: dict[str, Participant] = {}
        self.tombstones: dict[str, tuple[float, Participant]] = {}
        self.draining = False
        self.drain_deadline: float | None = None
        self.pps = 0.0
        self.started = time.monotonic()
        self._prev_packets = 0
        self._prev_tick = time.monotonic()
        self._in_totals: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._ticker())

    async def open(self) -> None:
        """Bind the shared media port (single-port mode) and start the tick."""
        if self.udp_port is not None and self.mux is None:
            self.mux = await UdpMux.open(self.udp_host, self.udp_port, self.advertise)
        self.start()

    async def close(self) -> None:
        for task in (self._task, self._drain_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for p in list(self.participants.values()):
            await self._remove(p)
        self.transcoding.close()
        if self.mux is not None:
            self.mux.close()

    def full(self) -> bool:
        return (self.subscriptions() >= self.capacity_subscriptions
                or 0 < self.capacity_participants <= len(self.participants))

    def ready(self) -> bool:
        return not self.draining and not self.full()

    # -- joins and leaves -------------------------------------------------------------------
    async def join(self, meeting_id: str, sdp: str, label: str | None = None,
                   subscribe: bool = True, publish: bool = True,
                   early: bool = False) -> tuple[Participant, str]:
        """Admit a participant with its offer; returns it and the answer.

        Every join is a new participant with an id of its own (never an earlier session's), so
        whatever still arrives for an earlier session of ``label`` (an answer, a leave) hits
        that session's tombstone, not this one. An earlier session of ``label`` in the same
        meeting is replaced (a client that reconnects)."""
        meeting = self.meetings.get(meeting_id)
        if meeting is None and (self.draining or self.full()):
            raise Refused("draining" if self.draining else "at capacity")
        pid = secrets.token_urlsafe(12)
        p = Participant(pid, meeting_id, self.config, self._gone, self._published, self.mux,
                        label=label, publishes=publish)
        p.subscribes = subscribe
        p.offers_early = early
        p.transcoding = self.transcoding
        if label is not None:
            await self.restore(p)
        current = self.meetings.get(meeting_id)  # what is published now: the answer may carry
        published = [up for other in (current.participants.values() if current else ())
                     if label is None or other.label != label  # not a session this replaces
                     for up in other.uptracks]
        try:
            answer, ups = await p.accept_offer(sdp, published)
        except Exception:
            await p.close()
            raise
        meeting = self.meetings.get(meeting_id)  # re-read: other joins ran during the await
        if meeting is None:
            meeting = self.meetings[meeting_id] = Meeting(meeting_id)
        if label is not None:
            for old in [o for o in meeting.participants.values() if o.label == label]:
                log.warning("%s in %s: session %s replaced by %s", label, meeting_id, old.id,
                            pid)
                await self._remove(old)
            meeting = self.meetings.setdefault(meeting_id, meeting)
        self.participants[pid] = p
        meeting.add(p)
        live = {id(up) for o in meeting.participants.values() for up in o.uptracks}
        for dt in [dt for dt in p.downtracks.values() if id(dt.up) not in live]:
            p.unsubscribe(dt.up)  # unpublished while the answer was made
        meeting.publish(p, ups)
        self._gauges()
        return p, answer

    async def offer(self, pid: str, sdp: str) -> str:
        """A client renegotiates (e.g. starts a screen share): new tracks go to the others."""
        p = self.participants[pid]
        answer, ups = await p.accept_offer(sdp)
        meeting = self.meetings.get(p.meeting_id)
        if meeting is not None:
            meeting.publish(p, ups)
        return answer

    def unpublish(self, pid: str, track_id: str) -> bool:
        """A client stopped one of its tracks (a screen share): the others stop receiving it."""
        p = self.participants[pid]
        up = p.stop_publishing(track_id)
        if up is None:
            return False
        meeting = self.meetings.get(p.meeting_id)
        if meeting is not None:
            self._flush_legs(meeting.unpublish(up))
        self._flush_uptracks([up], final=True)
        self._gauges()
        return True

    def _published(self, p: Participant, ups: list[UpTrack]) -> None:
        meeting = self.meetings.get(p.meeting_id)
        if meeting is not None:
            meeting.publish(p, ups)

    async def leave(self, pid: str) -> bool:
        p = self.participants.get(pid)
        if p is None:
            return False
        await self._remove(p)
        return True

    async def _gone(self, p: Participant) -> None:
        log.warning("%s in %s: session %s connection %s, removed", p.label, p.meeting_id, p.id,
                    p.pc.connectionState)
        await self._remove(p)

    async def _remove(self, p: Participant) -> None:
        if self.participants.get(p.id) is not p:
            return
        del self.participants[p.id]
        meeting = self.meetings.get(p.meeting_id)
        if meeting is not None:
            self._flush_legs(meeting.remove(p))
            if not meeting.participants:
                del self.meetings[p.meeting_id]
        self._flush_uptracks(p.uptracks, final=True)
        self.tombstones[p.id] = (time.monotonic(), p)
        if self._needs_saved.pop(p.id, None) and self.redis is not None:
            spawn(self._save_needs(p.meeting_id, p.label, {}))  # it left: forget it
        await p.close()
        self._gauges()

    def participant(self, pid: str) -> Participant | None:
        p = self.participants.get(pid)
        if p is None and pid in self.tombstones:
            p = self.tombstones[pid][1]
        return p

    # -- drain ------------------------------------------------------------------------------
    def drain(self, deadline: float) -> dict[str, Any]:
        """Stop taking new meetings; after ``deadline`` seconds tell signaling (through each
        participant's event stream) to move everyone left, then close them, so a drain ends."""
        self.draining = True
        self.drain_deadline = time.monotonic() + deadline
        metrics.DRAINING.set(1)
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain(deadline))
        return self.status()

    def undrain(self) -> dict[str, Any]:
        """Take new meetings again (the operator kept a pod it had marked for removal)."""
        self.draining = False
        self.drain_deadline = None
        metrics.DRAINING.set(0)
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None
        return self.status()

    async def _drain(self, deadline: float) -> None:
        await asyncio.sleep(deadline)
        for p in list(self.participants.values()):
            p.push({"type": "move", "reason": "drain", "meeting": p.meeting_id})
        await asyncio.sleep(0.2)  # let long polls deliver the move event
        for p in list(self.participants.values()):
            await self._remove(p)

    # -- load, metrics ----------------------------------------------------------------------
    def subscriptions(self) -> int:
        return sum(m.subscriptions() for m in self.meetings.values())

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id, "url": self.url, "region": self.region,
            "draining": self.draining,
            "drain_remaining": (max(0.0, self.drain_deadline - time.monotonic())
                                if self.drain_deadline is not None else None),
            "meetings": len(self.meetings), "participants": len(self.participants),
            "subscriptions": self.subscriptions(), "pps": round(self.pps, 1),
            "capacity_subscriptions": self.capacity_subscriptions,
            "capacity_pps": self.capacity_pps, "pid": os.getpid(),
            "udp_port": self.mux.port if self.mux is not None else None,
            "transcoding": self.transcoding.status(),
            "participant_ids": {m.id: sorted(p.label for p in m.participants.values())
                                for m in self.meetings.values()},
        }

    def _gauges(self) -> None:
        metrics.MEETINGS.set(len(self.meetings))
        metrics.PARTICIPANTS.set(len(self.participants))
        metrics.SUBSCRIPTIONS.set(self.subscriptions())

    def _flush_legs(self, legs: list[DownTrack]) -> int:
        total = 0
        for dt in legs:
            fp, fb, fd = dt.flushed
            if dt.packets != fp:
                metrics.FORWARDED_PACKETS.labels(dt.kind).inc(dt.packets - fp)
                metrics.FORWARDED_BYTES.labels(dt.kind).inc(dt.bytes - fb)
                total += dt.packets - fp
            if dt.dropped != fd:
                metrics.DROPPED_PACKETS.labels(dt.kind).inc(dt.dropped - fd)
            dt.flushed = (dt.packets, dt.bytes, dt.dropped)
        return total

    def _flush_uptracks(self, ups: list[UpTrack], final: bool = False) -> int:
        total = 0
        for up in ups:
            prev = self._in_totals.get(id(up), 0)
            if up.packets != prev:
                metrics.RECEIVED_PACKETS.labels(up.kind).inc(up.packets - prev)
                total += up.packets - prev
            if final:
                self._in_totals.pop(id(up), None)
            else:
                self._in_totals[id(up)] = up.packets
        return total

    def tick(self) -> None:
        now = time.monotonic()
        legs = [dt for p in self.participants.values() for dt in p.downtracks.values()]
        packets = self._flush_legs(legs)
        packets += self._flush_uptracks([u for p in self.participants.values()
                                         for u in p.uptracks])
        self.pps = packets / max(1e-3, now - self._prev_tick)
        self._prev_tick = now
        for dt in legs:
            dt.sync_sender_report()
            if dt.target is not None and dt.sender is not None:
                dt.target.request_keyframe()  # a lost PLI or keyframe must not hold a leg
        for pid, (t, _) in list(self.tombstones.items()):
            if now - t > 60:
                del self.tombstones[pid]
        self._gauges()

    def allocate(self) -> None:
        """Layer choice for every subscriber, then pause the layers nobody receives (dynacast:
        the publisher's browser stops encoding them; a layer wanted again is resumed)."""
        now = time.monotonic()
        for up in (up for p in self.participants.values() for up in p.uptracks):
            for layer in up.layers:
                layer.sample(now)
        self.transcoding.sample(now)
        lost = self.transcoding.tick(now, self.meetings)  # leases; a silent transcoder's end
        if lost:
            metrics.TRANSCODERS_LOST.inc(len(lost))
        for p in self.participants.values():
            p.allocate(now)
        self.transcoding.collect()  # stop rungs and sources no leg needs any more
        metrics.TRANSCODED_LEGS.set(self.transcoding.legs())
        metrics.TRANSCODERS.set(len(self.transcoding.routes))
        self._remember_needs()
        paused = 0
        for p in self.participants.values():
            for up in p.uptracks:
                if not up.simulcast:
                    continue
                wanted = up.wanted_rids()
                paused += len(up.layers) - len(wanted)
                if wanted != up.sent_active:
                    up.sent_active = wanted
                    p.push({"type": "layers", "track": up.track_id, "active": wanted})
        metrics.PAUSED_LAYERS.set(paused)

    def _remember_needs(self) -> None:
        """What each subscriber needs (its transcoded rungs and its own ``maxBitrate``), written
        to Redis when it changes, so another replica or a restarted node knows it (``restore``);
        without Redis it lives in the ``Participant`` on this node only."""
        for p in self.participants.values():
            need: dict[str, Any] = {}
            if p.needs:
                need["rungs"] = dict(p.needs)
            if p.max_bps is not None:
                need["maxBitrate"] = int(p.max_bps)
            if need != self._needs_saved.get(p.id, {}):
                self._needs_saved[p.id] = need
                if self.redis is not None:
                    spawn(self._save_needs(p.meeting_id, p.label, need))

    async def _save_needs(self, meeting: str, label: str, need: dict[str, Any]) -> None:
        key = NEEDS_KEY.format(meeting=meeting)
        try:
            if need:
                await self.redis.hset(key, label, json.dumps(need))
                await self.redis.expire(key, NEEDS_TTL_S)
            else:
                await self.redis.hdel(key, label)
        except Exception as exc:  # Redis down: the node still transcodes, it just forgets
            log.warning("needs of %s in %s not saved: %s", label, meeting, exc)

    async def restore(self, p: Participant) -> None:
        """A subscriber (re)joining: take back what an earlier session of it needed, on this
        node or another (its ``maxBitrate``; its rungs are routed without the 1 s wait)."""
        if self.redis is None:
            return
        try:
            raw = await asyncio.wait_for(
                self.redis.hget(NEEDS_KEY.format(meeting=p.meeting_id), p.label), 0.5)
            need = json.loads(raw) if raw else {}
        except Exception as exc:  # a join never waits on, or fails for, a slow Redis
            log.warning("needs of %s in %s not read: %s", p.label, p.meeting_id, exc)
            return
        cap = need.get("maxBitrate") if isinstance(need, dict) else None
        if isinstance(cap, int) and cap > 0:
            p.max_bps = float(cap)
        rungs = need.get("rungs") if isinstance(need, dict) else None
        if isinstance(rungs, dict):
            p.remembered = {str(k): str(v) for k, v in rungs.items()}

    def allow_publishers(self) -> None:
        """Once a second, each publisher gets one REMB for all its video (``publisher.allow``)."""
        for p in self.participants.values():
            video = [up for up in p.uptracks if up.kind == "video"]
            if video:
                allow(video, PUBLISH_BPS * len(video))

    async def _ticker(self) -> None:
        beat = 0
        while True:
            await asyncio.sleep(ALLOCATE_EVERY_S)
            self.allocate()
            beat += 1
            if beat % 4 == 0:
                self.tick()
                self.allow_publishers()

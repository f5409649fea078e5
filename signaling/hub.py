"""The signaling replica's services wired together, created once per application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from parley.config import Settings
from parley.events import EventSink, make_event, sink_for
from parley.signaling.calls import Calls
from parley.signaling.chat import Chat
from parley.signaling.negotiation import CallServerDirectory, NoCallServers
from parley.signaling.presence import Presence
from parley.signaling.rooms import Rooms
from parley.signaling.sfu import SfuRelay
from parley.signaling.store import Store, store_for
from parley.signaling.users import UserDirectory

log = logging.getLogger("parley.signaling")


@dataclass(frozen=True)
class Options:
    """Signaling-only knobs, read from the environment (documented in docs/signaling.md)."""

    users_file: str | None = None
    ring_timeout_s: float = 30.0
    auth_timeout_s: float = 10.0
    presence_ttl_s: float = 30.0
    heartbeat_s: float = 10.0
    # Flood limits (docs/signaling.md, "Limits"): token buckets per connection ...
    fanout_rate: float = 10.0  # caps + media messages per second
    fanout_burst: float = 20.0
    join_rate: float = 1.0  # join messages per second
    join_burst: float = 5.0
    sfu_join_rate: float = 1.0  # sfu.join per second (each is an HTTP join on a call server)
    sfu_join_burst: float = 20.0  # a mesh room's pair fallbacks (<= 7) + a node loss, twice
    sfu_signal_rate: float = 10.0  # sfu.answer + sfu.publish per second (HTTP to the node)
    sfu_signal_burst: float = 40.0  # the node has one offer out at a time: far above normal
    sfu_view_rate: float = 5.0  # sfu.view per second (the web client sends <= 4: 250 ms debounce)
    sfu_view_burst: float = 20.0
    invite_rate: float = 0.2  # invites per second: one ring every 5 s ...
    invite_burst: float = 5.0  # ... after a burst of 5
    # a guest identity's total life: token.refresh (and the guest-token refresh) stop after it
    guest_max_session_s: float = 4 * 3600.0  # 0 = no cap
    telemetry_interval_ms: int = 10000  # quality.sample period, told to clients in welcome
    telemetry_burst: float = 5.0  # samples; refills at 3 per interval (signaling/telemetry.py)
    # ... and caps per address, per room and per participant
    max_connections_per_ip: int = 64  # WebSocket connections from one address; 0 = no cap
    max_room_size: int = 100  # a room without a Meeting resource
    max_publish_tracks: int = 4  # sending m-lines in one SDP (mic, camera, screen, +1)
    max_body_bytes: int = 1 << 20  # HTTP request bodies

    @classmethod
    def from_env(cls) -> Options:
        def num(name: str, default: float) -> float:
            return float(os.environ.get(name) or default)

        def whole(name: str, default: int) -> int:
            return int(os.environ.get(name) or default)

        return cls(users_file=os.environ.get("PARLEY_USERS_FILE") or None,
                   ring_timeout_s=num("PARLEY_RING_TIMEOUT_S", 30.0),
                   auth_timeout_s=num("PARLEY_AUTH_TIMEOUT_S", 10.0),
                   presence_ttl_s=num("PARLEY_PRESENCE_TTL_S", 30.0),
                   heartbeat_s=num("PARLEY_PRESENCE_HEARTBEAT_S", 10.0),
                   fanout_rate=num("PARLEY_RATE_FANOUT_PER_S", 10.0),
                   fanout_burst=num("PARLEY_RATE_FANOUT_BURST", 20.0),
                   join_rate=num("PARLEY_RATE_JOIN_PER_S", 1.0),
                   join_burst=num("PARLEY_RATE_JOIN_BURST", 5.0),
                   sfu_join_rate=num("PARLEY_RATE_SFU_JOIN_PER_S", 1.0),
                   sfu_join_burst=num("PARLEY_RATE_SFU_JOIN_BURST", 20.0),
                   sfu_signal_rate=num("PARLEY_RATE_SFU_SIGNAL_PER_S", 10.0),
                   sfu_signal_burst=num("PARLEY_RATE_SFU_SIGNAL_BURST", 40.0),
                   sfu_view_rate=num("PARLEY_RATE_SFU_VIEW_PER_S", 5.0),
                   sfu_view_burst=num("PARLEY_RATE_SFU_VIEW_BURST", 20.0),
                   invite_rate=num("PARLEY_RATE_INVITE_PER_S", 0.2),
                   invite_burst=num("PARLEY_RATE_INVITE_BURST", 5.0),
                   guest_max_session_s=num("PARLEY_GUEST_MAX_SESSION_S", 4 * 3600.0),
                   telemetry_interval_ms=max(100, whole("PARLEY_TELEMETRY_INTERVAL_MS", 10000)),
                   telemetry_burst=num("PARLEY_RATE_TELEMETRY_BURST", 5.0),
                   max_connections_per_ip=whole("PARLEY_MAX_CONNECTIONS_PER_IP", 64),
                   max_room_size=whole("PARLEY_MAX_ROOM_SIZE", 100),
                   max_publish_tracks=whole("PARLEY_MAX_PUBLISH_TRACKS", 4),
                   max_body_bytes=whole("PARLEY_MAX_BODY_BYTES", 1 << 20))


class Hub:
    def __init__(self, settings: Settings, options: Options | None = None,
                 store: Store | None = None, events: EventSink | None = None,
                 directory: CallServerDirectory | None = None) -> None:
        self.settings = settings
        self.options = options or Options.from_env()
        self.store = store or store_for(settings.redis_url)
        self.presence = Presence(self.store, self.options.presence_ttl_s,
                                 self.options.heartbeat_s)
        self.users = UserDirectory.from_file(self.store, self.options.users_file)
        self.events = events or sink_for(settings.kafka_bootstrap, settings.kafka_topic,
                                         settings.data_dir)
        self.directory: CallServerDirectory = directory or NoCallServers()
        self.rooms = Rooms(self)
        self.calls = Calls(self, self.options.ring_timeout_s)
        self.sfu = SfuRelay(self)  # call-server sessions of this replica's clients
        self.chat = Chat(self)  # room chat and direct messages (signaling/chat.py)
        self._poller: asyncio.Task[None] | None = None
        self.connections: dict[str, int] = {}  # client address -> open WebSockets here

    @property
    def instance(self) -> str:
        return self.presence.instance

    def emit(self, etype: str, *, data: dict[str, Any], room: str | None = None,
             call_id: str | None = None) -> None:
        """Hand an event to the sink; an event problem must never break signaling."""
        try:
            self.events.emit(make_event(etype, instance=self.instance, data=data, room=room,
                                        call_id=call_id))
        except Exception:
            log.exception("event %s dropped", etype)

    async def start(self) -> None:
        await self.presence.start()
        self._poller = asyncio.create_task(self._poll_events())

    async def _poll_events(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            try:
                self.events.poll()
            except Exception:
                log.exception("event sink poll failed")

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.calls.stop()
        await self.sfu.close()
        await self.presence.stop()
        await asyncio.to_thread(self.events.close)
        await self.store.close()

"""Who works on which recording: owner leases per phase and the sweeper that adopts orphans.

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
from collections.abc import Awaitable, Callable
from typing import Any

from parley.signaling.store import Store

log = logging.getLogger("parley.signaling.recordings")

# recording id -> {"room", "phase": "recording"|"processing", "nodeUrl"[, "by"]}, until notified
LIVE = "recordings:live"
PHASES = ("recording", "processing")

Work = Callable[[], Awaitable[Any]]


def owner_key(recording: str, phase: str) -> str:
    return f"recording:owner:{recording}:{phase}"


def parse_entry(raw: str) -> dict[str, str]:
    """A ``recordings:live`` value, checked (ValueError otherwise)."""
    entry = json.loads(raw)
    if not (isinstance(entry, dict) and entry.get("phase") in PHASES
            and isinstance(entry.get("room"), str) and isinstance(entry.get("nodeUrl"), str)):
        raise ValueError(f"malformed entry {raw!r}")
    return entry


class PhaseLeases:
    """This replica's owned phases. ``adopt(recording, entry)`` gives the work for an orphaned
    phase the sweeper finds."""

    def __init__(self, store: Store, instance: str, lease_s: float, sweep_s: float,
                 adopt: Callable[[str, dict[str, str]], Work]) -> None:
        self.store, self.instance = store, instance
        self.lease_s, self.sweep_s = lease_s, sweep_s
        self.adopt = adopt
        self.jobs: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def open(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        """Stop the sweeper and this replica's work; the leases are released on the way out,
        so another replica takes over at its next sweep instead of after the lease TTL."""
        tasks = [t for t in (self._sweeper, *self.jobs) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def live(self, recording: str) -> dict[str, str] | None:
        raw = await self.store.hget(LIVE, recording)
        with contextlib.suppress(ValueError):
            return parse_entry(raw) if raw else None
        return None

    async def finish(self, recording: str) -> None:
        """The recording left every phase (notified, or nothing can finish it)."""
        await self.store.hdel(LIVE, recording)

    async def take(self, recording: str, phase: str, work: Work,
                   entry: dict[str, str] | None = None) -> bool:
        """Run ``work`` in the background as the owner of this phase of the recording, unless
        a replica already is. ``entry`` (start, stop) moves the recording into the phase in
        ``recordings:live``, after the lease is taken so no sweeper can take it in between."""
        if not await self.store.set_nx(owner_key(recording, phase), self.instance, self.lease_s):
            return False
        if entry is not None:
            await self.store.hset(LIVE, recording, json.dumps({**entry, "phase": phase}))
        elif (await self.live(recording) or {}).get("phase") != phase:
            # its owner finished it (and released the lease) while this sweep was reading
            await self.store.delete_if(owner_key(recording, phase), self.instance)
            return False
        job = asyncio.create_task(self._owned(recording, phase, work))
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)
        return True

    async def _owned(self, recording: str, phase: str, work: Work) -> None:
        key = owner_key(recording, phase)
        keeper = asyncio.create_task(self._keep(key, asyncio.current_task()))
        try:
            await work()
        except Exception:
            log.exception("recording %s: %s failed", recording, phase)
        finally:
            keeper.cancel()
            with contextlib.suppress(Exception):  # else it expires after the TTL
                await self.store.delete_if(key, self.instance)

    async def _keep(self, key: str, owner: asyncio.Task[Any] | None) -> None:
        """Renew the lease every TTL/3; if another replica holds it now (this one stalled past
        the TTL), stop working rather than work twice."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                ours = await self.store.expire_if(key, self.instance, self.lease_s) \
                    or await self.store.set_nx(key, self.instance, self.lease_s)
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
                await self._adopt_orphans()
            except Exception:
                log.exception("recording sweep failed")
            await asyncio.sleep(self.sweep_s)

    async def _adopt_orphans(self) -> None:
        for recording, raw in (await self.store.hgetall(LIVE)).items():
            try:
                entry = parse_entry(raw)
            except ValueError:
                log.warning("recording %s: dropping malformed %s entry %r", recording, LIVE, raw)
                await self.store.hdel(LIVE, recording)
                continue
            if await self.take(recording, entry["phase"], self.adopt(recording, entry)):
                log.info("recording %s: took over %s", recording, entry["phase"])

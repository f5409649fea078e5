"""Node registration in Redis and meeting placement.

Each call server writes its record (id, URL, advertised address, region, capacity, load) under a key
whose TTL its heartbeat keeps refreshing; a node that dies vanishes from placement within the TTL.
Placement is power of two choices (Mitzenmacher 2001) against a capacity budget, not CPU percent:
pick two eligible nodes at random and take the less loaded one. Load data lags the heartbeat, so
each node also has a per-second join counter in Redis: joins in the current second count towards
its load immediately and are capped, so a burst of joins cannot herd onto the node that looked
emptiest a second ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import Any

from redis.asyncio import Redis

from parley.directory import MEETING_TTL_S, NODES, PREFIX, meeting_key, node_key

from .node import CallServer

BUDGET = 0.85  # fraction of a node's capacity placement may fill
JOIN_RATE = 20  # joins per node per second
SUBS_PER_JOIN = 4  # assumed subscriptions a join adds until the next heartbeat shows it

_CAS_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Registration:
    """Heartbeat of one call server into Redis."""

    def __init__(self, redis: Redis, server: CallServer, address: str = "",
                 ttl: float = 3.0, interval: float = 1.0) -> None:
        self.redis = redis
        self.server = server
        self.address = address
        self.ttl = ttl
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def record(self) -> dict[str, Any]:
        s = self.server
        return {
            "id": s.id, "url": s.url, "address": self.address, "region": s.region,
            "udp_port": s.mux.port if s.mux is not None else None,  # None: one per participant
            "draining": s.draining,
            "capacity_subscriptions": s.capacity_subscriptions, "capacity_pps": s.capacity_pps,
            "capacity_participants": s.capacity_participants,
            "participants": len(s.participants),
            "subscriptions": s.subscriptions(), "pps": round(s.pps, 1),
            "meetings": len(s.meetings), "updated": time.time(),
        }

    async def beat(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(node_key(self.server.id), json.dumps(self.record()),
                     px=int(self.ttl * 1000))
            pipe.sadd(NODES, self.server.id)
            await pipe.execute()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # Redis hiccup: the next beat retries
                await self.beat()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self, deregister: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if deregister:
            await self.redis.delete(node_key(self.server.id))
            await self.redis.srem(NODES, self.server.id)


async def nodes(redis: Redis) -> list[dict[str, Any]]:
    """Live node records; ids whose heartbeat expired are pruned from the set."""
    ids = sorted(await redis.smembers(NODES))
    ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
    if not ids:
        return []
    raw = await redis.mget([node_key(i) for i in ids])
    out, dead = [], []
    for i, r in zip(ids, raw, strict=True):
        if r is None:
            dead.append(i)
        else:
            out.append(json.loads(r))
    if dead:
        await redis.srem(NODES, *dead)
    return out


def utilization(node: dict[str, Any], recent_joins: int = 0) -> float:
    subs = node["subscriptions"] + recent_joins * SUBS_PER_JOIN
    ratios = [subs / max(1, node["capacity_subscriptions"]),
              node["pps"] / max(1, node["capacity_pps"])]
    if node.get("capacity_participants"):
        ratios.append((node.get("participants", 0) + recent_joins)
                      / node["capacity_participants"])
    return max(ratios)


async def _joins(redis: Redis, node_id: str, add: int) -> int:
    key = f"{PREFIX}:joins:{node_id}:{int(time.time())}"
    if not add:
        return int(await redis.get(key) or 0)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incrby(key, add)
        pipe.expire(key, 2)
        count, _ = await pipe.execute()
    return int(count)


async def place(redis: Redis, meeting: str, region: str | None = None,
                exclude: tuple[str, ...] | list[str] = (), join_rate: int = JOIN_RATE,
                rng: random.Random | None = None) -> dict[str, Any] | None:
    """The node a participant of ``meeting`` should join, or None when no node has room.

    A meeting lives on one node: later joiners follow it there while that node is alive, not
    draining and not excluded (e.g. reported dead by a client)."""
    rng = rng or random.Random()
    live = await nodes(redis)
    by_id = {n["id"]: n for n in live}
    mkey = meeting_key(meeting)
    current = await redis.get(mkey)
    current = current.decode() if isinstance(current, bytes) else current
    if current is not None:
        n = by_id.get(current)
        if n is not None and not n["draining"] and current not in exclude:
            await _joins(redis, current, 1)
            await redis.expire(mkey, MEETING_TTL_S)
            return n
        await redis.eval(_CAS_DELETE, 1, mkey, current)
    eligible = [n for n in live if not n["draining"] and n["id"] not in exclude]
    local = [n for n in eligible if region is None or n["region"] == region]
    for pool in (local, eligible):
        recent = {n["id"]: await _joins(redis, n["id"], 0) for n in pool}
        cands = [n for n in pool if utilization(n, recent[n["id"]]) < BUDGET]
        while cands:
            pair = rng.sample(cands, min(2, len(cands)))
            pair.sort(key=lambda n: utilization(n, recent[n["id"]]))
            for n in pair:
                cands.remove(n)
                if await _joins(redis, n["id"], 1) > join_rate:
                    await _joins(redis, n["id"], -1)
                    continue
                if await redis.set(mkey, n["id"], nx=True, ex=MEETING_TTL_S):
                    return n
                # another signaling replica placed the meeting first: follow it
                await _joins(redis, n["id"], -1)
                return await place(redis, meeting, region, exclude, join_rate, rng)
    return None

"""Shared state and messaging between signaling replicas: a tiny key/value + hash + pub/sub
interface with an in-memory implementation (embedded default, one process) and a Redis one (any
number of replicas). Presence, rooms and calls are written against :class:`Store` only, so the
same logic runs in both modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from parley.directory import SIGNALING_PREFIX

log = logging.getLogger("parley.signaling.store")
PREFIX = SIGNALING_PREFIX
Handler = Callable[[str], Awaitable[None]]


class Store(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None: ...
    async def set_nx(self, key: str, value: str, ttl_s: float | None = None) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def delete_if(self, key: str, value: str) -> bool: ...
    async def expire_if(self, key: str, value: str, ttl_s: float) -> bool: ...
    async def hset(self, key: str, field: str, value: str) -> None: ...
    async def hget(self, key: str, field: str) -> str | None: ...
    async def hdel(self, key: str, field: str) -> None: ...
    async def hgetall(self, key: str) -> dict[str, str]: ...
    async def publish(self, channel: str, data: str) -> None: ...
    async def subscribe(self, channel: str, handler: Handler) -> None: ...
    async def close(self) -> None: ...


class MemoryStore:
    """One process's state; TTLs are checked on read."""

    def __init__(self) -> None:
        self._kv: dict[str, tuple[str, float | None]] = {}
        self._h: dict[str, dict[str, str]] = {}
        self._subs: dict[str, list[Handler]] = {}

    def _live(self, key: str) -> str | None:
        item = self._kv.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires < time.monotonic():
            del self._kv[key]
            return None
        return value

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        self._kv[key] = (value, time.monotonic() + ttl_s if ttl_s else None)

    async def set_nx(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl_s)
        return True

    async def delete(self, key: str) -> None:
        self._kv.pop(key, None)

    async def delete_if(self, key: str, value: str) -> bool:
        if self._live(key) == value:
            del self._kv[key]
            return True
        return False

    async def expire_if(self, key: str, value: str, ttl_s: float) -> bool:
        if self._live(key) == value:
            self._kv[key] = (value, time.monotonic() + ttl_s)
            return True
        return False

    async def hset(self, key: str, field: str, value: str) -> None:
        self._h.setdefault(key, {})[field] = value

    async def hget(self, key: str, field: str) -> str | None:
        return self._h.get(key, {}).get(field)

    async def hdel(self, key: str, field: str) -> None:
        h = self._h.get(key)
        if h is not None:
            h.pop(field, None)
            if not h:
                del self._h[key]

    async def hgetall(self, key: str) -> dict[str, str]:
        return dict(self._h.get(key, {}))

    async def publish(self, channel: str, data: str) -> None:
        for handler in list(self._subs.get(channel, [])):
            await handler(data)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._subs.setdefault(channel, []).append(handler)

    async def close(self) -> None:
        self._subs.clear()


_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) " \
             "else return 0 end"
_EXPIRE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then " \
             "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"


class RedisStore:
    """Redis-backed: keys and channels under ``parley:signaling:``; one pub/sub connection
    serves all subscriptions."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._r = aioredis.from_url(url, decode_responses=True, health_check_interval=10)
        self._pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        self._handlers: dict[str, Handler] = {}
        self._reader: asyncio.Task[None] | None = None
        self._delete_if = self._r.register_script(_DELETE_IF)
        self._expire_if = self._r.register_script(_EXPIRE_IF)

    @property
    def client(self) -> Any:
        """The Redis client, for data kept in other Redis types (chat streams: chatlog.py)."""
        return self._r

    async def get(self, key: str) -> str | None:
        return await self._r.get(PREFIX + key)

    async def set(self, key: str, value: str, ttl_s: float | None = None) -> None:
        await self._r.set(PREFIX + key, value, px=int(ttl_s * 1000) if ttl_s else None)

    async def set_nx(self, key: str, value: str, ttl_s: float | None = None) -> bool:
        return bool(await self._r.set(PREFIX + key, value, nx=True,
                                      px=int(ttl_s * 1000) if ttl_s else None))

    async def delete(self, key: str) -> None:
        await self._r.delete(PREFIX + key)

    async def delete_if(self, key: str, value: str) -> bool:
        return bool(await self._delete_if(keys=[PREFIX + key], args=[value]))

    async def expire_if(self, key: str, value: str, ttl_s: float) -> bool:
        """Renew a lease only while it is still ours (atomic, unlike get then set)."""
        return bool(await self._expire_if(keys=[PREFIX + key],
                                          args=[value, int(ttl_s * 1000)]))

    async def hset(self, key: str, field: str, value: str) -> None:
        await self._r.hset(PREFIX + key, field, value)

    async def hget(self, key: str, field: str) -> str | None:
        return await self._r.hget(PREFIX + key, field)

    async def hdel(self, key: str, field: str) -> None:
        await self._r.hdel(PREFIX + key, field)

    async def hgetall(self, key: str) -> dict[str, str]:
        return await self._r.hgetall(PREFIX + key)

    async def publish(self, channel: str, data: str) -> None:
        await self._r.publish(PREFIX + channel, data)

    async def subscribe(self, channel: str, handler: Handler) -> None:
        self._handlers[PREFIX + channel] = handler
        await self._pubsub.subscribe(PREFIX + channel)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        """Deliver pub/sub messages; a handler's failure must not stop delivery to others."""
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("redis pub/sub read failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if not msg or msg.get("type") != "message":
                continue
            handler = self._handlers.get(msg["channel"])
            if handler is not None:
                try:
                    await handler(msg["data"])
                except Exception:
                    log.exception("pub/sub handler failed")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._r.aclose()


def store_for(redis_url: str | None) -> Store:
    return RedisStore(redis_url) if redis_url else MemoryStore()

"""Where chat messages are kept: a bounded, expiring, ordered log per conversation.

Two logs exist per deployment kind: a room's log (``chat:room:<room>``, recent history for late
joiners) and a user's inbox (``chat:inbox:<identity>``, direct messages kept until the client acks
them). With Redis each is a stream (``XADD ... MAXLEN ~ n`` then ``EXPIRE``), so any replica reads
what another wrote and a replica restart loses nothing; the embedded default keeps the same shape
in memory. Entry ids are stream ids (``<ms>-<seq>``): ordered within one log, which is what the
client sorts and dedupes by.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol

from parley.signaling.store import PREFIX, RedisStore, Store

Entry = tuple[str, dict[str, str]]  # (stream id, fields)


def id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream id ``<ms>-<seq>``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class ChatLog(Protocol):
    async def append(self, log: str, fields: dict[str, str], maxlen: int, ttl_s: float,
                     exact: bool = False) -> str: ...
    async def recent(self, log: str, count: int) -> list[Entry]: ...
    async def all(self, log: str, count: int) -> list[Entry]: ...
    async def delete(self, log: str, ids: list[str]) -> int: ...


class MemoryChatLog:
    """One process's logs; ids are made like Redis's (milliseconds, then a sequence)."""

    def __init__(self) -> None:
        self._logs: dict[str, tuple[deque[Entry], float]] = {}
        self._last = (0, 0)

    def _live(self, log: str) -> deque[Entry]:
        item = self._logs.get(log)
        if item is None:
            return deque()
        if item[1] < time.monotonic():
            del self._logs[log]
            return deque()
        return item[0]

    async def append(self, log: str, fields: dict[str, str], maxlen: int, ttl_s: float,
                     exact: bool = False) -> str:
        ms = int(time.time() * 1000)
        self._last = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        entry_id = f"{self._last[0]}-{self._last[1]}"
        entries = self._live(log)
        entries.append((entry_id, dict(fields)))
        while len(entries) > maxlen:
            entries.popleft()
        self._logs[log] = (entries, time.monotonic() + ttl_s)
        return entry_id

    async def recent(self, log: str, count: int) -> list[Entry]:
        return list(self._live(log))[-count:]

    async def all(self, log: str, count: int) -> list[Entry]:
        return list(self._live(log))[:count]

    async def delete(self, log: str, ids: list[str]) -> int:
        entries = self._live(log)
        gone = set(ids)
        kept = [e for e in entries if e[0] not in gone]
        removed = len(entries) - len(kept)
        if log in self._logs:
            self._logs[log] = (deque(kept), self._logs[log][1])
        return removed


class RedisChatLog:
    """Redis streams under ``parley:signaling:``; every append renews the log's TTL."""

    def __init__(self, client: Any) -> None:
        self._r = client

    async def append(self, log: str, fields: dict[str, str], maxlen: int, ttl_s: float,
                     exact: bool = False) -> str:
        """``MAXLEN ~`` (cheap, may keep up to ~100 more) unless ``exact`` (an inbox's bound)."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xadd(PREFIX + log, fields, maxlen=maxlen, approximate=not exact)
            pipe.pexpire(PREFIX + log, int(ttl_s * 1000))
            entry_id, _ = await pipe.execute()
        return entry_id

    async def recent(self, log: str, count: int) -> list[Entry]:
        return list(reversed(await self._r.xrevrange(PREFIX + log, count=count)))

    async def all(self, log: str, count: int) -> list[Entry]:
        return list(await self._r.xrange(PREFIX + log, count=count))

    async def delete(self, log: str, ids: list[str]) -> int:
        return int(await self._r.xdel(PREFIX + log, *ids)) if ids else 0


def chat_log_for(store: Store) -> ChatLog:
    """Streams in the replicas' Redis when there is one, else memory (the embedded default)."""
    if isinstance(store, RedisStore):
        return RedisChatLog(store.client)
    return MemoryChatLog()

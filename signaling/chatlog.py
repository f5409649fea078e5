"""Where chat messages are kept: a bounded, expiring, ordered log per conversation.

Three kinds of log: a room's log (``chat:room:<room>``, recent history for late joiners), a user's
inbox (``chat:inbox:<identity>``, direct messages kept until the client acks them) and a
conversation's log (``chat:dm:<a>|<b>``, the two users sorted: the history either of them reads,
from any browser). With Redis each is a stream (``XADD ... MAXLEN n`` then ``PEXPIRE``), so any
replica reads what another wrote and a replica restart loses nothing; the embedded default keeps
the same shape in memory. Entry ids are stream ids (``<ms>-<seq>``): ordered within one log, which
is what the client sorts and dedupes by. A direct message gets one id in both its recipient's
inbox and its conversation (one atomic script picks an id above both logs' last), so a message
seen live and again in the history is the same message.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol

from parley.signaling.store import PREFIX, RedisStore, Store

Entry = tuple[str, dict[str, str]]  # (stream id, fields)


def conversation(a: str, b: str) -> str:
    """The log of the direct messages between two users (``|`` is not in an identity)."""
    low, high = sorted((a, b))
    return f"chat:dm:{low}|{high}"


def id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream id ``<ms>-<seq>``."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class ChatLog(Protocol):
    async def append(self, log: str, fields: dict[str, str], maxlen: int, ttl_s: float,
                     exact: bool = False) -> str: ...
    async def append_direct(self, conversation: str, inbox: str, fields: dict[str, str],
                            keep: tuple[int, int], ttl_s: tuple[float, float]) -> str: ...
    async def recent(self, log: str, count: int) -> list[Entry]: ...
    async def before(self, log: str, entry_id: str | None, count: int) -> list[Entry]: ...
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

    def _next_id(self) -> str:
        """One id source for every log: unique across them, increasing."""
        ms = int(time.time() * 1000)
        self._last = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        return f"{self._last[0]}-{self._last[1]}"

    def _add(self, log: str, entry: Entry, maxlen: int, ttl_s: float) -> None:
        entries = self._live(log)
        entries.append(entry)
        while len(entries) > maxlen:
            entries.popleft()
        self._logs[log] = (entries, time.monotonic() + ttl_s)

    async def append(self, log: str, fields: dict[str, str], maxlen: int, ttl_s: float,
                     exact: bool = False) -> str:
        entry_id = self._next_id()
        self._add(log, (entry_id, dict(fields)), maxlen, ttl_s)
        return entry_id

    async def append_direct(self, conversation: str, inbox: str, fields: dict[str, str],
                            keep: tuple[int, int], ttl_s: tuple[float, float]) -> str:
        entry_id = self._next_id()
        self._add(conversation, (entry_id, dict(fields)), keep[0], ttl_s[0])
        self._add(inbox, (entry_id, dict(fields)), keep[1], ttl_s[1])
        return entry_id

    async def recent(self, log: str, count: int) -> list[Entry]:
        return list(self._live(log))[-count:]

    async def before(self, log: str, entry_id: str | None, count: int) -> list[Entry]:
        entries = list(self._live(log))
        if entry_id is not None:
            entries = [e for e in entries if id_key(e[0]) < id_key(entry_id)]
        return entries[-count:]

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


# KEYS: conversation, inbox. ARGV: conversation MAXLEN (~), its TTL ms, inbox MAXLEN (exact),
# its TTL ms, then the fields. The id is the server time, or just above the last id either log
# ever generated (a stream refuses an id not above its last), so it is new in both.
_APPEND_DIRECT = """
local ms, seq
do
  local t = redis.call('TIME')
  ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  seq = 0
end
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local lms, lseq = string.match(info[i + 1], '^(%d+)-(%d+)$')
        lms, lseq = tonumber(lms), tonumber(lseq)
        if lms > ms or (lms == ms and lseq >= seq) then ms, seq = lms, lseq + 1 end
      end
    end
  end
end
local id = string.format('%.0f-%.0f', ms, seq)
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], id, unpack(fields))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return id
"""


class RedisChatLog:
    """Redis streams under ``parley:signaling:``; every append renews the log's TTL."""

    def __init__(self, client: Any) -> None:
        self._r = client
        self._append_direct = client.register_script(_APPEND_DIRECT)

    async def append(self, log: str, fields: dict[str, str], maxlen: int, ttl_s: float,
                     exact: bool = False) -> str:
        """``MAXLEN ~`` (cheap, may keep up to ~100 more) unless ``exact`` (an inbox's bound)."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.xadd(PREFIX + log, fields, maxlen=maxlen, approximate=not exact)
            pipe.pexpire(PREFIX + log, int(ttl_s * 1000))
            entry_id, _ = await pipe.execute()
        return entry_id

    async def append_direct(self, conversation: str, inbox: str, fields: dict[str, str],
                            keep: tuple[int, int], ttl_s: tuple[float, float]) -> str:
        """One atomic script: the same new id in the conversation and the inbox."""
        flat = [x for pair in fields.items() for x in pair]
        return str(await self._append_direct(
            keys=[PREFIX + conversation, PREFIX + inbox],
            args=[keep[0], int(ttl_s[0] * 1000), keep[1], int(ttl_s[1] * 1000), *flat]))

    async def recent(self, log: str, count: int) -> list[Entry]:
        return list(reversed(await self._r.xrevrange(PREFIX + log, count=count)))

    async def before(self, log: str, entry_id: str | None, count: int) -> list[Entry]:
        """The ``count`` entries just before ``entry_id`` (newest when None), oldest first."""
        top = f"({entry_id}" if entry_id is not None else "+"
        return list(reversed(await self._r.xrevrange(PREFIX + log, max=top, count=count)))

    async def all(self, log: str, count: int) -> list[Entry]:
        return list(await self._r.xrange(PREFIX + log, count=count))

    async def delete(self, log: str, ids: list[str]) -> int:
        return int(await self._r.xdel(PREFIX + log, *ids)) if ids else 0


def chat_log_for(store: Store) -> ChatLog:
    """Streams in the replicas' Redis when there is one, else memory (the embedded default)."""
    if isinstance(store, RedisStore):
        return RedisChatLog(store.client)
    return MemoryChatLog()

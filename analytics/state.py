"""Where the aggregates, the seen event ids and the archive's pending events live.

Two implementations of one small interface:

- ``RedisState`` for the Kafka engine: several engine instances in one consumer group count into
  the same counters, and a partition that moves to another instance after a crash must find the
  ids its previous owner already counted, so the state has to be shared. One Lua script per batch
  marks each id seen (``SET NX``), adds the new events' increments and queues them for the
  archive, atomically: a crash leaves either all of a batch or none of it.
- ``SqliteState`` for ``parley up``: one process, no Redis; one transaction per batch that also
  stores how far the JSONL file was read.

Increments land in hash buckets ``m:YYYYMMDDHHMM`` (minutes), ``h:YYYYMMDDHH`` (hours) and ``t``
(all time), fields ``metric|region|device``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import msgspec

from parley.analytics.model import Event, fields

SEEN_TTL_S = 8 * 86400  # longer than Kafka's default 7-day retention: a replay is always caught
MINUTE_TTL_S = 3 * 86400
HOUR_TTL_S = 400 * 86400


class State(Protocol):
    url: str

    def apply(self, events: list[Event], cursor: tuple[str, str] | None = None
              ) -> tuple[int, int]: ...
    def cursor(self, name: str) -> str | None: ...
    def buckets(self, keys: list[str]) -> dict[str, dict[str, int]]: ...
    def stats(self) -> dict[str, int]: ...
    def pending_hours(self) -> list[str]: ...
    def pending_take(self, hour: str, limit: int) -> list[str]: ...
    def pending_trim(self, hour: str, first: str, n: int) -> None: ...
    def lock(self, name: str, ttl_s: float) -> str | None: ...
    def unlock(self, name: str, token: str) -> None: ...
    def expire(self) -> None: ...
    def close(self) -> None: ...


_encode = msgspec.json.Encoder().encode


def _batch(events: list[Event]) -> list[list[object]]:
    return [[e.id, e.minute, e.hour, e.line, fields(e)] for e in events]


_APPLY = """
local p = ARGV[1]
local seen_ttl, m_ttl, h_ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local batch = cjson.decode(ARGV[5])
local acc, ttl, lines = {}, {}, {}
local new, dup = 0, 0
local function add(key, life, incs)
  local t = acc[key]
  if not t then t = {}; acc[key] = t; ttl[key] = life end
  for f, v in pairs(incs) do t[f] = (t[f] or 0) + v end
end
for _, e in ipairs(batch) do
  if redis.call('SET', p .. 'seen:' .. e[1], '1', 'NX', 'EX', seen_ttl) then
    new = new + 1
    local l = lines[e[3]]
    if not l then l = {}; lines[e[3]] = l end
    l[#l + 1] = e[4]
    add(p .. 'm:' .. e[2], m_ttl, e[5])
    add(p .. 'h:' .. e[3], h_ttl, e[5])
    add(p .. 't', 0, e[5])
  else
    dup = dup + 1
  end
end
for hour, l in pairs(lines) do
  redis.call('RPUSH', p .. 'pending:' .. hour, table.concat(l, '\\n'))
  redis.call('SADD', p .. 'pending-hours', hour)
end
for key, t in pairs(acc) do
  for f, v in pairs(t) do redis.call('HINCRBY', key, f, v) end
  if ttl[key] > 0 then redis.call('EXPIRE', key, ttl[key]) end
end
redis.call('HINCRBY', p .. 'stats', 'counted', new)
redis.call('HINCRBY', p .. 'stats', 'duplicates', dup)
return {new, dup}
"""

_TRIM = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
return 1
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisState:
    """Shared by every engine instance (and read by signaling's report)."""

    def __init__(self, url: str, prefix: str = "analytics:") -> None:
        import redis

        self.url, self.prefix = url, prefix
        self.r = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
        self._apply = self.r.register_script(_APPLY)
        self._trim = self.r.register_script(_TRIM)
        self._unlock = self.r.register_script(_UNLOCK)

    def apply(self, events: list[Event], cursor: tuple[str, str] | None = None
              ) -> tuple[int, int]:
        if not events:
            return 0, 0
        new, dup = self._apply(args=[self.prefix, SEEN_TTL_S, MINUTE_TTL_S, HOUR_TTL_S,
                                     _encode(_batch(events))])
        if cursor is not None:
            self.r.hset(self.prefix + "cursor", cursor[0], cursor[1])
        return int(new), int(dup)

    def cursor(self, name: str) -> str | None:
        return self.r.hget(self.prefix + "cursor", name)

    def buckets(self, keys: list[str]) -> dict[str, dict[str, int]]:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self.prefix + key)
        return {k: {f: int(v) for f, v in h.items()}
                for k, h in zip(keys, pipe.execute(), strict=True) if h}

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(self.prefix + "stats").items()}

    def pending_hours(self) -> list[str]:
        return sorted(self.r.smembers(self.prefix + "pending-hours"))

    def pending_take(self, hour: str, limit: int) -> list[str]:
        return self.r.lrange(self.prefix + "pending:" + hour, 0, limit - 1)

    def pending_trim(self, hour: str, first: str, n: int) -> None:
        self._trim(keys=[self.prefix + "pending:" + hour, self.prefix + "pending-hours"],
                   args=[first, n, hour])

    def lock(self, name: str, ttl_s: float) -> str | None:
        token = uuid.uuid4().hex
        ok = self.r.set(self.prefix + "lock:" + name, token, nx=True, px=int(ttl_s * 1000))
        return token if ok else None

    def unlock(self, name: str, token: str) -> None:
        self._unlock(keys=[self.prefix + "lock:" + name], args=[token])

    def expire(self) -> None:
        """Nothing to do: every key carries its TTL."""

    def close(self) -> None:
        self.r.close()


class SqliteState:
    """One file; the engine thread writes, the report reads (WAL: readers never block it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.url = f"sqlite:///{path.resolve()}"
        self._local = threading.local()
        with self._db() as db:
            db.executescript("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS seen(id TEXT PRIMARY KEY, at REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS agg(bucket TEXT, field TEXT, n INTEGER NOT NULL,
                                               PRIMARY KEY(bucket, field));
                CREATE TABLE IF NOT EXISTS pending(seq INTEGER PRIMARY KEY AUTOINCREMENT,
                                                   hour TEXT NOT NULL, raw TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS pending_hour ON pending(hour, seq);
                CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v TEXT NOT NULL);
            """)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def apply(self, events: list[Event], cursor: tuple[str, str] | None = None
              ) -> tuple[int, int]:
        db = self._db()
        new = dup = 0
        now = time.time()
        acc: dict[tuple[str, str], int] = {}
        lines: dict[str, list[str]] = {}
        db.execute("BEGIN IMMEDIATE")
        try:
            for eid, minute, hour, raw, incs in _batch(events):
                if db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (eid, now)).rowcount:
                    new += 1
                    lines.setdefault(hour, []).append(raw)  # type: ignore[arg-type]
                    for bucket in (f"m:{minute}", f"h:{hour}", "t"):
                        for f, n in incs.items():  # type: ignore[union-attr]
                            acc[bucket, f] = acc.get((bucket, f), 0) + n
                else:
                    dup += 1
            db.executemany("INSERT INTO pending(hour, raw) VALUES (?, ?)",
                           [(h, "\n".join(ls)) for h, ls in lines.items()])
            db.executemany("INSERT INTO agg VALUES (?, ?, ?) ON CONFLICT(bucket, field) "
                           "DO UPDATE SET n = n + excluded.n",
                           [(b, f, n) for (b, f), n in acc.items()])
            for k, n in (("stats:counted", new), ("stats:duplicates", dup)):
                db.execute("INSERT INTO kv VALUES (?, ?) ON CONFLICT(k) "
                           "DO UPDATE SET v = CAST(v AS INTEGER) + excluded.v", (k, str(n)))
            if cursor is not None:
                db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)",
                           (f"cursor:{cursor[0]}", cursor[1]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new, dup

    def cursor(self, name: str) -> str | None:
        row = self._db().execute("SELECT v FROM kv WHERE k = ?", (f"cursor:{name}",)).fetchone()
        return row[0] if row else None

    def buckets(self, keys: list[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        db = self._db()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for bucket, f, n in db.execute(
                    f"SELECT bucket, field, n FROM agg WHERE bucket IN ({marks})", chunk):
                out.setdefault(bucket, {})[f] = n
        return out

    def stats(self) -> dict[str, int]:
        rows = self._db().execute("SELECT k, v FROM kv WHERE k LIKE 'stats:%'").fetchall()
        return {k.removeprefix("stats:"): int(v) for k, v in rows}

    def pending_hours(self) -> list[str]:
        return [r[0] for r in self._db().execute("SELECT DISTINCT hour FROM pending ORDER BY 1")]

    def pending_take(self, hour: str, limit: int) -> list[str]:
        return [r[0] for r in self._db().execute(
            "SELECT raw FROM pending WHERE hour = ? ORDER BY seq LIMIT ?", (hour, limit))]

    def pending_trim(self, hour: str, first: str, n: int) -> None:
        db = self._db()
        rows = db.execute("SELECT seq, raw FROM pending WHERE hour = ? ORDER BY seq LIMIT ?",
                          (hour, n)).fetchall()
        if rows and rows[0][1] == first:
            db.execute("DELETE FROM pending WHERE hour = ? AND seq <= ?", (hour, rows[-1][0]))

    def lock(self, name: str, ttl_s: float) -> str | None:
        return "local"  # one process owns the file

    def unlock(self, name: str, token: str) -> None:
        pass

    def expire(self) -> None:
        """Forget old seen ids and minute buckets (Redis does this with TTLs)."""
        now = time.time()
        cutoff = time.strftime("m:%Y%m%d%H%M", time.gmtime(now - MINUTE_TTL_S))
        db = self._db()
        db.execute("DELETE FROM seen WHERE at < ?", (now - SEEN_TTL_S,))
        db.execute("DELETE FROM agg WHERE bucket LIKE 'm:%' AND bucket < ?", (cutoff,))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def open_state(url: str, prefix: str = "analytics:") -> RedisState | SqliteState:
    """``redis://...`` or ``sqlite:///path`` (a bare path is a SQLite file)."""
    parsed = urlparse(url)
    if parsed.scheme in ("redis", "rediss", "unix"):
        return RedisState(url, prefix)
    if parsed.scheme == "sqlite":
        return SqliteState(Path(parsed.path))
    if parsed.scheme in ("", "file"):
        return SqliteState(Path(parsed.path or url))
    raise ValueError(f"unsupported analytics state {url!r} (redis:// or sqlite:///path)")

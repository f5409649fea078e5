"""The Parquet archive: every event once, under ``events/date=YYYY-MM-DD/hour=HH/``.

The engine queues each newly counted event in the state store (same atomic step as the counters;
one queue entry per stored batch and hour, its lines joined by newlines, so the queue costs one
element per batch, not per event) and a flush moves the queue of one hour into one Parquet file
named after the first event it holds. The queue only grows at its tail, so a flush that crashed
after writing the file and before trimming the queue writes the same name again with the same
events first (a superset): the file is replaced, never duplicated. A lock in the state store
keeps two engine instances from flushing the same hour at once.

The store is the recorder's (``file://`` in ``parley up``, ``s3://`` in a deployment).
``query`` runs DuckDB over it with the view ``events``.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from parley.analytics.state import State
from parley.recorder.store import LocalStore, S3Store, open_store

log = logging.getLogger("parley.analytics.archive")
PREFIX = "events/"
MAX_ROWS_PER_FILE = 100_000  # a file stops at the entry that reaches this
MAX_ENTRIES = 200


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("type", pa.string()),
                      ("time", pa.timestamp("ms", tz="UTC")), ("room", pa.string()),
                      ("region", pa.string()), ("call_id", pa.string()),
                      ("instance", pa.string()), ("version", pa.int32()),
                      ("data", pa.string())])


class _Row(msgspec.Struct):
    """The archived columns of one line; ``data`` stays the JSON text it arrived as (no
    re-encoding: that and a second full parse were a third of the engine's time)."""

    id: Any = None
    type: Any = None
    time: Any = None
    room: Any = None
    region: Any = None
    callId: Any = None
    instance: Any = None
    version: Any = None
    data: msgspec.Raw = msgspec.Raw(b"{}")


_decode_row = msgspec.json.Decoder(_Row).decode
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _text(v: Any) -> str | None:
    return v if type(v) is str else None


def _ms(when: Any) -> int:
    t = dt.datetime.fromisoformat(str(when))
    t = t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    return (t - _EPOCH) // dt.timedelta(milliseconds=1)


def _times(values: list[Any]) -> Any:
    """The time column: Arrow parses RFC 3339 strings in C; anything it refuses (no offset,
    more than ms precision) per row in Python."""
    import pyarrow as pa

    try:
        return pa.array(values, type=pa.string()).cast(pa.timestamp("ms", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return [_ms(v) for v in values]


def parquet_bytes(lines: list[str]) -> bytes:
    """One Parquet file of these event lines, column by column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_decode_row(line) for line in lines]
    cols: dict[str, Any] = {
        "id": [r.id for r in rows], "type": [r.type for r in rows],
        "time": _times([r.time for r in rows]), "room": [_text(r.room) for r in rows],
        "region": [_text(r.region) for r in rows],
        "call_id": [_text(r.callId) for r in rows],
        "instance": [_text(r.instance) for r in rows],
        "version": [r.version if type(r.version) is int and abs(r.version) < 2**31 else None
                    for r in rows],
        "data": [bytes(r.data).decode() if bytes(r.data) != b"null" else "{}"
                 for r in rows]}
    schema = _schema()
    table = pa.table([c if isinstance(c := cols[f.name], pa.Array) else pa.array(c, type=f.type)
                      for f in schema], schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def hour_prefix(hour: str) -> str:
    """``YYYYMMDDHH`` -> ``events/date=YYYY-MM-DD/hour=HH/``."""
    return f"{PREFIX}date={hour[:4]}-{hour[4:6]}-{hour[6:8]}/hour={hour[8:10]}/"


class Archive:
    def __init__(self, store: LocalStore | S3Store, state: State,
                 retention_days: int = 90) -> None:
        self.store, self.state, self.retention_days = store, state, retention_days

    def flush(self) -> int:
        """Write every queued hour to Parquet; returns the number of events archived."""
        written = 0
        for hour in self.state.pending_hours():
            token = self.state.lock(f"flush:{hour}", 120)
            if token is None:
                continue  # another instance is flushing this hour
            try:
                while entries := self.state.pending_take(hour, MAX_ENTRIES):
                    lines: list[str] = []
                    used = 0
                    for entry in entries:  # an entry: one stored batch's new lines of the hour
                        lines += entry.split("\n")
                        used += 1
                        if len(lines) >= MAX_ROWS_PER_FILE:
                            break
                    first = _decode_row(lines[0]).id
                    self.store.put(f"{hour_prefix(hour)}{first}.parquet", parquet_bytes(lines))
                    self.state.pending_trim(hour, entries[0], used)
                    written += len(lines)
                    if used == len(entries) and len(entries) < MAX_ENTRIES:
                        break
            finally:
                self.state.unlock(f"flush:{hour}", token)
        return written

    def enforce_retention(self, now: dt.datetime | None = None) -> int:
        """Delete the files of days older than the retention; returns how many."""
        cutoff = ((now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=self.retention_days)
                  ).strftime("%Y-%m-%d")
        old = [k for k in self.store.list(PREFIX)
               if k[len(PREFIX):].startswith("date=") and k[len(PREFIX) + 5:][:10] < cutoff]
        for key in old:
            self.store.delete(key)
        return len(old)


def connect(store_url: str, cache: Path | None = None) -> Any:
    """A DuckDB connection with the view ``events`` over the archive at ``store_url``.

    A local archive is read in place; an S3 one is copied into ``cache`` first (DuckDB's S3
    support is an extension downloaded at run time; at scale point Trino or Spark, or DuckDB
    with httpfs, at the bucket instead: the layout is plain Hive partitioning)."""
    import duckdb

    store = open_store(store_url)
    con = duckdb.connect()
    keys = [k for k in store.list(PREFIX) if k.endswith(".parquet")]
    if isinstance(store, LocalStore):
        root = store.root
    else:
        root = Path(cache or tempfile.mkdtemp(prefix="parley-archive-"))
        for key in keys:
            dest = root / key
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                store.get_file(key, dest)
    columns = "id, type, time, room, region, call_id, instance, version, data"
    if keys:
        files = ", ".join("'" + str(root / k).replace("'", "''") + "'" for k in keys)
        con.execute(f"CREATE VIEW events AS SELECT {columns}, date, "
                    'CAST(hour AS INTEGER) AS "hour" '
                    f"FROM read_parquet([{files}], hive_partitioning = true)")
    else:
        con.execute("CREATE VIEW events AS SELECT NULL::VARCHAR id, NULL::VARCHAR type, "
                    "NULL::TIMESTAMPTZ time, NULL::VARCHAR room, NULL::VARCHAR region, "
                    "NULL::VARCHAR call_id, NULL::VARCHAR instance, NULL::INTEGER version, "
                    "NULL::VARCHAR data, NULL::DATE date, NULL::INTEGER AS \"hour\" WHERE false")
    return con


def table(columns: list[str], rows: list[tuple[Any, ...]], limit: int = 1000) -> str:
    """A plain-text table, the way a terminal user reads a query result."""
    shown = [[("NULL" if v is None else str(v)) for v in row] for row in rows[:limit]]
    widths = [max([len(c), *(len(r[i]) for r in shown)]) for i, c in enumerate(columns)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), line]
    out += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in shown]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}"
               + (f", first {limit} shown)" if len(rows) > limit else ")"))
    return "\n".join(out)


def query(store_url: str, sql: str) -> str:
    con = connect(store_url)
    cur = con.execute(sql)
    if cur.description is None:
        return "OK"
    return table([d[0] for d in cur.description], cur.fetchall())

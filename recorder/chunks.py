"""The chunk format and the per-track chunk writer.

A chunk is a few seconds of one track's encoded frames, written as one store object so that a
media-node crash loses at most the chunk still in memory. Format (all big-endian)::

    b"PRC1" | u32 header length | header JSON | records...
    record = i64 RTP timestamp (unwrapped) | i64 arrival wall clock (us) | u32 size | u8 flags
             | frame bytes            (flags bit 0: keyframe)

The header names recording, participant, track, kind, codec, clock rate, node, SSRC and, for
video, the frame size: enough for the file creator to rebuild the track with no other input.
Key: ``recordings/<id>/chunks/<participant>~<track>/<first arrival us:016d>-<node>.prc``.
"""

from __future__ import annotations

import json
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MAGIC = b"PRC1"
_REC = struct.Struct("!qqIB")
_SAFE = re.compile(r"[^A-Za-z0-9_.@+\-]")


def safe(name: str) -> str:
    """A participant or track id as a store key component."""
    return _SAFE.sub("_", name)[:80] or "_"


def track_dir(recording: str, participant: str, track: str) -> str:
    return f"recordings/{recording}/chunks/{safe(participant)}~{safe(track)}"


@dataclass(slots=True)
class Record:
    rtp_ts: int
    arrival_us: int
    keyframe: bool
    data: bytes


def encode(header: dict[str, Any], records: list[Record]) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    out = bytearray(MAGIC + struct.pack("!I", len(head)) + head)
    for r in records:
        out += _REC.pack(r.rtp_ts, r.arrival_us, len(r.data), 1 if r.keyframe else 0)
        out += r.data
    return bytes(out)


def decode(blob: bytes) -> tuple[dict[str, Any], Iterator[Record]]:
    if blob[:4] != MAGIC:
        raise ValueError("not a Parley recording chunk")
    (n,) = struct.unpack_from("!I", blob, 4)
    header = json.loads(blob[8:8 + n])

    def records() -> Iterator[Record]:
        i = 8 + n
        size = _REC.size
        while i + size <= len(blob):
            ts, arrival, length, flags = _REC.unpack_from(blob, i)
            i += size
            if i + length > len(blob):
                return  # truncated tail: keep what is whole
            yield Record(ts, arrival, bool(flags & 1), blob[i:i + length])
            i += length

    return header, records()


class ChunkWriter:
    """Collects one track's frames and hands a sealed chunk to ``put(key, bytes)`` every
    ``chunk_s`` seconds (and at ``close``). ``put`` must not block the caller: the tap passes a
    function that uploads on a worker thread."""

    def __init__(self, header: dict[str, Any], chunk_s: float,
                 put: Callable[[str, bytes], None]) -> None:
        self.header = header
        self.chunk_s = chunk_s
        self.put = put
        self.records: list[Record] = []
        self.started_us = 0
        self.sealed = 0
        self.bytes = 0
        self.frames = 0

    def add(self, rtp_ts: int, data: bytes, keyframe: bool, now_us: int | None = None) -> None:
        now_us = now_us if now_us is not None else time.time_ns() // 1000
        if not self.records:
            self.started_us = now_us
        elif now_us - self.started_us >= self.chunk_s * 1e6:
            self.seal()
            self.started_us = now_us
        self.records.append(Record(rtp_ts, now_us, keyframe, data))
        self.frames += 1
        self.bytes += len(data)

    def due(self, now_us: int) -> bool:
        return bool(self.records) and now_us - self.started_us >= self.chunk_s * 1e6

    def seal(self) -> None:
        if not self.records:
            return
        records, self.records = self.records, []
        h = self.header
        key = (f"{track_dir(h['recording'], h['participant'], h['track'])}"
               f"/{records[0].arrival_us:016d}-{safe(h['node'])}.prc")
        self.put(key, encode({**self.header, "index": self.sealed}, records))
        self.sealed += 1

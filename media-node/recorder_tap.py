"""The recorder tap: copies the encoded media a meeting forwards into chunks in a store.

No decoding: the tap sits in front of each publisher's ``UpTrack.on_rtp`` (wrapping the receiver
hook that ``publisher.py`` installs), depacketizes VP8/Opus RTP into frames (RFC 7741, 7587) and
writes them per track every ``chunk_s`` seconds (``parley.recorder.chunks``). Uploads run on one
worker thread so a slow store never stalls forwarding; a crash loses only the chunk in memory.
Control API: ``POST /v1/meetings/{meeting}/recording {action, id, store, chunk_s}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from aiortc.rtp import RtpPacket, unwrap_rtx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from parley.recorder.chunks import ChunkWriter, safe
from parley.recorder.depacketize import Depacketizer, Frame, vp8_size
from parley.recorder.store import Store, open_store

from .node import CallServer
from .publisher import UpTrack

log = logging.getLogger("parley.media.recorder")


class TrackTap:
    """One published track's frames into chunks."""

    def __init__(self, tap: RecordingTap, up: UpTrack) -> None:
        self.up = up
        codec = up.codec.mimeType
        self.writer = ChunkWriter({
            "recording": tap.recording, "participant": up.owner, "track": up.track_id,
            "kind": up.kind, "codec": codec.lower(), "clockRate": up.codec.clockRate,
            "channels": getattr(up.codec, "channels", None) or (2 if up.kind == "audio" else None),
            "node": tap.node, "run": f"{tap.node}-{id(self):x}", "width": None, "height": None,
        }, tap.chunk_s, tap.upload)
        self.depacketizer = Depacketizer(codec, self._frame, up.request_keyframe)
        self.payload_bytes = 0
        self._inner = up.receiver._handle_rtp_packet

        async def tapped(packet: RtpPacket, arrival_time_ms: int = 0) -> None:
            try:
                self.on_rtp(packet)
            except Exception:  # recording must never break forwarding
                log.exception("recorder tap failed on %s", up.track_id)
            await self._inner(packet, arrival_time_ms)

        self._tapped = tapped
        up.receiver._handle_rtp_packet = tapped  # type: ignore[method-assign]
        up.recorders += 1  # keeps the top layer from being paused
        up.request_keyframe()  # start the recording on a keyframe now, not at the next one

    def on_rtp(self, packet: RtpPacket) -> None:
        up = self.up
        top = up.layers[-1]  # a simulcast track is recorded at its top layer
        if up.simulcast and packet.ssrc != top.ssrc and packet.ssrc != top.rtx_ssrc:
            return
        if packet.payload_type != up.pt:
            if packet.payload_type != up.rtx_pt or up.ssrc is None or len(packet.payload) < 2:
                return
            packet = unwrap_rtx(packet, up.pt, up.ssrc)  # RFC 4588
        self.payload_bytes += len(packet.payload)
        self.depacketizer.push(packet.sequence_number, packet.timestamp, packet.marker,
                               packet.payload)

    def _frame(self, frame: Frame) -> None:
        if frame.keyframe and self.up.kind == "video":
            size = vp8_size(frame.data)
            if size:
                self.writer.header["width"], self.writer.header["height"] = size
        self.writer.add(frame.rtp_ts, frame.data, frame.keyframe)

    def detach(self) -> None:
        if self.up.receiver._handle_rtp_packet is self._tapped:
            self.up.receiver._handle_rtp_packet = self._inner  # type: ignore[method-assign]
        self.up.recorders -= 1
        self.writer.seal()

    def summary(self) -> dict[str, Any]:
        return {"participant": self.up.owner, "track": self.up.track_id, "kind": self.up.kind,
                "codec": self.writer.header["codec"], "frames": self.writer.frames,
                "frameBytes": self.writer.bytes, "rtpPayloadBytes": self.payload_bytes,
                "chunks": self.writer.sealed, "dropped": self.depacketizer.dropped}


class RecordingTap:
    """All tracks of one meeting on this node, for one recording."""

    def __init__(self, server: CallServer, meeting: str, recording: str, store: Store,
                 chunk_s: float) -> None:
        self.server = server
        self.meeting = meeting
        self.recording = recording
        self.store = store
        self.chunk_s = chunk_s
        self.node = server.id
        self.tracks: dict[int, TrackTap] = {}
        self.ended: list[TrackTap] = []
        self.upload_errors = 0
        self.started = time.time()
        self._uploads = ThreadPoolExecutor(1, thread_name_prefix=f"rec-{recording[:8]}")
        self._pending: list[Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    def upload(self, key: str, data: bytes) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        fut = self._uploads.submit(self.store.put, key, data)
        fut.add_done_callback(self._uploaded)
        self._pending.append(fut)

    def _uploaded(self, fut: Future[None]) -> None:
        if fut.exception() is not None:
            self.upload_errors += 1
            log.error("chunk upload failed: %s", fut.exception())

    def start(self) -> None:
        self.sync()
        self._task = asyncio.ensure_future(self._loop())

    def sync(self) -> None:
        """Tap tracks published since the last look; seal the tracks that ended."""
        meeting = self.server.meetings.get(self.meeting)
        ups = {id(u): u for u in (meeting.uptracks() if meeting else [])}
        for key, up in ups.items():
            if key not in self.tracks and up.codec.mimeType.lower() in ("video/vp8",
                                                                         "audio/opus"):
                self.tracks[key] = TrackTap(self, up)
        for key in [k for k in self.tracks if k not in ups]:
            t = self.tracks.pop(key)
            t.detach()
            self.ended.append(t)
        now_us = time.time_ns() // 1000
        for t in self.tracks.values():  # a silent track still ends its chunk on time
            if t.writer.due(now_us):
                t.writer.seal()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.sync()

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in self.tracks.values():
            t.detach()
        self.ended.extend(self.tracks.values())
        self.tracks = {}
        summary = {"recording": self.recording, "meeting": self.meeting, "node": self.node,
                   "started": self.started, "stopped": time.time(),
                   "tracks": [t.summary() for t in self.ended]}
        self.upload(f"recordings/{self.recording}/nodes/{safe(self.node)}.json",
                    json.dumps(summary).encode())
        self._uploads.shutdown(wait=False)
        await asyncio.to_thread(lambda: [f.exception() for f in list(self._pending)])
        summary["uploadErrors"] = self.upload_errors
        return summary


class RecordingControl(BaseModel):
    action: str
    id: str
    store: str
    chunk_s: float = 2.0


def add_routes(app: FastAPI, server: CallServer) -> None:
    """Mount the recording control endpoints on the call server's control API."""
    taps: dict[str, RecordingTap] = {}

    @app.post("/v1/meetings/{meeting}/recording")
    async def recording(meeting: str, body: RecordingControl) -> dict[str, Any]:
        if body.action == "start":
            if meeting in taps:
                return {"recording": taps[meeting].recording, "node": server.id,
                        "state": "recording"}
            if not 0.5 <= body.chunk_s <= 30:
                raise HTTPException(400, "chunk_s must be within 0.5-30 s")
            try:
                store = await asyncio.to_thread(open_store, body.store)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from exc
            tap = taps[meeting] = RecordingTap(server, meeting, body.id, store, body.chunk_s)
            tap.start()
            return {"recording": body.id, "node": server.id, "state": "recording",
                    "tracks": len(tap.tracks)}
        if body.action == "stop":
            tap = taps.pop(meeting, None)
            if tap is None or tap.recording != body.id:
                raise HTTPException(404, "no such recording on this node")
            return {"state": "stopped", **await tap.stop()}
        raise HTTPException(400, "action must be start or stop")

"""`parley media-node --role transcoder` for a meeting (``PARLEY_MEETING`` set): decodes each
source a call server routes to it once (VP8, VP9, or AV1 with libdav1d) and encodes it once per
distinct output (codec, height, bitrate), never upward: a budget rung in the source's own codec
(VP8 or VP9, libvpx realtime; none for AV1, which has no encoder here fit for it), or H.264 for
a subscriber that cannot decode the source; the call server forwards the outputs to
the subscribers that need them.

The operator runs it as the Deployment of a Meeting with ``spec.transcoding.enabled``
(``PARLEY_MEETING=namespace/name``), where it announces its address in Redis for the meeting's
call server (``parley:media:transcoder:<room>``, refreshed every second, 3 s TTL); `parley up`
runs one local process for every meeting (``PARLEY_MEETING=*``) whose address the embedded call
server is given. The wire is plain RTP and JSON datagrams (meeting_transcoder_wire.py).

Decoding and encoding run on one worker thread per source (PyAV releases the GIL in
libavcodec), behind a queue of at most ``QUEUE_LIMIT`` frames: a source the worker cannot keep
up with drops frames and restarts on a keyframe, never queues latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import logging
import os
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
from aiortc.codecs.h264 import H264Encoder
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from parley.recorder.depacketize import Depacketizer
from parley.recorder.depacketize import Frame as SourceFrame

from .av1 import Av1Depacketizer
from .broadcast.ladder import Rung
from .meeting_transcoder_wire import (
    DECODERS,
    OUTPUT_CODECS,
    PT_H264,
    PT_VP8,
    PT_VP9,
    REGISTRY_KEY,
    STALE_S,
    OutputSpec,
    control,
    is_control,
    parse_control,
    parse_rtp,
    source_codec,
)
from .rtp import pack_header

log = logging.getLogger("parley.media.meeting_transcoder")
QUEUE_LIMIT = 8  # source frames waiting for the worker; beyond that it fell behind
VPX_PAYLOAD = 1200  # VP8 / VP9 bytes per RTP packet
REGISTER_EVERY_S, REGISTER_TTL_S = 1.0, 3
_TB = fractions.Fraction(1, 90000)

SOURCES = Gauge("parley_meeting_transcoder_sources", "sources being decoded")
OUTPUTS = Gauge("parley_meeting_transcoder_outputs", "distinct outputs being encoded",
                ["codec"])
DECODED = Counter("parley_meeting_transcoder_frames_decoded_total", "source frames decoded")
DROPPED = Counter("parley_meeting_transcoder_frames_dropped_total",
                  "source frames dropped because the worker fell behind")


class OutputEncoder:
    """One output's encoder: scales the decoded picture down to the output's height (never up,
    ``Rung.size_for``), encodes it with libvpx VP8 or VP9 (realtime, CBR, no look-ahead) or
    libx264 H.264 (baseline, zerolatency), keyframes only when asked (a leg switching to it, a
    subscriber's PLI); the codec context is re-made when the source's size changes.

    VP9 takes what WebRTC's own libvpx-vp9 wrapper sets for a one-layer camera: cyclic-refresh
    adaptive quantization (aq-mode 3), one tile, no frame-parallel mode, and no error-resilient
    mode (it gives up VP9's adaptive probability contexts; WebRTC sets it for SVC only), at the
    same speed (cpu-used 8) as the VP8 encoder. No look-ahead: no alt-ref frames, so no
    superframes and one RTP frame per picture."""

    def __init__(self, codec: str, rung: Rung, x264_preset: str = "veryfast") -> None:
        self.codec = codec
        self.rung = rung
        self.x264_preset = x264_preset
        self.size: tuple[int, int] | None = None
        self.ctx: Any = None

    def _open(self, size: tuple[int, int]) -> None:
        bps = self.rung.bitrate_kbps * 1000
        if self.codec == "video/h264":
            ctx = av.CodecContext.create("libx264", "w")
            ctx.profile = "Baseline"
            ctx.options = {"preset": self.x264_preset, "tune": "zerolatency", "forced-idr": "1",
                           "x264-params": "keyint=100000:min-keyint=100000:scenecut=0"}
        else:
            vp9 = self.codec == "video/vp9"
            ctx = av.CodecContext.create("libvpx-vp9" if vp9 else "libvpx", "w")
            ctx.gop_size = 100_000
            ctx.qmin, ctx.qmax = 4, 56
            options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                       "static-thresh": "1", "bufsize": str(bps), "minrate": str(bps),
                       "maxrate": str(bps), "undershoot-pct": "100", "overshoot-pct": "15"}
            if vp9:
                options.update({"aq-mode": "3", "tile-columns": "0", "row-mt": "0",
                                "frame-parallel": "0"})
            else:
                options["error-resilient"] = "1"
            ctx.options = options
        ctx.width, ctx.height = size
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = bps
        ctx.time_base = _TB
        ctx.framerate = fractions.Fraction(30, 1)
        ctx.thread_count = 1
        ctx.open()
        self.ctx, self.size = ctx, size

    def encode(self, picture: av.VideoFrame, ts: int,
               key: bool) -> list[tuple[bytes, int, bool]]:
        """(encoded frame, 90 kHz timestamp, keyframe) for ``picture``; a keyframe when ``key``."""
        size = self.rung.size_for(picture.width, picture.height)
        if size != self.size:
            self._open(size)
            key = True
        out = picture.reformat(width=size[0], height=size[1], format="yuv420p")
        out.pts, out.time_base = ts, _TB
        out.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
        return [(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in self.ctx.encode(out)]


def packetize_vp8(frame: bytes, picture_id: int) -> list[bytes]:
    """RFC 7741 payloads of one VP8 frame, each with a 15-bit PictureID (the form the call
    server's legs continue across switches)."""
    head = bytes([0x80, 0x80, 0x80 | (picture_id >> 8), picture_id & 0xFF])
    first = bytes([0x90]) + head[1:]
    return [(first if i == 0 else head) + frame[i:i + VPX_PAYLOAD]
            for i in range(0, len(frame), VPX_PAYLOAD)]


def packetize_vp9(frame: bytes, picture_id: int, tl0: int, key: bool,
                  size: tuple[int, int]) -> list[bytes]:
    """RFC 9628 payloads of one VP9 frame as a one-layer WebRTC sender writes them (the form the
    call server's legs continue across switches, and Chromium's non-flexible-mode reference
    finder needs): I with a 15-bit PictureID, L with TID 0 / SID 0 and TL0PICIDX (every frame is
    a base-layer frame, so it counts up by one per frame), P on inter frames, B and E on the
    frame's first and last packet. A keyframe's first packet carries the scalability structure
    (section 4.2.1): V with one spatial layer, its size (Y) and a one-frame picture group (G:
    TID 0, one reference, P_DIFF 1)."""
    flags = 0xA0 | (0 if key else 0x40)  # I, L (and P)
    tail = bytes([0x80 | (picture_id >> 8), picture_id & 0xFF, 0x00, tl0 & 0xFF])
    ss = (bytes([0x18]) + size[0].to_bytes(2, "big") + size[1].to_bytes(2, "big")
          + bytes([1, 0x04, 1])) if key else b""
    count = max(1, -(-len(frame) // VPX_PAYLOAD))
    step = -(-len(frame) // count)  # equal parts, none a runt
    out = []
    for i in range(count):
        b0 = flags | (0x08 if i == 0 else 0) | (0x04 if i == count - 1 else 0)
        if i == 0 and ss:
            out.append(bytes([b0 | 0x02]) + tail + ss + frame[:step])
        else:
            out.append(bytes([b0]) + tail + frame[i * step:(i + 1) * step])
    return out


def packetize_h264(access_unit: bytes) -> list[bytes]:
    """RFC 6184 payloads (STAP-A / FU-A, packetization-mode 1) of one Annex B access unit."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(access_unit))


class Output:
    """One encoder of a source and the RTP numbering of what it sends."""

    def __init__(self, spec: OutputSpec, x264_preset: str) -> None:
        self.spec = spec
        self.encoder = OutputEncoder(spec.codec, Rung(f"{spec.height}p", spec.height,
                                                      spec.kbps), x264_preset)
        self.force_key = True
        self.seq = random.randint(0, 0xFFFF)
        self.picture_id = random.randint(0, 0x7FFF)
        self.tl0 = random.randint(0, 0xFF)
        self.pt = {"video/h264": PT_H264, "video/vp9": PT_VP9}.get(spec.codec, PT_VP8)
        self.frames = 0
        self.bytes = 0

    def packets(self, data: bytes, ts: int, key: bool) -> list[bytes]:
        """The RTP datagrams of one encoded frame (event loop, once per frame)."""
        if self.pt == PT_VP8:
            payloads = packetize_vp8(data, self.picture_id)
            self.picture_id = (self.picture_id + 1) & 0x7FFF
        elif self.pt == PT_VP9:
            payloads = packetize_vp9(data, self.picture_id, self.tl0, key,
                                     self.encoder.size or (0, 0))
            self.picture_id = (self.picture_id + 1) & 0x7FFF
            self.tl0 = (self.tl0 + 1) & 0xFF
        else:
            payloads = packetize_h264(data)
        out = []
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            self.seq = (self.seq + 1) & 0xFFFF
            out.append(pack_header(0x80, (int(i == last) << 7) | self.pt, self.seq, ts,
                                   self.spec.id) + payload)
        self.frames += 1
        self.bytes += len(data)
        return out


class Source:
    """One routed source (a call server's track layer): decoded once, encoded per output."""

    def __init__(self, service: MeetingTranscoder, addr: tuple[str, int], ssrc: int,
                 codec: str = "video/vp8") -> None:
        self.service = service
        self.codec = codec
        self.addr = addr
        self.ssrc = ssrc
        self.outputs: dict[int, Output] = {}
        self.wanted = time.monotonic()
        self.decoded = self.dropped = self.errors = 0
        self.cpu_s = 0.0
        self.started = time.monotonic()
        self.width = self.height = 0
        # FFmpeg's own decoders (vp8, vp9) take RFC 7741 / RFC 9628 frames; libdav1d (AV1) takes
        # temporal units, one thread and a one-frame delay (a picture out per unit in)
        self._decoder = av.CodecContext.create(DECODERS[codec], "r")
        if codec == "video/av1":
            self._decoder.thread_count = 1
            self._decoder.options = {"max_frame_delay": "1"}
        self._depacketizer = (Av1Depacketizer if codec == "video/av1" else Depacketizer)(
            codec, self._frame, self.ask_keyframe)
        self._queue: asyncio.Queue[SourceFrame] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="meeting-transcode")
        self._task = asyncio.ensure_future(self._run())
        self.ask_keyframe()

    def ask_keyframe(self) -> None:
        self.service.send(control({"t": "key", "source": self.ssrc}), self.addr)

    def want(self, specs: list[OutputSpec]) -> None:
        """The outputs the call server needs now; an output whose spec changed is re-made."""
        self.wanted = time.monotonic()
        keep = {s.id: s for s in specs}
        for oid in [o for o in self.outputs if self.outputs[o].spec != keep.get(o)]:
            del self.outputs[oid]
        for spec in specs:
            if spec.id not in self.outputs:
                self.outputs[spec.id] = Output(spec, self.service.x264_preset)

    def push(self, seq: int, ts: int, marker: int, payload: bytes) -> None:
        self._depacketizer.push(seq, ts, bool(marker), payload)

    def _frame(self, frame: SourceFrame) -> None:
        if self._queue.qsize() >= QUEUE_LIMIT:  # the worker fell behind: drop, restart on a key
            n = self._queue.qsize() + 1
            self.dropped += n
            DROPPED.inc(n)
            while not self._queue.empty():
                self._queue.get_nowait()
            self._depacketizer.need_keyframe = True
            self.ask_keyframe()
            return
        self._queue.put_nowait(frame)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self._queue.get()
            outputs = list(self.outputs.values())
            try:
                out = await loop.run_in_executor(self._pool, self._transcode, frame, outputs)
            except Exception as exc:  # a damaged frame (or a bug): restart on a keyframe
                self.errors += 1
                log.warning("source %08x: %r", self.ssrc, exc)
                self._depacketizer.need_keyframe = True
                self.ask_keyframe()
                continue
            DECODED.inc()
            for output, data, ts, key in out:
                for datagram in output.packets(data, ts, key):
                    self.service.send(datagram, self.addr)

    def _transcode(self, frame: SourceFrame,
                   outputs: list[Output]) -> list[tuple[Output, bytes, int, bool]]:
        """Worker thread: decode once, encode each output (a keyframe where one was asked)."""
        t0 = time.thread_time()
        out = []
        for picture in self._decoder.decode(av.Packet(frame.data)):
            self.decoded += 1
            self.width, self.height = picture.width, picture.height
            for output in outputs:
                key, output.force_key = output.force_key, False
                for data, ts, keyframe in output.encoder.encode(picture, frame.rtp_ts, key):
                    out.append((output, data, ts & 0xFFFFFFFF, keyframe))
        self.cpu_s += time.thread_time() - t0
        return out

    def close(self) -> None:
        self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        age = max(1e-3, time.monotonic() - self.started)
        return {"source": self.ssrc, "codec": self.codec, "width": self.width,
                "height": self.height,
                "decoded": self.decoded, "dropped": self.dropped, "errors": self.errors,
                "cpuPercent": round(100 * self.cpu_s / age, 1),
                "outputs": [{"id": o.spec.id, "codec": o.spec.codec, "height": o.spec.height,
                             "kbps": o.spec.kbps, "frames": o.frames,
                             "size": list(o.encoder.size or (0, 0))}
                            for o in self.outputs.values()]}


class MeetingTranscoder(asyncio.DatagramProtocol):
    """The process's UDP endpoint: sources by (call server address, SSRC)."""

    def __init__(self, x264_preset: str = "veryfast") -> None:
        self.x264_preset = x264_preset
        self.sources: dict[tuple[tuple[str, int], int], Source] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.id = f"tx-{random.getrandbits(32):08x}"
        self.bad = 0  # datagrams that were neither RTP nor a control message
        self._sweep: asyncio.Task[None] | None = None

    async def open(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        with contextlib.suppress(OSError):  # a keyframe arrives as a burst of 50-150 packets
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                                          1 << 22)
        self.transport = transport  # type: ignore[assignment]
        self._sweep = asyncio.ensure_future(self._drop_stale())
        return int(transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if is_control(data):
            try:
                self._control(parse_control(data), addr)
            except (ValueError, TypeError, KeyError) as exc:
                self.bad += 1
                log.debug("bad control datagram from %s: %s", addr, exc)
            return
        rtp = parse_rtp(data)
        source = self.sources.get((addr, rtp[0])) if rtp is not None else None
        if source is None:
            self.bad += rtp is None
            return
        source.push(*rtp[1:])

    def _control(self, message: dict[str, Any], addr: tuple[str, int]) -> None:
        kind = message["t"]
        if kind == "want":
            ssrc = int(message["source"]) & 0xFFFFFFFF
            specs = [OutputSpec.from_list(o) for o in message["outputs"]]
            codec = source_codec(message)
            source = self.sources.get((addr, ssrc))
            if source is None:
                source = self.sources[(addr, ssrc)] = Source(self, addr, ssrc, codec)
                log.info("source %08x (%s) from %s:%d", ssrc, codec, *addr)
            source.want(specs)
            self._gauges()
        elif kind == "drop":
            source = self.sources.pop((addr, int(message["source"])), None)
            if source is not None:
                source.close()
                self._gauges()
            return
        elif kind == "key":
            for s in self.sources.values():
                out = s.outputs.get(int(message["output"])) if s.addr == addr else None
                if out is not None:
                    out.force_key = True
            return
        elif kind != "hello":
            raise ValueError(f"unknown control message {kind!r}")
        self.send(control({"t": "alive", "id": self.id, "sources": [
            s.status() for s in self.sources.values() if s.addr == addr]}), addr)

    async def _drop_stale(self) -> None:
        """A source whose call server stopped wanting it (it died, the route moved) goes."""
        while True:
            await asyncio.sleep(STALE_S / 2)
            now = time.monotonic()
            for key, source in list(self.sources.items()):
                if now - source.wanted > STALE_S:
                    del self.sources[key]
                    source.close()
                    log.info("source %08x stale, dropped", source.ssrc)
            self._gauges()

    def _gauges(self) -> None:
        SOURCES.set(len(self.sources))
        for codec in OUTPUT_CODECS:
            OUTPUTS.labels(codec).set(sum(1 for s in self.sources.values()
                                          for o in s.outputs.values() if o.spec.codec == codec))

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        for source in self.sources.values():
            source.close()
        self.sources.clear()
        if self.transport is not None:
            self.transport.close()

    def status(self) -> dict[str, Any]:
        return {"id": self.id, "sources": [s.status() for s in self.sources.values()],
                "badDatagrams": self.bad}


def advertised_address() -> str:
    """The address a call server reaches this pod at: POD_IP (the operator's downward API),
    else the host name's address."""
    return os.environ.get("POD_IP") or socket.gethostbyname(socket.gethostname())


async def _register(redis: Any, key: str, address: str) -> None:
    """Keep ``key`` -> ``address`` in Redis while the process lives (SIGKILL: it expires)."""
    while True:
        try:
            await redis.set(key, address, ex=REGISTER_TTL_S)
        except Exception as exc:  # Redis away: the call server keeps the last address it read
            log.warning("transcoder registration not written: %s", exc)
        await asyncio.sleep(REGISTER_EVERY_S)


async def serve_meeting_transcoder(args: argparse.Namespace) -> None:
    from .broadcast.serving import serve_role

    meeting = os.environ.get("PARLEY_MEETING", "").strip()
    if not meeting:
        raise SystemExit("a meeting transcoder needs PARLEY_MEETING (namespace/name, or * in "
                         "`parley up`)")
    udp_port = args.udp_port if args.udp_port is not None else 7882
    service = MeetingTranscoder(os.environ.get("PARLEY_X264_PRESET", "veryfast"))
    port = await service.open(args.host, udp_port)
    room = meeting.replace("/", ".")
    registration: asyncio.Task[None] | None = None
    redis: Any = None
    redis_url = args.redis_url or os.environ.get("PARLEY_REDIS_URL")
    if redis_url and meeting != "*":
        from redis.asyncio import Redis

        redis = Redis.from_url(redis_url)
        registration = asyncio.ensure_future(_register(
            redis, REGISTRY_KEY.format(room=room), f"{advertised_address()}:{port}"))

    app = FastAPI(title="Parley meeting transcoder")
    app.add_api_route("/livez", lambda: {"status": "ok"}, methods=["GET"])
    app.add_api_route("/readyz", lambda: {"status": "ready"}, methods=["GET"])
    app.add_api_route("/v1/status", lambda: {"meeting": meeting, "udpPort": port,
                                             **service.status()}, methods=["GET"])
    app.add_api_route("/metrics", lambda: Response(generate_latest(),
                                                   media_type=CONTENT_TYPE_LATEST),
                      methods=["GET"])
    print(f"meeting transcoder for {meeting} on udp {port}", flush=True)

    async def close() -> None:
        if registration is not None:
            registration.cancel()
            with contextlib.suppress(Exception):
                await redis.delete(REGISTRY_KEY.format(room=room))
            await redis.aclose()
        service.close()
    await serve_role(app, args.host, args.port, close)

"""Per-receiver transcoding, the call server's side: which legs need a transcoded output, and
the routes that carry sources to the meeting's transcoder process and its outputs back.

A subscriber gets an output of the meeting's transcoder (meeting_transcoder.py, a process of its
own) when no layer of a track suits it: its budget (downlink estimate, capped by its own
``maxBitrate``) cannot carry the track's lowest layer (``plan``: a *rung* of ``MEETING_LADDER``
in the track's own codec, VP8 or VP9, since the leg keeps the payload type it negotiated; none
for an AV1 track, which the transcoder decodes but cannot encode), or it
cannot decode the track's codec at all (a subscriber whose offer lacks it: ``codec_rung``, H.264
at the height of the layer it would get, or the budget's rung).
Never upward: a rung is below its source's height and rate; a source already at or below the
subscriber's rung is forwarded as it is.

A ``SourceRoute`` is one track layer sent to the transcoder: it sits on the layer as one more
leg whose ``forward`` is one ``sendto`` per packet (not per subscriber); a ``RungLayer`` is one
output coming back, fed to legs like a layer (``DownTrack.aim`` switches to it and back on
keyframes, with SSRC, sequence numbers, timestamps and the VP8 / VP9 PictureID and TL0PICIDX
continued). The
transcoder decodes once per route and encodes once per distinct output; two subscribers on the
same output share it. ``Transcoding`` finds each meeting's transcoder (a fixed address, or the
one the operator's Deployment announces in Redis), sends the routes' ``want`` leases every
allocation and declares it lost after ``DEAD_AFTER_S`` of silence: its routes end, and each
participant moves the legs on them back to the lowest layer (``Participant.allocate``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .allocation import RAISE_HEADROOM, rate
from .broadcast.ladder import Rung, default_bitrate_kbps
from .meeting_transcoder_wire import (
    DEAD_AFTER_S,
    OUTPUT_CODECS,
    PT_SOURCE,
    REGISTRY_KEY,
    SOURCE_CODECS,
    OutputSpec,
    control,
    is_control,
    parse_control,
    parse_rtp,
)
from .publisher import HISTORY, Layer, UpTrack
from .rtp import PICTURE_IDS, abs_send_time, keyframe_detector, pack_header
from .tasks import spawn

if TYPE_CHECKING:
    from .subscriber import DownTrack

log = logging.getLogger("parley.media.transcoding")
# The rungs a meeting's subscribers can get below a track's lowest layer (highest first).
MEETING_LADDER = (Rung("180p", 180, 120), Rung("90p", 90, 50))
H264 = "video/h264"
LOOKUP_EVERY_S = 1.0  # a meeting's transcoder address is read again from Redis this often


class RungLayer(Layer):
    """One output of the transcoder for a track, fed to legs like a layer. A keyframe request
    (a leg switching to it, a subscriber's PLI) asks the transcoder for one, coalesced like a
    PLI upstream; NACKs are answered from this layer's history."""

    __slots__ = ("codec", "dead", "detect", "numbered", "output", "route", "rung")

    def __init__(self, route: SourceRoute, rung: Rung, codec: str) -> None:
        super().__init__(route.up, -1, rung.name)
        self.route = route
        self.rung = rung
        self.codec = codec
        # VP8 / VP9: PictureID and TL0PICIDX a leg continues from the source's layers
        self.numbered = codec in PICTURE_IDS
        self.output = OutputSpec(random.getrandbits(32), codec, rung.height, rung.bitrate_kbps)
        self.detect = keyframe_detector(codec)
        self.dead = False  # its transcoder was lost: legs on it fall back
        self.height = min(rung.height, route.layer.height) if route.layer.height > 0 else \
            rung.height

    def _send_pli(self) -> None:
        self.route.transcoding.send(control({"t": "key", "output": self.output.id}),
                                    self.route.addr)

    def on_packet(self, seq: int, ts: int, marker: int, payload: bytes) -> None:
        """One packet of this output to every leg on it (the socket reader)."""
        key = self.detect(payload)
        now = time.perf_counter()
        self.last_time = now
        self.last_ts = ts
        ast = abs_send_time(now)
        for dt in self.downtracks:
            dt.forward(self, seq, ts, marker, payload, key, ast)
        self.history[seq & (HISTORY - 1)] = (seq, ts, marker, payload)
        self.packets += 1
        self.bytes += len(payload)


class SourceRoute:
    """One track layer carried to the meeting's transcoder, and the outputs made of it."""

    def __init__(self, transcoding: Transcoding, meeting: str, addr: tuple[str, int],
                 up: UpTrack, index: int) -> None:
        self.transcoding = transcoding
        self.meeting = meeting
        self.addr = addr
        self.up = up
        self.layer = up.layers[index]
        self.ssrc = random.getrandbits(32)
        self.outputs: dict[tuple[str, str, int], RungLayer] = {}
        self.closed = False
        self.started = time.monotonic()
        self.layer.downtracks = [*self.layer.downtracks, self]  # type: ignore[list-item]
        self.layer.request_keyframe()

    def output(self, rung: Rung, codec: str) -> RungLayer:
        key = (codec, rung.name, rung.bitrate_kbps)
        layer = self.outputs.get(key)
        if layer is None:
            layer = self.outputs[key] = RungLayer(self, rung, codec)
            self.transcoding.by_output[layer.output.id] = layer
            self.want()
        return layer

    def forward(self, layer: Layer, seq: int, ts: int, marker: int, payload: bytes,
                key: bool, ast: bytes = b"") -> None:
        """The hot loop's call (as for a ``DownTrack``): the packet on to the transcoder."""
        try:
            self.transcoding.sock.sendto(pack_header(0x80, (marker << 7) | PT_SOURCE, seq, ts,
                                                     self.ssrc) + payload, self.addr)
        except OSError:  # buffer full or the transcoder gone: a lost frame, the lease notices
            pass

    def want(self) -> None:
        self.transcoding.send(control({
            "t": "want", "source": self.ssrc, "codec": self.up.codec.mimeType.lower(),
            "outputs": [o.output.as_list() for o in self.outputs.values()]}), self.addr)

    def close(self, dead: bool = False) -> None:
        """Stop sending (nobody needs it, the publisher left, or its transcoder was lost)."""
        if self.closed:
            return
        self.closed = True
        self.layer.remove(self)  # type: ignore[arg-type]
        for out in self.outputs.values():
            out.dead = dead
            out.keyframes.close()
            self.transcoding.by_output.pop(out.output.id, None)
        if not dead:
            self.transcoding.send(control({"t": "drop", "source": self.ssrc}), self.addr)

    def status(self, remote: dict[str, Any] | None) -> dict[str, Any]:
        remote = remote or {}
        return {"participant": self.up.owner, "track": self.up.track_id,
                "layer": self.layer.index, "sourceHeight": self.layer.height,
                "transcoder": f"{self.addr[0]}:{self.addr[1]}",
                "sourceCodec": self.up.codec.mimeType.lower(),
                "decoded": remote.get("decoded", 0), "dropped": remote.get("dropped", 0),
                "errors": remote.get("errors", 0),
                "cpuPercent": remote.get("cpuPercent", 0.0),
                "rungs": [{"rung": r.rung.name, "codec": r.codec, "height": r.height,
                           "legs": len(r.downtracks), "kbps": round(r.bitrate / 1000)}
                          for r in self.outputs.values()]}


class TranscoderLink:
    """What the call server knows of one transcoder process: when it last answered."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.heard = 0.0
        self.id = ""
        self.sources: dict[int, dict[str, Any]] = {}  # its status per source SSRC
        self.lost = 0  # times it went silent with routes on it

    def alive(self, now: float) -> bool:
        return now - self.heard < DEAD_AFTER_S


class Transcoding:
    """The node's routes to meetings' transcoders, started on demand, stopped when no leg
    receives or waits for any of their outputs.

    ``address``: one transcoder for every meeting (``host:port``; `parley up`'s local process,
    or ``PARLEY_MEETING_TRANSCODER``); else each meeting's is read from Redis (``redis``), where
    the operator's Deployment announces it; or ``launcher`` starts a local one on the first
    demand and returns its address (`parley up`). None of them: no transcoding."""

    def __init__(self, address: str | None = None, redis: Any = None,
                 launcher: Callable[[], str] | None = None) -> None:
        self.static = parse_addr(address) if address else None
        self.redis = redis
        self.launcher = launcher
        self.routes: dict[tuple[int, int], SourceRoute] = {}  # (id(UpTrack), layer index)
        self.by_output: dict[int, RungLayer] = {}
        self.links: dict[tuple[str, int], TranscoderLink] = {}
        self._addresses: dict[str, tuple[float, tuple[str, int] | None]] = {}  # meeting ->
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.static is not None or self.redis is not None or self.launcher is not None

    def demand(self) -> None:
        """A subscriber needs an output and no transcoder answers: start the local one if this
        node has a launcher (once; it answers the next hello when it is up)."""
        if self.launcher is not None and self.static is None:
            launch, self.launcher = self.launcher, None
            self.static = parse_addr(launch())

    @property
    def sock(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            sock.bind(("0.0.0.0", 0))
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
            self._sock = sock
        return self._sock

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:  # unreachable now: the lease decides whether it is lost
            log.debug("to transcoder %s: %s", addr, exc)

    # -- which transcoder, and is it there ----------------------------------------------------
    def address(self, meeting: str) -> tuple[str, int] | None:
        if self.static is not None:
            return self.static
        return self._addresses.get(meeting, (0.0, None))[1]

    def available(self, meeting: str, now: float | None = None) -> bool:
        """The meeting has a transcoder that answered within ``DEAD_AFTER_S``."""
        addr = self.address(meeting)
        link = self.links.get(addr) if addr is not None else None
        return link is not None and link.alive(time.monotonic() if now is None else now)

    async def _lookup(self, meeting: str) -> None:
        try:
            raw = await asyncio.wait_for(self.redis.get(REGISTRY_KEY.format(room=meeting)), 0.5)
            addr = parse_addr(raw.decode()) if raw else None
        except Exception as exc:  # Redis slow or away: keep what we had
            log.warning("transcoder of %s not read: %s", meeting, exc)
            return
        self._addresses[meeting] = (time.monotonic(), addr)

    def tick(self, now: float, meetings: Iterable[str]) -> list[SourceRoute]:
        """Every allocation: find the meetings' transcoders, renew the routes' leases (or say
        hello where none is routed), and end the routes of a transcoder gone silent. Returns
        the routes that ended so."""
        if not self.enabled:
            return []
        # what arrived while the event loop was busy is read first: a late tick (a loop held
        # up for a second) must not find an "alive" unread in the socket and call it silence
        self._readable()
        wanted: set[tuple[str, int]] = set()
        for meeting in meetings:
            if self.static is None and self.redis is not None:  # else a launcher's, once up
                fetched, _ = self._addresses.get(meeting, (0.0, None))
                if now - fetched >= LOOKUP_EVERY_S:
                    self._addresses[meeting] = (now, self.address(meeting))
                    spawn(self._lookup(meeting))
            addr = self.address(meeting)
            if addr is not None:
                wanted.add(addr)
        ended: list[SourceRoute] = []
        for key, route in list(self.routes.items()):
            link = self.links.get(route.addr)
            moved = self.address(route.meeting) != route.addr
            if link is None or moved or (now - route.started > DEAD_AFTER_S
                                         and not link.alive(now)):
                del self.routes[key]
                route.close(dead=True)
                ended.append(route)
                if link is not None and not moved:
                    link.lost += 1
                log.warning("transcoder %s:%d lost: route of %s ends", *route.addr,
                            route.up.track_id)
            else:
                route.want()
        busy = {r.addr for r in self.routes.values()}
        for addr in wanted | busy:
            self.links.setdefault(addr, TranscoderLink(addr))
            if addr not in busy:
                self.send(control({"t": "hello"}), addr)
        return ended

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error of an earlier send: nothing to read
                continue
            if is_control(data):
                self._control(data, addr)
                continue
            rtp = parse_rtp(data)
            out = self.by_output.get(rtp[0]) if rtp is not None else None
            if out is not None and out.route.addr == addr:
                out.on_packet(*rtp[1:])  # type: ignore[index]

    def _control(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_control(data)
        except ValueError:
            return
        link = self.links.get(addr)
        if link is None:
            return
        if message["t"] == "alive":
            link.heard = time.monotonic()
            link.id = str(message.get("id", ""))
            link.sources = {int(s["source"]): s for s in message.get("sources", [])
                            if isinstance(s, dict) and "source" in s}
        elif message["t"] == "key":
            for route in self.routes.values():
                if route.ssrc == message.get("source") and route.addr == addr:
                    route.layer.request_keyframe()

    # -- routes -------------------------------------------------------------------------------
    def output(self, meeting: str, up: UpTrack, index: int, rung: Rung,
               codec: str) -> RungLayer | None:
        """The output ``rung`` in ``codec`` of layer ``index`` of ``up`` (made on demand), or
        None when the meeting has no live transcoder, it cannot decode ``up`` (an H.264
        camera for a subscriber without H.264: routed, its ``want`` was refused and the route
        made again every allocation) or cannot encode ``codec`` (an AV1 rung)."""
        now = time.monotonic()
        if not transcodable(up) or codec not in OUTPUT_CODECS \
                or not self.available(meeting, now):
            return None
        addr = self.address(meeting)
        assert addr is not None
        key = (id(up), index)
        route = self.routes.get(key)
        if route is None or route.closed:
            route = self.routes[key] = SourceRoute(self, meeting, addr, up, index)
            log.info("transcoding %s of %s (layer %d) at %s:%d", up.track_id, up.owner, index,
                     *addr)
        return route.output(rung, codec)

    def sample(self, now: float) -> None:
        for route in self.routes.values():
            for out in route.outputs.values():
                out.sample(now)

    def collect(self) -> None:
        """Stop outputs nobody receives and routes with none left (after each allocation)."""
        for key, route in list(self.routes.items()):
            for name, out in list(route.outputs.items()):
                if not out.downtracks:
                    out.keyframes.close()
                    self.by_output.pop(out.output.id, None)
                    del route.outputs[name]
                    route.want()
            if not route.outputs:
                route.close()
                del self.routes[key]
                log.info("transcoding of %s stopped", route.up.track_id)

    def legs(self) -> int:
        return sum(len(o.downtracks) for r in self.routes.values() for o in r.outputs.values())

    def close(self) -> None:
        for route in self.routes.values():
            route.close()
        self.routes.clear()
        if self._sock is not None:
            asyncio.get_event_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def status(self) -> list[dict[str, Any]]:
        return [r.status(self.links[r.addr].sources.get(r.ssrc) if r.addr in self.links
                         else None) for r in self.routes.values()]


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a transcoder address is host:port, not {text!r}")
    return socket.gethostbyname(host.strip("[]")), int(port)


def rung_rate(rung: Rung) -> float:
    return rung.bitrate_kbps * 1000.0


def transcodable(up: UpTrack) -> bool:
    """Whether the transcoder decodes ``up`` (VP8, VP9, AV1)."""
    return up.kind == "video" and up.codec.mimeType.lower() in SOURCE_CODECS


def rung_possible(up: UpTrack, decodes: bool) -> bool:
    """Whether a budget rung can replace ``up`` on a leg: the transcoder decodes the source and
    encodes the rung's codec, the source's own for a leg that decodes it (it keeps the payload
    type it negotiated: VP8, VP9, not AV1) or H.264 for one that does not."""
    return transcodable(up) and (not decodes or up.codec.mimeType.lower() in OUTPUT_CODECS)


def codec_rung(layer: Layer) -> Rung | None:
    """The H.264 output for a subscriber that cannot decode ``layer``'s codec: the layer's own
    height (never upward) at a bitrate for that height; None while the height is unknown."""
    h = layer.height
    if h <= 0:
        return None
    return Rung(f"{h}p", h, min(2500, default_bitrate_kbps(h)))


def plan(choice: dict[DownTrack, int], legs: Iterable[DownTrack], budget: float,
         views: dict[str, int], decodes: Callable[[UpTrack], bool] = lambda up: True,
         ladder: tuple[Rung, ...] = MEETING_LADDER) -> dict[DownTrack, Rung]:
    """Which legs get a rung instead of the layer ``choice`` gave them: only when the layers
    chosen (each leg's lowest, after ``allocation.allocate``) still exceed ``budget``; legs
    already on a rung first (they leave it only with 15 % headroom, like a layer raise), then
    the smallest tiles. A leg on its layer goes to a rung only while the total exceeds the
    budget itself: the headroom is the rung legs' to leave, not a reason for another leg to
    join them (one leg just off its rung was sent back at the same estimate while the other
    stayed on one, again and again: test_throttled's failed probe, 2026-12-03). A leg gets the
    highest rung that makes the total fit, else the lowest; only rungs below its source's
    height and rate (never upward, never for a source already there), and only where the rung's
    codec can be made (``rung_possible``; ``decodes``: the subscriber decodes a track as
    published)."""
    spent = sum(dt.up.layers[0].known for dt in legs if dt.kind == "audio")
    spent += sum(rate(dt.up.layers[i]) for dt, i in choice.items())
    on_rung = [dt for dt in choice if isinstance(dt.current, RungLayer)]
    limit = RAISE_HEADROOM * budget if on_rung else budget
    out: dict[DownTrack, Rung] = {}
    if spent <= limit:
        return out
    order = sorted((dt for dt, i in choice.items()
                    if i == 0 and rung_possible(dt.up, decodes(dt.up))),
                   key=lambda dt: (dt not in on_rung, views.get(dt.up.track_id) or 10_000))
    for dt in order:  # the rung legs first: once one may leave, so may every other
        if spent <= (limit if dt in on_rung else budget):
            break
        source = dt.up.layers[0]
        below = [r for r in ladder
                 if 0 < r.height < source.height and rung_rate(r) < rate(source)]
        if not below:
            continue  # source height unknown yet, or already at or below every rung
        base = spent - rate(source)
        pick = next((r for r in below if base + rung_rate(r) <= budget), below[-1])
        out[dt] = pick
        spent = base + rung_rate(pick)
    return out

"""Between tiers: a WHEP pull. A transcoder, relay or edge plays its upstream (the ingest's
programme, a transcoder's rendition, another relay) as an ordinary WHEP viewer. A transcoder taps
the encoded frames before aiortc's decoder into its feed (``Feed``); a relay or edge
(``packets=True``) forwards the RTP packets as they come to its viewers (``PacketFeed``,
edge_fanout.py), nothing reassembled.

Why WebRTC (WHEP) between tiers rather than plain RTP: one protocol end to end (the same code
serves viewers and the next tier), encryption and NACK/PLI come with it, an upstream is a URL the
operator can put in an environment variable, and a tier that restarts is pulled again by the next
one with no state to hand over. The cost is one DTLS/ICE session per hop (tens of ms, once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import httpx
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from . import frames
from .edge_fanout import PacketFeed
from .feed import Feed
from .sessions import ice_config

log = logging.getLogger("parley.broadcast.pull")
RETRY_S = 1.0
RECEIVE_BUFFER = 4 * 1024 * 1024  # bytes (capped by net.core.rmem_max): see _widen
SILENCE_S = 3.0  # an upstream that sends nothing this long is pulled again (it may have died:
# ICE consent freshness would notice only after about 30 s)


class Pull:
    """Keeps one WHEP session to ``url`` alive and feeds ``self.feed`` from it, undecoded:
    frames into a ``Feed``, or with ``packets`` RTP packets into a ``PacketFeed``."""

    feed: Feed | PacketFeed

    def __init__(self, url: str, name: str, token: str | None = None,
                 packets: bool = False) -> None:
        self.url = url
        self.token = token
        self.packets = packets
        self.feed = PacketFeed(name) if packets else Feed(name, self._request_keyframe)
        self.receivers: dict[str, object] = {}
        self.connected = False
        self.sessions = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.feed.close()

    @staticmethod
    def _widen(pc: RTCPeerConnection) -> None:
        """A large receive buffer on the session's UDP sockets, as the call server's UdpMux has.
        One upstream packet costs a relay or edge one send per viewer, and a keyframe's burst
        times the viewers is tens of milliseconds of one thread's work; on a busy machine the
        process waits for the CPU on top of that. The kernel's default 208 KB (about 150
        packets) then overflowed: bench/broadcast_edge.py counted 1045 drops at the edge's
        upstream socket in 6 s at 80 viewers (load 9), lost for every viewer alike."""
        for t in pc.getTransceivers():
            conn = getattr(t.receiver.transport.transport, "_connection", None)
            for protocol in getattr(conn, "_protocols", ()):
                sock = getattr(getattr(protocol, "transport", None), "_sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    def _request_keyframe(self) -> None:
        video = self.receivers.get("video")
        if video is not None:
            frames.request_keyframe(video)  # type: ignore[arg-type]

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # upstream down or refusing: try again
                log.warning("pull %s: %s", self.url, exc)
            self.connected = False
            await asyncio.sleep(RETRY_S)

    async def _until_ended_or_silent(self, ended: asyncio.Event) -> None:
        started = time.monotonic()
        while not ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), 1.0)
            last = max(self.feed.last_frame_at, started)
            if time.monotonic() - last > SILENCE_S:
                log.warning("pull %s: no media for %.0f s, reconnecting", self.url, SILENCE_S)
                return

    async def _session(self) -> None:
        pc = RTCPeerConnection(ice_config())
        origin = object()  # a new upstream session: the feed re-bases its timeline
        for kind in ("video", "audio"):
            t = pc.addTransceiver(kind, "recvonly")
            if kind == "video":
                t.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                       if c.mimeType.lower() in ("video/h264", "video/rtx")])
            if isinstance(self.feed, Feed):
                push = self.feed.push
                frames.tap(t.receiver, kind, lambda f, o=origin, p=push: p(f, o))
        self.receivers = {t.kind: t.receiver for t in pc.getTransceivers()}
        ended = asyncio.Event()

        @pc.on("connectionstatechange")
        def changed() -> None:
            if pc.connectionState == "connected":
                self.connected = True
                self.feed.request_keyframe()
            elif pc.connectionState in ("failed", "closed"):
                ended.set()

        location = None
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with httpx.AsyncClient(timeout=10) as http:
            try:
                await pc.setLocalDescription(await pc.createOffer())  # gathers the sockets
                self._widen(pc)
                r = await http.post(self.url, content=pc.localDescription.sdp, headers=headers)
                if r.status_code != 201:
                    raise RuntimeError(f"upstream answered {r.status_code}: {r.text[:200]}")
                location = r.headers.get("location")
                await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
                if isinstance(self.feed, PacketFeed):  # before the first packet: DTLS is to come
                    for t in pc.getTransceivers():
                        self.feed.attach(t.kind, t.receiver, t._codecs)
                self.sessions += 1
                await self._until_ended_or_silent(ended)
            finally:
                await pc.close()
                if isinstance(self.feed, PacketFeed):
                    self.feed.upstream_ended()
                if location:
                    with contextlib.suppress(httpx.HTTPError):
                        await http.delete(str(httpx.URL(self.url).join(location)))

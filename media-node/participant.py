"""One participant: a single peer connection to the call server, for publishing and subscribing.

Negotiation (docs/call-server.md): the client's join offer carries what it publishes; after that
the call server makes every offer: new subscriptions as sendonly m-lines, and, when the client asks
to publish more (a screen share), recvonly m-lines the client's answer attaches its track to. So no
offers cross. A client offer is still accepted while the connection is stable, and refused with 409
(glare) while a server offer waits for its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, sdp
from aiortc.rtcpeerconnection import filter_preferred_codecs

from . import codecs as _codecs  # noqa: F401  (VP9 in aiortc's codec table)
from . import extmap, metrics
from .allocation import aimed, allocate, planned, rate, view_cap
from .bwe import Downlink
from .link import Link
from .pacer import Pacer
from .probe import Prober
from .publisher import UpTrack
from .simulcast import describe, offered_layers, route_by_mid
from .subscriber import DownTrack, SilentTrack
from .tasks import spawn
from .transcoding import H264, RungLayer, Transcoding, codec_rung, plan
from .udpmux import UdpMux

PREFERRED = {"video": "video/vp8", "audio": "audio/opus"}
MAX_PUBLISHED = 3  # tracks one participant may publish: microphone, camera, screen
TRANSCODE_AFTER = 4  # allocations (1 s) a shortfall lasts before a leg is sent a rung
PACE_OVER = 1.2  # a pacer's rate over what the chosen layers send, at least
_SENDING = re.compile(r"^a=(sendonly|sendrecv)\s*$", re.MULTILINE)


class Glare(Exception):
    """A client offer crossed an outstanding server offer."""


class NotAllowed(Exception):
    """The participant asked for something its join did not allow (publishing when it may only
    subscribe, more tracks than ``MAX_PUBLISHED``); ``code`` names it for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def sending_mlines(offer: str) -> int:
    """How many m-lines of a client's offer send media (sendonly / sendrecv)."""
    return len(_SENDING.findall(offer.replace("\r\n", "\n")))


def _restrict_codecs(transceiver: Any) -> list[Any]:
    """Keep one media codec and its RTX, so every packet a publisher sends has one payload type
    the subscribers negotiated too: for video the first of the client's offer that the node
    forwards (VP8, VP9, H.264; an offer lists codecs in its preference order, RFC 3264 section
    5.1, and a camera forced to VP9 lists it first), for audio Opus when offered."""
    codecs = transceiver._codecs
    media = [c for c in codecs if not c.mimeType.lower().endswith("/rtx")]
    want = PREFERRED.get(transceiver.kind, "") if transceiver.kind != "video" else ""
    main = next((c for c in media if c.mimeType.lower() == want), media[0])
    rtx = [c for c in codecs
           if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == main.payloadType]
    transceiver._codecs = [main, *rtx]
    return transceiver._codecs


def _capabilities_like(up: UpTrack, transcoded_to: str | None = None) -> list[Any]:
    """What a leg of ``up`` offers: the publisher's codec, or ``transcoded_to`` (H.264, every
    profile aiortc sends, for a subscriber that cannot decode the publisher's codec)."""
    caps = RTCRtpSender.getCapabilities(up.kind).codecs
    if transcoded_to is not None:
        main = [c for c in caps if c.mimeType.lower() == transcoded_to]
        return main + [c for c in caps if c.mimeType.lower().endswith("/rtx")]
    mime = up.codec.mimeType.lower()
    main = [c for c in caps if c.mimeType.lower() == mime
            and (not mime.endswith("h264") or c.parameters == up.codec.parameters)]
    rtx = [c for c in caps if c.mimeType.lower().endswith("/rtx")] if up.rtx_pt else []
    return main[:1] + rtx


def offered_video_codecs(offer: sdp.SessionDescription) -> set[str]:
    """The video codecs (lower-case MIME types) a client's offer lists, RTX/RED/FEC aside:
    what it can decode. Empty when the offer has no video m-line (nothing announced)."""
    out: set[str] = set()
    for m in offer.media:
        if m.kind == "video":
            out.update(c.mimeType.lower() for c in m.rtp.codecs
                       if c.name.lower() not in ("rtx", "red", "ulpfec", "flexfec-03"))
    return out


def announced_track_ids(remote: sdp.SessionDescription) -> dict[str | None, str]:
    """mid -> the track id the client put in a=msid. aiortc creates the receiver track of a
    publish slot (a recvonly m-line we offered) before the client's answer names it, so its id
    would be random; subscribers label tracks (camera, screen) by the client's id."""
    return {m.rtp.muxId: m.msid.split()[1] for m in remote.media if m.msid and " " in m.msid}


def parse_description(text: str) -> sdp.SessionDescription:
    """A client's description parsed, or ValueError (bad SDP is the client's error)."""
    try:
        return sdp.SessionDescription.parse(text)
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"bad sdp: {exc}") from exc


class Participant:
    """A client's connection, its published tracks and its forwarding legs."""

    def __init__(self, pid: str, meeting_id: str, config: RTCConfiguration,
                 on_gone: Callable[[Participant], Any],
                 on_publish: Callable[[Participant, list[UpTrack]], None],
                 mux: UdpMux | None = None, label: str | None = None,
                 publishes: bool = True) -> None:
        # ``id`` is this connection's own (one per session, never reused), so a late answer or
        # leave of an earlier session cannot reach this one; ``label`` is the identity that
        # subscribers see (a=msid stream id, events) and that a later session of it replaces.
        self.id = pid
        self.label = label or pid
        self.meeting_id = meeting_id
        self.subscribes = True  # False: publish-only (an ingest, a benchmark publisher)
        self.offers_early = False  # the client takes offers before "connected" (a browser)
        self.publishes = publishes  # False: subscribe-only, every m-line it sends is inactive
        self.pc = RTCPeerConnection(config)
        self.link = Link()
        self.pacer = Pacer(self.link)  # paces what it is sent after a congested move down
        self.downlink = Downlink()
        self.downlink.alert = self.react
        self.downlink.probed = self._probed
        self.prober = Prober(self.downlink)  # pads its downlink before a move up, after a cut
        self.views: dict[str, int] = {}  # track id -> tile height the client renders it at
        self.max_bps: float | None = None  # the client's own cap on what it receives (sfu.view)
        self.transcoding: Transcoding | None = None  # the node's, when it may transcode
        self.needs: dict[str, str] = {}  # track id -> transcoded rung this subscriber receives
        self.remembered: dict[str, str] = {}  # needs of an earlier session (node.restore)
        # the video codecs its first offer with video listed (None: it announced none, so it
        # gets what the publishers send); a track in any other codec reaches it transcoded
        self.video_codecs: set[str] | None = None
        self._short = 0  # allocations in a row whose plan wanted a new transcoded route
        self.simulcast: dict[str, list[str]] = {}  # mid -> rids this client publishes there
        self._sent = (0.0, 0)  # (time, bytes sent to this subscriber) at the last allocation
        self.uptracks: list[UpTrack] = []
        self._stopped: set[int] = set()  # id(receiver) of tracks the client stopped publishing
        self.downtracks: dict[int, DownTrack] = {}  # id(UpTrack) -> leg
        self._pending: list[DownTrack] = []
        self._offered: list[DownTrack] = []
        self._retired: list[DownTrack] = []
        self._retiring: list[DownTrack] = []  # retired in the outstanding offer
        self._free: list[DownTrack] = []  # retired legs whose inactive m-line was negotiated
        self._lock = asyncio.Lock()
        self._dirty = False
        self.closed = False
        self.events: list[dict[str, Any]] = []
        self._event_seq = 0
        self._event = asyncio.Event()
        self._on_gone = on_gone
        self._on_publish = on_publish
        self._mux = mux
        self._publish_slots: list[str] = []
        self._slots_offered = 0  # publish slots in the outstanding server offer
        self.pc.on("connectionstatechange", self._state_changed)

    async def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.pacer.stop()  # a new pair (ICE restart): the link is resolved again
            self.link.resolve(self.pc)
            now = time.perf_counter()
            for dt in self.downtracks.values():  # keyframes that came before the link was up
                if dt.target is not None and dt.sender is not None and not dt.catch_up(now):
                    # not deferred by the interval: a leg negotiated before "connected" (in the
                    # join's answer or an early offer) asked at its bind, and no keyframe came
                    dt.target.request_keyframe(urgent=True)
            if self._dirty or self._pending or self._publish_slots:
                spawn(self.renegotiate())
        elif state in ("failed", "closed") and not self.closed:
            self.link.close()
            await self._on_gone(self)

    # -- negotiation ------------------------------------------------------------------------
    async def accept_offer(self, sdp: str, published: list[UpTrack] | None = None,
                           ) -> tuple[str, list[UpTrack]]:
        """Apply a client offer; return the answer and the newly published tracks. A join
        subscribes to ``published`` here, once the offer said what the client decodes, so the
        answer can carry those legs."""
        async with self._lock:
            if self.pc.signalingState != "stable":
                raise Glare
            first = self.pc.remoteDescription is None
            # parsed once here for every reading of ours (aiortc parses its own copy): a join
            # offer parsed four times was a tenth of the call server's CPU for a join
            offer = parse_description(sdp)
            if self.publishes and sending_mlines(sdp) > MAX_PUBLISHED:
                raise NotAllowed("publish_limit", f"at most {MAX_PUBLISHED} tracks per "
                                 "participant")
            if self.publishes:
                self.simulcast.update(offered_layers(sdp))
            if self.video_codecs is None:
                self.video_codecs = offered_video_codecs(offer) or None
            for up in published or ():
                self.subscribe(up)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            route_by_mid(self.pc)
            if not self.publishes:  # its sending m-lines are answered inactive: no receiver
                for t in self.pc.getTransceivers():  # starts, nothing it sends is forwarded
                    if t.direction in ("recvonly", "sendrecv"):
                        t.direction = "inactive" if t.direction == "recvonly" else "sendonly"
            if self._mux is not None:  # gather on the shared port, not an ephemeral one
                for ice in self.pc._RTCPeerConnection__iceTransports:  # type: ignore[attr-defined]
                    if not ice.iceGatherer._connection.local_candidates:
                        self._mux.attach(ice.iceGatherer._connection)
            new = self._new_uptracks(offer)
            # only a client that said so (early: the web client) offers m-lines for the others'
            # tracks; an aiortc client's recvonly m-line is its transport's (a meeting source)
            placed = self._place_pending(offer) if first and self.offers_early else []
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            for dt in placed:
                if id(dt.up) in self.downtracks:
                    dt.bind(dt.transceiver)
            self.uptracks.extend(new)
            return describe(self.pc.localDescription.sdp, self.simulcast), new

    def _place_pending(self, offer: sdp.SessionDescription) -> list[DownTrack]:
        """Put pending legs on the recvonly m-lines of the client's join offer (a browser offers
        one per track it expects from those already in the room), so the join's answer carries
        them: no server offer and answer a round trip later, and each leg's keyframe is asked for
        at its bind, while ICE and DTLS connect (docs/call-server.md, "Negotiation and
        renegotiation"). A leg with no fitting m-line (none left, or its codec not offered
        there) waits for the next offer."""
        slots = {m.rtp.muxId for m in offer.media if m.direction == "recvonly"}
        placed: list[DownTrack] = []
        for dt in list(self._pending):
            want = _capabilities_like(dt.up, None if self.decodes(dt.up) else H264)
            for t in self.pc.getTransceivers():
                if t.mid not in slots or t.kind != dt.kind or t.sender.track is not None:
                    continue
                # the answer's codecs for this m-line, as setCodecPreferences would have made
                # them had the transceiver existed before the offer (aiortc matches a remote
                # m-line to the first free transceiver of its kind, so it cannot)
                codecs = filter_preferred_codecs(t._codecs, want)
                if not codecs:
                    continue
                t._codecs = codecs
                t.direction = "sendonly"
                t.sender.replaceTrack(SilentTrack(dt.kind, dt.up.track_id))
                t.sender._stream_id = dt.up.owner  # a=msid: stream = publishing identity
                dt.transceiver = t
                self._pending.remove(dt)
                placed.append(dt)
                break
        return placed

    def _new_uptracks(self, remote: sdp.SessionDescription) -> list[UpTrack]:
        """Tracks the client started sending in ``remote``, the description just applied."""
        if not self.publishes:
            return []
        known = {id(up.receiver) for up in self.uptracks} | self._stopped
        new: list[UpTrack] = []
        announced = None
        for t in self.pc.getTransceivers():
            if id(t.receiver) in known or t.receiver.track is None:
                continue
            announced = announced if announced is not None else announced_track_ids(remote)
            new.append(UpTrack(self.label, t.receiver, _restrict_codecs(t),
                               announced.get(t.mid) or t.receiver.track.id,
                               t.kind, self.simulcast.get(t.mid or "")))
        return new

    def stop_publishing(self, track_id: str) -> UpTrack | None:
        """The client stopped a track (a screen share ended): it is no longer published, and
        its m-line, left idle by the client, is never taken for a new track."""
        up = next((u for u in self.uptracks if u.track_id == track_id), None)
        if up is not None:
            self.uptracks.remove(up)
            self._stopped.add(id(up.receiver))
        return up

    def request_publish(self, kinds: list[str]) -> None:
        """The client wants to publish more tracks: offer it recvonly m-lines to fill."""
        if not self.publishes:
            raise NotAllowed("publish_not_allowed", "this participant may only subscribe")
        kinds = [k for k in kinds if k in PREFERRED]
        if len(self.uptracks) + len(self._publish_slots) + self._slots_offered + len(
                kinds) > MAX_PUBLISHED:
            raise NotAllowed("publish_limit", f"at most {MAX_PUBLISHED} tracks per participant")
        self._publish_slots.extend(kinds)
        spawn(self.renegotiate())

    async def renegotiate(self) -> None:
        """Offer the subscriber its pending legs (new publishers) and retire removed ones."""
        async with self._lock:
            if self.closed:
                return
            if self.pc.signalingState != "stable" or (
                    self.pc.connectionState != "connected" and not self.offers_early):
                # Offer only on an established connection: aiortc (client side) never starts
                # receivers added by a renegotiation that lands while DTLS is still connecting.
                # A browser does (offers_early, from its sfu.join): the others' tracks are
                # offered with the join's answer, negotiated while ICE and DTLS connect, and
                # flow at "connected" (the keyframe request there), not one round trip later.
                self._dirty = True
                return
            self._dirty = False
            if not self._pending and not self._retired and not self._publish_slots:
                return
            for kind in self._publish_slots:
                t = self.pc.addTransceiver(kind, "recvonly")
                caps = RTCRtpSender.getCapabilities(kind).codecs
                want = PREFERRED[kind]
                t.setCodecPreferences([c for c in caps if c.mimeType.lower() == want
                                       or (kind == "video" and c.mimeType.lower() == "video/rtx")])
            self._slots_offered = len(self._publish_slots)
            self._publish_slots = []
            for dt in self._pending:
                retired = self._reusable(dt.kind)
                if retired is None:
                    t = self.pc.addTransceiver(SilentTrack(dt.kind, dt.up.track_id), "sendonly")
                else:
                    t = retired.transceiver
                    t.sender.replaceTrack(SilentTrack(dt.kind, dt.up.track_id))
                    t.direction = "sendonly"
                    dt.follow(retired)
                t.sender._stream_id = dt.up.owner  # a=msid: stream = publishing identity
                t.setCodecPreferences(_capabilities_like(
                    dt.up, None if self.decodes(dt.up) else H264))
                dt.transceiver = t
            self._retiring = [dt for dt in self._retired if dt.transceiver is not None]
            for dt in self._retiring:
                dt.transceiver.direction = "inactive"
            self._offered, self._pending, self._retired = self._pending, [], []
            await self.pc.setLocalDescription(await extmap.create_offer(self.pc))
            self.push({"type": "offer",
                       "sdp": describe(self.pc.localDescription.sdp, self.simulcast)})

    async def accept_answer(self, sdp: str) -> None:
        async with self._lock:
            if self.pc.signalingState != "have-local-offer":
                raise Glare
            answer = parse_description(sdp)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
            for dt in self._offered:
                if id(dt.up) in self.downtracks:
                    dt.bind(dt.transceiver)
            self._offered = []
            self._slots_offered = 0
            if self.offers_early:
                self._free.extend(self._retiring)
            self._retiring = []
            new = self._new_uptracks(answer)
            self.uptracks.extend(new)
            again = (self._dirty or bool(self._pending) or bool(self._retired)
                     or bool(self._publish_slots))
        if new:
            self._on_publish(self, new)
        if again:
            await self.renegotiate()

    def _reusable(self, kind: str) -> DownTrack | None:
        """A retired leg of ``kind`` whose m-line a new leg takes over, instead of a new m-line.
        Without this a subscriber's session grew by an m-line per track of everyone who ever
        left, and every renegotiation of a long meeting (a join, a leave, a screen share) made,
        parsed and sent them all on both ends (aiortc serialises and re-parses a description
        per ``setLocalDescription``: 14 % of the call server's CPU in a bench of 15 joins and
        leaves). LiveKit and mediasoup reuse m-lines the same way. Only for a browser
        (``offers_early``): a browser fires ``track`` again when an inactive m-line receives
        again, and the web client reads whose track it is from the m-line's msid; aiortc
        fires ``track`` for new transceivers only, so its clients get new m-lines."""
        for i, dt in enumerate(self._free):
            if dt.kind == kind:
                return self._free.pop(i)
        return None

    # -- subscriptions ----------------------------------------------------------------------
    def decodes(self, up: UpTrack) -> bool:
        """Whether this subscriber can decode ``up`` as published (else: transcoded, H.264)."""
        codecs = self.video_codecs
        return up.kind != "video" or codecs is None or up.codec.mimeType.lower() in codecs

    def subscribe(self, up: UpTrack) -> None:
        if self.closed or not self.subscribes or id(up) in self.downtracks:
            return
        dt = DownTrack(up, self.id, self.link, self.downlink, layer=up.flowing())
        if not self.decodes(up):
            dt.target = None  # never the original: it starts on the transcoder's output
        self.downtracks[id(up)] = dt
        self._pending.append(dt)
        spawn(self.renegotiate())

    def unsubscribe(self, up: UpTrack) -> DownTrack | None:
        dt = self.downtracks.pop(id(up), None)
        if dt is None:
            return None
        dt.close()
        if dt in self._pending:
            self._pending.remove(dt)
        elif not self.closed:
            self._retired.append(dt)
            self.push({"type": "unpublished", "participant": up.owner, "track": up.track_id})
            spawn(self.renegotiate())
        return dt

    # -- layer choice (the node's allocation tick, every 0.25 s) ------------------------------
    def allocate(self, now: float) -> None:
        """Update the downlink estimate and move each simulcast leg to the layer that fits."""
        legs = list(self.downtracks.values())
        sent = sum(dt.bytes for dt in legs)
        t, before = self._sent
        self._sent = (now, sent)
        if not t or now <= t or not legs:
            return
        sent_bps = (sent - before) * 8 / (now - t)
        video = [dt for dt in legs if dt.kind == "video" and dt.packets]
        weight = sum(dt.layer.bitrate for dt in video if dt.layer) or 1.0
        loss = sum(self._leg_loss(dt) * (dt.layer.bitrate if dt.layer else 0)
                   for dt in video) / weight
        self.downlink.update(sent_bps, loss, now, self._floor(legs))
        self._choose(legs, now)

    @staticmethod
    def _floor(legs: list[DownTrack]) -> float:
        """What the subscriber's lowest layers and its audio cost."""
        return sum(dt.up.layers[0].known if dt.kind == "audio" else rate(dt.up.layers[0])
                   for dt in legs if dt.sender is not None)

    def react(self) -> None:
        """A NACK with fresh numbers came (``Downlink.alert``): when the loss it shows cuts the
        estimate, choose the legs' layers now, not at the next 0.25 s allocation."""
        now = time.monotonic()
        if not self.downlink.reacts(now):
            return
        legs = list(self.downtracks.values())
        if legs and self.downlink.react(now, self._floor(legs)):
            self._choose(legs, now, tick=False)

    def _choose(self, legs: list[DownTrack], now: float, tick: bool = True) -> None:
        """Move each leg to the layer (or transcoded rung) the estimate and its tile allow;
        ``tick``: a regular allocation (the count a new transcoded route waits on)."""
        estimate = self.downlink.estimate
        if self.max_bps is not None:
            estimate = min(estimate, self.max_bps)
        # right after a cut and through its hold, a layer costs what it sends now if that is more:
        # priced at its average again the tick after, a full layer that a cut had just stopped
        # fitted and came back, and went down again (test_throttled: a 1.5 s freeze)
        careful = self.downlink.congested or now < self.downlink.cut_until
        choice = allocate(legs, estimate, self.views, careful, self.downlink.holding(now))
        if self._probe_first(legs, choice, now):  # the legs stay until the padding passed
            choice = allocate(legs, estimate, self.views, careful, hold=True)
        tx = self.transcoding
        self._fall_back()
        usable = tx is not None and tx.available(self.meeting_id, now)
        rungs = plan(choice, legs, estimate, self.views, self.decodes) if tx and tx.enabled \
            else {}
        if tx and not usable and (rungs or any(not self.decodes(dt.up) for dt in choice)):
            tx.demand()  # `parley up`: its local transcoder starts on the first need
        if not usable:
            rungs = {}
        # a new route waits until the shortfall has lasted TRANSCODE_AFTER allocations: a
        # layer's first rate samples hold its first keyframe, and a rung costs a decoder
        # (a track an earlier session of this subscriber needed a rung for goes at once)
        def known(dt: DownTrack) -> bool:
            return (isinstance(dt.current, RungLayer) or dt.up.track_id in self.remembered
                    or not self.decodes(dt.up))

        fresh = not all(known(dt) for dt in rungs)
        if tick:
            self._short = self._short + 1 if fresh else 0
        # none in a failed probe's aftermath: the estimate stays on what the lowest layers cost
        # before it, and the keyframes its loss asked for raised their averages a few percent
        # over it for over a second (a camera sent to a rung and back 2 s after the failure:
        # tests/sfu/test_throttled.py, 1 of 19 loaded runs)
        # nor through the hold of a cut that kept the lowest layers, unless the subscriber's
        # own cap (its view's maxBitrate) is what they exceed
        kept = self.downlink.keeps_lowest(now) and (
            self.max_bps is None or self.max_bps >= self.downlink.estimate)
        if fresh and (self._short < TRANSCODE_AFTER or self.downlink.aftermath(now) or kept):
            rungs = {dt: r for dt, r in rungs.items() if known(dt)}
        stopped = False  # a leg's layer stopped at once: the link's queue is full
        raised = False  # a leg moved up: its new layer starts on a keyframe
        for dt, index in choice.items():
            before_layer = dt.current
            route = self._route(dt, index, rungs.get(dt)) if usable else None
            layer = tx.output(self.meeting_id, dt.up, *route) if tx and route else None
            if layer is not None:
                if dt.aim(layer, congested=self.downlink.congested):
                    stopped = stopped or self.downlink.congested
                    metrics.LAYER_SWITCHES.labels("down").inc()
                    metrics.TRANSCODE_DECISIONS.labels(layer.rung.name).inc()
                    self.needs[dt.up.track_id] = layer.rung.name
                    self.push({"type": "layer", "participant": dt.up.owner,
                               "track": dt.up.track_id, "rid": layer.rung.name, "index": -1,
                               "layers": len(dt.up.layers), "height": layer.height,
                               "reason": "transcoded" if self.decodes(dt.up) else "codec",
                               "transcoded": True, "codec": layer.codec,
                               "estimateKbps": round(estimate / 1000)})
                    dt.reported = True
                continue
            if not usable and isinstance(before_layer, RungLayer) \
                    and not before_layer.route.closed:
                # its transcoder went quiet but only ``Transcoding.tick`` declares it lost (a
                # new route has a grace): the leg waits for that verdict, then ``_fall_back``
                # moves it with its reason; moved here, it went as a plain "fits"
                continue
            self.needs.pop(dt.up.track_id, None)
            if not self.decodes(dt.up):
                continue  # nothing it can decode until the meeting's transcoder answers
            if not dt.up.simulcast and not isinstance(before_layer, RungLayer):
                continue
            if dt.layer is None and not dt.packets and not isinstance(dt.target, RungLayer):
                # a new leg keeps the flowing layer it starts on until its keyframe; one that
                # began before anything was sampled started on the top layer, which may never
                # come (Chromium sends no layer its capture is too small for, e.g. a camera
                # smaller than the size its join offer's layers were planned from): once
                # another layer flows and that one does not, the leg starts there instead
                start = dt.up.flowing()
                target = dt.target
                if (target is not None and target.bitrate <= 0 and start != target.index
                        and dt.up.layers[start].bitrate > 0):
                    dt.select(start)
                continue
            down = before_layer is not None and index < before_layer.index
            if dt.select(index, congested=down and self.downlink.congested):
                stopped = stopped or (down and self.downlink.congested)
                raised = raised or (not down and before_layer is not None
                                    and before_layer.index >= 0)  # a layer, not a rung
                tile = index >= view_cap(dt, self.views.get(dt.up.track_id))
                reason = ("tile" if tile else self.downlink.reason) if down else "fits"
                metrics.LAYER_SWITCHES.labels("down" if down else "up").inc()
            elif not dt.reported and dt.layer is not None:
                reason = "start"  # the layer a new leg started on
            else:
                continue
            dt.reported = True
            layer = dt.up.layers[index]
            self.push({"type": "layer", "participant": dt.up.owner, "track": dt.up.track_id,
                       "rid": layer.rid, "index": index, "layers": len(dt.up.layers),
                       "height": max(layer.height, 0), "reason": reason,
                       "estimateKbps": round(estimate / 1000)})
        audio = frozenset(dt.pt for dt in legs if dt.kind == "audio")
        # paced at the estimate, or over what the chosen layers send (a cut to the lowest
        # layers lands at their cost): a pacer slower than its legs only queues and drops
        # while a probe runs, the padding and the real packets leave at the rate under test
        down = self.downlink
        pace = max(estimate, PACE_OVER * planned(legs, choice), down.probe_rate(now))
        if stopped:  # the new layers' keyframes must not meet the full queue in a burst
            self.pacer.start(pace, audio)
        elif down.narrow() or (raised and down.proven < float("inf")):
            # a link that was cut: a loaded machine's bursts, and a new layer's keyframe
            # (several times a frame) after a move up, paced so its small queue takes them
            # whole (sent in a burst, a keyframe overflowed a 200 ms queue, the raise met loss
            # and was cut again)
            self.pacer.start(pace, audio, drain_s=0.0)

    def _probe_first(self, legs: list[DownTrack], choice: dict[DownTrack, int],
                     now: float) -> bool:
        """Whether a move up in ``choice`` waits for a probe (``bwe.Downlink.needs_probe``): it
        would send more than the link carried since its last cut. Starts the probe if none runs
        (a paced subscriber's pacer takes the probe's rate: ``_choose``)."""
        up = [dt for dt, index in choice.items()
              if dt.layer is not None and dt.up.simulcast and index > aimed(dt)]
        if not up:
            return False
        down = self.downlink
        if down.probing(now):
            return True  # the probe decides: a move made meanwhile met its padding (a 25 % loss)
        want = planned(legs, choice)
        if not down.needs_probe(want):
            return False
        self.prober.start(down.start_probe(want, now) - (down.sent or 0.0))
        return True

    def _probed(self, result: str) -> None:
        """A probe ended (``Downlink.probed``): a metric (the move, if it passed, is the next
        allocation's, with its own ``layer`` event)."""
        metrics.BWE_PROBES.labels(result).inc()
        if result == "failed":
            self.prober.stop()

    def _route(self, dt: DownTrack, index: int,
               rung: Any) -> tuple[int, Any, str] | None:
        """(source layer index, rung, codec) of the transcoder output ``dt`` needs, or None: a
        budget rung (``plan``) from the lowest layer, in the subscriber's codec; for a
        subscriber that cannot decode the track, H.264 at the chosen layer's height."""
        if self.decodes(dt.up):
            return (0, rung, dt.up.codec.mimeType.lower()) if rung is not None else None
        if rung is not None:
            return 0, rung, H264
        for layer in reversed(dt.up.layers[:index + 1]):  # a layer whose height is known
            own = codec_rung(layer)
            if own is not None:
                return layer.index, own, H264
        return None

    def _fall_back(self) -> None:
        """Legs on an output of a transcoder that was lost go back to the track's lowest layer
        at once (a subscriber that cannot decode it waits, paused, for a transcoder); each
        move is a ``layer`` event with reason ``transcoder_lost`` and a metric."""
        for dt in self.downtracks.values():
            # the output it is moving to, else the one it gets: a leg that a congested move
            # sent from one rung to another is still "on" the first (no longer an output, so
            # never marked dead) until the second's keyframe, which a lost transcoder never
            # sends; a leg already aimed at a layer (this fallback, a tick ago) has moved
            out = dt.target or dt.layer
            if not isinstance(out, RungLayer) or not out.dead:
                continue
            self.needs.pop(dt.up.track_id, None)
            event: dict[str, Any] = {"type": "layer", "participant": dt.up.owner,
                                     "track": dt.up.track_id, "layers": len(dt.up.layers),
                                     "reason": "transcoder_lost", "transcoded": False}
            if self.decodes(dt.up):
                lowest = dt.up.layers[0]
                dt.aim(lowest)
                metrics.TRANSCODER_FALLBACKS.labels("layer").inc()
                event.update(rid=lowest.rid, index=0, height=max(lowest.height, 0))
            else:
                dt.close()  # off the dead output; ``aim`` starts it again on a new one
                metrics.TRANSCODER_FALLBACKS.labels("paused").inc()
                event.update(rid=None, index=-1, height=0, paused=True)
            self.push(event)

    @staticmethod
    def _leg_loss(dt: DownTrack) -> float:
        """The leg's loss: its last receiver report's, less what its layer lost on the way in,
        or, sooner, the share of what it was sent since the last allocation that it NACKed (a
        browser NACKs a gap at once; reports come about once a second)."""
        sent = dt.packets - dt.marks
        nacked = len(dt.nacked)
        dt.marks = dt.packets
        dt.nacked.clear()
        upstream = dt.layer.lost if dt.layer is not None else 0.0
        return max(dt.loss - upstream, min(1.0, nacked / sent) if sent >= 20 else 0.0)

    # -- events for signaling (long poll) ---------------------------------------------------
    def push(self, event: dict[str, Any]) -> None:
        self._event_seq += 1
        self.events.append({"seq": self._event_seq, **event})
        del self.events[:-64]
        self._event.set()
        self._event = asyncio.Event()

    async def wait_events(self, after: int, wait: float) -> list[dict[str, Any]]:
        if self._event_seq <= after and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), wait)
        return [e for e in self.events if e["seq"] > after]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pacer.stop()
        self.prober.stop()
        self.link.close()
        for up in self.uptracks:
            up.close()
        self.push({"type": "closed"})
        await self.pc.close()

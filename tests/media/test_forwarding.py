"""Call-server forwarding with real aiortc participants (VP8 + Opus, decoded by the clients)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from parley.media import metrics
from parley.media.keyframes import KeyframeRequests
from parley.media.node import CallServer
from parley.media.rtp import vp8_keyframe

from .client import CONTROL, Client, PatternVideo, wait_for


def plis(server: CallServer, pid: str) -> int:
    """Keyframe requests sent to one publisher, over all its tracks and layers."""
    return sum(layer.keyframes.sent for up in server.participants[pid].uptracks
               for layer in up.layers)

def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or None) or 0.0


async def test_two_participants_decode_each_other(call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    a, b = Client("a", "m2"), Client("b", "m2")
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 15,
                       "a and b decoding each other")
        # nothing was decoded on the server: its receivers' decoder threads never got a frame
        up = server.participants[a.pid].uptracks[0]
        assert up.packets > 0 and up.layers[0].downtracks and up.layers[0].downtracks[0].packets > 0
    finally:
        await a.close()
        await b.close()


async def test_five_participants_each_decode_the_four_others(
        call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    names = ["p1", "p2", "p3", "p4", "p5"]
    clients = [Client(n, "m5") for n in names]
    try:
        await asyncio.gather(*(c.join(url) for c in clients))
        await wait_for(lambda: all(c.decoding_from([o for o in names if o != c.name])
                                   for c in clients), 30, "every client decoding 4 others")
        assert server.subscriptions() == 5 * 4 * 2  # 5 subscribers x 4 publishers x (video+audio)
        server.tick()
        assert sample("parley_media_forwarded_packets_total", kind="video") > 0
        assert sample("parley_media_forwarded_packets_total", kind="audio") > 0
        assert sample("parley_media_forward_latency_seconds_count") > 0
        assert sample("parley_media_subscriptions") == 40
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_one_udp_port_for_every_participant(
        call_server_one_port: tuple[CallServer, str]) -> None:
    server, url = call_server_one_port
    assert server.mux is not None and server.mux.port > 0
    names = ["u1", "u2", "u3"]
    clients = [Client(n, "oneport") for n in names]
    try:
        await asyncio.gather(*(c.join(url) for c in clients))
        await wait_for(lambda: all(c.decoding_from([o for o in names if o != c.name])
                                   for c in clients), 20, "decoding through one port")
        ports = set()
        for p in server.participants.values():
            for t in p.pc.getTransceivers():
                pair = t.sender.transport.transport._connection._nominated.get(1)
                if pair is not None:
                    ports.add(pair.local_candidate.port)
        assert ports == {server.mux.port}
        late = Client("u4", "oneport")
        clients.append(late)
        await late.join(url)
        await wait_for(lambda: late.decoding_from(names, minimum=1), 5, "late joiner, one port")
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_late_joiner_decodes_within_one_second(call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    a, b = Client("a", "late"), Client("b", "late")
    late = Client("late", "late", video=False, audio=False)
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 15, "a<->b")
        await asyncio.sleep(1.5)  # the publishers' last keyframe is now old: the joiner is gated
        sent = plis(server, a.pid)
        await late.join(url)
        await wait_for(lambda: late.decoding_from(["a", "b"], minimum=1), 5, "late joiner")
        assert late.connected_at is not None
        first_video = max(late.first_frame[f"{n}-camera"] for n in ("a", "b"))
        assert first_video - late.connected_at <= 1.0, first_video - late.connected_at
        # the gate asked the publisher for a keyframe instead of waiting for a periodic one
        assert plis(server, a.pid) > sent
    finally:
        await asyncio.gather(a.close(), b.close(), late.close())


async def test_screen_share_is_an_extra_track(call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    a, b = Client("a", "share"), Client("b", "share")
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: b.decoding_from(["a"]), 15, "b decoding a's camera")
        await a.publish(PatternVideo("a-screen", size=(320, 180)))
        await wait_for(lambda: b.decoding_from(["a"], kinds=("screen", "camera", "mic")), 15,
                       "b decoding a's screen share")
        assert {up.track_id for up in server.participants[a.pid].uptracks} == {
            "a-camera", "a-mic", "a-screen"}
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_lost_packets_are_nacked_and_retransmitted_as_rtx(
        call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    a, b = Client("a", "nack", audio=False), Client("b", "nack", video=False, audio=False)
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: b.decoding_from(["a"], kinds=("camera",)), 15, "b decoding a")
        receiver = next(t.receiver for t in b.pc.getTransceivers()
                        if t.receiver.track is not None and t.receiver.track.id == "a-camera")
        original = receiver._handle_rtp_packet
        dropped: set[int] = set()
        rtx_seen: list[int] = []
        leg = server.participants[b.pid].downtracks[id(server.participants[a.pid].uptracks[0])]

        async def lossy(packet, arrival_time_ms):  # type: ignore[no-untyped-def]
            if packet.payload_type == leg.rtx_pt:
                rtx_seen.append(packet.sequence_number)
            elif packet.sequence_number % 10 == 0 and packet.sequence_number not in dropped:
                dropped.add(packet.sequence_number)  # lose the first copy on the way in
                return
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = lossy
        before = b.frames["a-camera"]
        await wait_for(lambda: len(rtx_seen) >= 5 and b.frames["a-camera"] > before + 30, 15,
                       "retransmissions arriving while decoding continues")
        assert leg.retransmitted >= 5 and leg.rtx_pt is not None
        assert sample("parley_media_nacks_total", direction="downstream") >= 5
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_slow_subscriber_drops_frames_not_the_call(
        call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    a, b = Client("a", "slow", audio=False), Client("b", "slow", video=False, audio=False)
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: b.decoding_from(["a"], kinds=("camera",)), 15, "b decoding a")
        link = server.participants[b.pid].link
        real = link.sendto

        def full(data: bytes, addr: object) -> None:
            raise BlockingIOError  # its socket's send buffer is full: it fell behind

        link.sendto = full
        await asyncio.sleep(0.5)
        leg = next(iter(server.participants[b.pid].downtracks.values()))
        assert leg.dropped > 0 and leg.gated
        assert b.pid in server.meetings["slow"].participants  # still in the call
        frozen = b.frames["a-camera"]
        link.sendto = real
        await wait_for(lambda: b.frames["a-camera"] > frozen + 10, 5, "decoding resumes")
        assert not leg.gated
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_leaving_publisher_is_unpublished_and_the_rest_continue(
        call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    a, b, c = Client("a", "bye"), Client("b", "bye"), Client("c", "bye")
    try:
        for x in (a, b, c):
            await x.join(url)
        await wait_for(lambda: a.decoding_from(["b", "c"]) and b.decoding_from(["a", "c"]), 15,
                       "three-way call")
        assert server.subscriptions() == 12
        await c.close()  # DELETE .../participants/<c.pid>
        await wait_for(lambda: server.subscriptions() == 4, 5, "c's legs gone")
        gone = [e for e in server.participants[a.pid].events if e["type"] == "unpublished"]
        assert {e["track"] for e in gone} == {"c-camera", "c-mic"}
        # the next server offer marks c's m-lines inactive; a and b keep decoding each other
        await wait_for(lambda: server.participants[a.pid].pc.signalingState == "stable"
                       and any(t.direction == "inactive"
                               for t in server.participants[a.pid].pc.getTransceivers()), 5,
                       "renegotiated without c")
        before = a.frames["b-camera"], b.frames["a-camera"]
        await wait_for(lambda: a.frames["b-camera"] > before[0] + 15
                       and b.frames["a-camera"] > before[1] + 15, 5, "still decoding")
        assert "c" not in server.meetings["bye"].participants
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_keyframe_requests_are_coalesced() -> None:
    sent: list[float] = []
    limiter = KeyframeRequests(lambda: sent.append(time.monotonic()), min_interval=0.2)
    assert limiter.request()
    assert not any([limiter.request() for _ in range(20)])  # a burst of subscriber PLIs
    await asyncio.sleep(0.3)
    assert len(sent) == 2  # the immediate one and one deferred to the end of the interval
    assert sent[1] - sent[0] >= 0.19
    assert limiter.suppressed == 20


async def test_an_urgent_keyframe_request_is_not_left_a_whole_interval() -> None:
    """A subscriber's link coming up asks urgently (its keyframe asked for at the bind may have
    come before the link): within a long interval the request is deferred to the short urgent
    one, not to the interval's end, and takes the place of the deferred one (one keyframe)."""
    fired = asyncio.Event()
    limiter = KeyframeRequests(fired.set, min_interval=3600)
    assert limiter.request()
    fired.clear()
    assert not limiter.request()  # deferred to the interval's end, an hour away
    assert not limiter.request(urgent=True)  # inside URGENT_INTERVAL of the first: soon
    await asyncio.wait_for(fired.wait(), 60)
    assert limiter.sent == 2 and limiter._deferred is None


def test_vp8_keyframe_detection() -> None:
    # descriptor X=1,S=1,PID=0 / I=1 with 15-bit picture id / VP8 header P=0 (keyframe)
    assert vp8_keyframe(bytes([0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A]))
    assert not vp8_keyframe(bytes([0x90, 0x80, 0x80, 0x01, 0x11, 0x02, 0x00]))  # P=1
    assert not vp8_keyframe(bytes([0x80, 0x80, 0x80, 0x01, 0x10]))  # not a partition start
    assert vp8_keyframe(bytes([0x10, 0x10, 0x02]))  # no extension octet


_ = metrics


async def test_a_new_session_of_a_participant_gets_its_own_id(
        call_server: tuple[CallServer, str]) -> None:
    """The root of the old churn (docs/call-server.md): the node reused the identity as the
    participant id, so an answer or leave meant for a participant's previous connection hit
    its new one. Now every join gets an id of its own; the earlier session is replaced, and
    what still arrives for it (an answer, a leave) is refused without touching the new one."""
    server, url = call_server
    a, b = Client("a", "again"), Client("b", "again")
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 15, "a<->b")
        earlier, earlier_pid = a.me, a.pid
        await a.join(url)  # a reconnects: a fresh connection, no leave for the old one
        assert a.pid != earlier_pid
        await wait_for(lambda: a.decoding_from(["b"]), 15, "a's new session decoding b")
        async with httpx.AsyncClient(timeout=10, headers=CONTROL) as http:
            late = await http.post(f"{earlier}/sdp", json={"type": "answer", "sdp": "v=0\r\n"})
            assert late.status_code == 410, late.text
            assert (await http.delete(earlier)).status_code == 404
            events = (await http.get(f"{earlier}/events", params={"after": 0, "wait": 0})
                      ).json()["events"]
            assert events[-1]["type"] == "closed"
        assert server.participants[a.pid].pc.connectionState == "connected"
        assert sorted(p.label for p in server.meetings["again"].participants.values()) == [
            "a", "b"]
        frames = b.frames["a-camera"]
        await wait_for(lambda: b.frames["a-camera"] > frames + 10, 10, "b still decodes a")
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_loss_on_the_way_in_does_not_cut_a_subscribers_downlink(
        call_server: tuple[CallServer, str]) -> None:
    """A fifth of a publisher's packets lost before the node (its uplink, or the node's own
    receive buffer on a starved machine): the subscriber reports and NACKs those gaps too, but
    its downlink is fine, so its estimate is not cut."""
    server, url = call_server
    a, b = Client("a", "uploss", audio=False), Client("b", "uploss", video=False, audio=False)
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: b.decoding_from(["a"], kinds=("camera",)), 15, "b decoding a")
        up = server.participants[a.pid].uptracks[0]
        original = up.receiver._handle_rtp_packet

        async def lossy(packet, arrival_time_ms):  # type: ignore[no-untyped-def]
            # every fifth packet lost for good: its retransmissions are lost too
            if packet.payload_type == up.pt and packet.sequence_number % 5:
                await original(packet, arrival_time_ms)

        up.receiver._handle_rtp_packet = lossy
        leg = server.participants[b.pid].downtracks[id(up)]
        down = server.participants[b.pid].downlink
        nacks = sample("parley_media_nacks_total", direction="downstream")
        await wait_for(lambda: leg.loss > 0.1 and up.layers[0].lost > 0.1 and sample(
            "parley_media_nacks_total", direction="downstream") > nacks + 40, 15,
            "the subscriber reporting and NACKing the gaps")
        sent = leg.packets  # then eight allocations and more with those signals in
        await wait_for(lambda: leg.packets > sent + 60, 10, "two seconds more of forwarding")
        assert not down.reason.startswith("loss"), (down.reason, down.estimate)
        assert down.cut_at < 0 and not down.congested
    finally:
        await asyncio.gather(a.close(), b.close())


class _Clock:
    """``time`` for media-node/subscriber.py: a NACK's arrival times, set by the test."""

    now = 100.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


async def test_a_nacked_packet_is_resent_once_per_repair_gap(monkeypatch: Any) -> None:
    """A browser asks again for a missing packet every RTT it measured (tens of ms) while the
    repair waits behind a full access-link queue: answered each time, a failed probe's 26 lost
    packets drew 290 repairs in 2 s on a 270 kbit/s link (tests/sfu/test_throttled.py). A
    number is resent once per ``REPAIR_GAP_S``; asked again after it, it is resent again."""
    from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket

    from parley.media import subscriber
    from parley.media.subscriber import REPAIR_GAP_S, DownTrack

    class Repairs(DownTrack):
        __slots__ = ("resent",)

        def retransmit(self, out: int) -> None:
            self.resent.append((out, _Clock.now))

    leg = Repairs.__new__(Repairs)
    leg.resent, leg.layer, leg.sender, leg.downlink = [], None, None, None
    leg.nack_seen, leg.nacked, leg.repaired = set(), set(), {}
    monkeypatch.setattr(subscriber, "time", _Clock)

    def nack(*lost: int) -> RtcpRtpfbPacket:
        return RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=2, lost=list(lost))

    start = _Clock.now
    for step in range(7):  # asked every 30 ms for 0.18 s, a new loss joining at 90 ms
        _Clock.now = start + 0.03 * step
        await leg.on_rtcp(nack(500, 501) if step < 3 else nack(500, 501, 510))
    assert leg.resent == [(500, start), (501, start), (510, start + 0.09)]
    assert leg.nacked == {500, 501, 510}  # each counted once as loss, as before
    _Clock.now = start + REPAIR_GAP_S
    await leg.on_rtcp(nack(500, 510))  # still missing a gap later: the repair was lost
    assert leg.resent[3:] == [(500, start + REPAIR_GAP_S)]

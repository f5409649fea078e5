"""A leg bound before its link is up starts on the keyframe that came meanwhile
(DownTrack.catch_up; docs/call-server.md, "Negotiation and renegotiation"): the publisher
track, the leg and the UDP socket the leg sends on are the call server's own; only the SRTP
step is left out."""

from __future__ import annotations

import socket
import struct
import time
from types import SimpleNamespace

from aiortc import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from parley.media.link import Link
from parley.media.publisher import UpTrack
from parley.media.subscriber import CATCH_UP_S, DownTrack

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
KEY = bytes([0x10, 0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00])  # S=1, P=0
DELTA = bytes([0x10, 0x11, 0x02, 0x00])  # S=1, P=1


async def _pli(ssrc: int) -> None:
    return None


async def _nack(ssrc: int, missing: list[int]) -> None:
    return None


def _leg() -> tuple[UpTrack, DownTrack, Link]:
    receiver = SimpleNamespace(_RTCRtpReceiver__remote_streams={}, _send_rtcp_pli=_pli,
                               _send_rtcp_nack=_nack)
    up = UpTrack("pub", receiver, [VP8], "cam", "video")  # type: ignore[arg-type]
    link = Link()
    dt = DownTrack(up, "sub", link)
    sender = SimpleNamespace(_ssrc=0x1234, _rtx_ssrc=0x1235)
    dt.bind(SimpleNamespace(sender=sender, _codecs=[VP8]))
    return up, dt, link


async def _send(up: UpTrack, seq: int, payload: bytes, ts: int) -> None:
    await up.on_rtp(RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, ssrc=777,
                              payload=payload))


def _open(link: Link) -> socket.socket:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    link.protect, link.sendto, link.addr = bytes, tx.sendto, rx.getsockname()
    link.ready = True
    return rx


async def test_a_leg_whose_link_comes_up_starts_on_the_keyframe_that_came_before() -> None:
    up, dt, link = _leg()
    await _send(up, 100, DELTA, 1000)
    await _send(up, 101, KEY, 4000)  # the keyframe asked for at the bind: no link yet
    await _send(up, 102, DELTA, 7000)
    await _send(up, 103, DELTA, 10000)
    assert dt.packets == 0  # nothing could go out
    rx = _open(link)
    assert dt.catch_up(time.perf_counter())
    got = [rx.recv(2000) for _ in range(3)]
    seqs = [struct.unpack("!H", p[2:4])[0] for p in got]
    assert [p[12:] for p in got] == [KEY, DELTA, DELTA]  # from the keyframe on, in order
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 1, 2]
    assert {struct.unpack("!I", p[8:12])[0] for p in got} == {0x1234}
    await _send(up, 104, DELTA, 13000)  # live packets continue the numbering
    assert struct.unpack("!H", rx.recv(2000)[2:4])[0] == (seqs[-1] + 1) & 0xFFFF
    assert not dt.catch_up(time.perf_counter())  # already flowing


async def test_no_catch_up_from_a_stale_keyframe_or_none() -> None:
    up, dt, link = _leg()
    await _send(up, 5, DELTA, 1000)
    _open(link)
    assert not dt.catch_up(time.perf_counter())  # no keyframe came: ask for one
    await _send(up, 6, KEY, 4000)  # the link is up: it flows at once
    assert dt.packets == 1

    up, dt, link = _leg()
    await _send(up, 7, KEY, 4000)
    _open(link)
    assert not dt.catch_up(time.perf_counter() + CATCH_UP_S + 0.1)
    assert dt.packets == 0


async def test_a_leg_on_a_transcoded_rung_has_nothing_to_catch_up_on() -> None:
    """A rung (the transcoder's output) keeps no history: the leg asks for a keyframe."""
    _, dt, link = _leg()
    _open(link)
    dt.target = SimpleNamespace(name="a RungLayer has no key_seq")  # type: ignore[assignment]
    assert not dt.catch_up(time.perf_counter())

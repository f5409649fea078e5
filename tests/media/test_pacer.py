"""The pacer (media-node/pacer.py) on a real loopback UDP pair: video waits for the
drain and then leaves no faster than the rate, audio passes at once, and the link's own
``sendto`` is back when the pacing ends. Only lower bounds on time are checked (a loaded
machine makes packets later, never earlier)."""

from __future__ import annotations

import asyncio
import socket

from parley.media.link import Link
from parley.media.pacer import Pacer

AUDIO_PT, VIDEO_PT = 111, 96


def packet(pt: int, n: int, size: int) -> bytes:
    return bytes([0x80, pt, 0, n]) + bytes(size - 4)


async def pace() -> tuple[list[tuple[float, bytes]], float, Link, object]:
    loop = asyncio.get_running_loop()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setblocking(False)
    link = Link()
    link.sendto, link.addr, link.ready = tx.sendto, rx.getsockname(), True
    link.protect = lambda data: data
    got: list[tuple[float, bytes]] = []
    arrived, ended = asyncio.Event(), asyncio.Event()

    def receive() -> None:
        got.append((loop.time(), rx.recv(2048)))
        if len(got) == 6:
            arrived.set()

    loop.add_reader(rx.fileno(), receive)
    pacer = Pacer(link)
    stop = pacer.stop

    def stopped() -> None:  # the pacing's own end (PACE_S after the start)
        stop()
        ended.set()

    pacer.stop = stopped  # type: ignore[method-assign]
    raw = link.sendto
    start = loop.time()
    pacer.start(80_000, frozenset({AUDIO_PT}), drain_s=0.1)  # 10,000 bytes a second
    for n in range(5):
        link.sendto(link.protect(packet(VIDEO_PT, n, 1000)), link.addr)
    link.sendto(packet(AUDIO_PT, 99, 100), link.addr)
    await arrived.wait()
    await ended.wait()
    assert not pacer.pacing
    loop.remove_reader(rx.fileno())
    rx.close()
    tx.close()
    return got, start, link, raw


def test_video_waits_for_the_drain_then_leaves_at_the_rate_audio_at_once() -> None:
    got, start, link, raw = asyncio.run(pace())
    assert [d[3] for _, d in got] == [99, 0, 1, 2, 3, 4]  # audio first, video in order
    video = [t - start for t, d in got if d[1] == VIDEO_PT]
    # the first after the drain and the audio's 100 bytes at 10 kB/s, each next one after
    # its predecessor's 1000 bytes (a late timer's catch-up never moves the schedule earlier)
    for i, t in enumerate(video):
        assert t >= 0.1 + 0.01 + i * 0.1 - 1e-3
    assert link.sendto == raw  # the socket's own sendto again


async def drain_while_pacing() -> tuple[float, float, bytes]:
    """(when the congested start came, when its next video packet arrived, that packet)."""
    loop = asyncio.get_running_loop()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    link = Link()
    link.sendto, link.addr, link.ready = tx.sendto, rx.getsockname(), True
    link.protect = lambda data: data
    arrived = asyncio.Event()
    at: list[float] = []
    got: list[bytes] = []

    def receive() -> None:
        at.append(loop.time())
        got.append(rx.recv(2048))
        arrived.set()

    loop.add_reader(rx.fileno(), receive)
    pacer = Pacer(link)
    pacer.start(800_000, frozenset(), drain_s=0.0)  # a narrow link, paced at all times
    link.sendto(packet(VIDEO_PT, 0, 1000), link.addr)
    await arrived.wait()
    arrived.clear()
    congested = loop.time()
    pacer.start(800_000, frozenset(), drain_s=0.1)  # then a congested move down
    stamped = bytes([0x90, VIDEO_PT, 0, 1]) + bytes(8) + b"\xbe\xde\x00\x01\x32"
    link.sendto(link.protect(stamped + b"\0\0\0" + bytes(900)), link.addr)  # sent at 0
    await arrived.wait()
    pacer.stop()
    loop.remove_reader(rx.fileno())
    rx.close()
    tx.close()
    return congested, at[-1], got[-1]


def test_a_congested_move_while_pacing_holds_video_for_the_drain_too() -> None:
    """A narrow link's pacer already runs when loss cuts it: the new layers' packets still
    wait for the queue the stopped ones filled to drain; and a packet's abs-send-time is the
    time it left the queue, not the time it was forwarded into it (the receiver would read
    the wait as the link's queue)."""
    congested, arrived, data = asyncio.run(drain_while_pacing())
    assert arrived - congested >= 0.1 - 1e-3
    sent = int.from_bytes(data[17:20], "big") / 262144  # 6.18 fixed point, 64 s wrap
    # (the loop's clock and perf_counter are both CLOCK_MONOTONIC on Linux)
    assert 0.1 - 1e-3 <= (sent - congested) % 64 <= arrived - congested + 1e-3

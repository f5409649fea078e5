"""A subscriber's pacer: after a congested move to lower layers, what the call server sends
that subscriber leaves at the cut estimate, after the bottleneck's queue had time to drain; and
on a link that was cut and is still narrow (``bwe.Downlink.narrow``), at the estimate at all
times: a new layer's keyframe after a move up, and the bursts of a loaded machine (the node's
loop or a publisher's encoder catching up: 600 kbit/s for a quarter of a second), would overflow
a narrow link's small queue at once. While a probe runs, its rate is the probe's, so the padding
reaches the link.

Why: when loss shows, the narrow link's queue is full (a tail-drop queue loses only when full)
with packets of the layers just stopped. The lower layers start on keyframes, 5-20x a delta
frame, asked for at once and sent by the publishers within the same 30-160 ms; forwarded as
they come, two keyframes (and their repairs) landed on that full queue together and were lost
in it, NACKed, lost again and asked for again: the throttled receiver of
tests/sfu/test_throttled.py froze 1.25-1.8 s after every switch. Paced, the keyframes pass
whole. LiveKit's pkg/sfu/pacer paces every packet (leaky bucket); here only the subscribers of
narrow links are paced (tens of packets a second each), so the forwarding path of every other
stays one synchronous ``sendto`` per packet: the pacer swaps the connection's ``Link.sendto``
for its queue while it runs and puts the socket's back after (``DownTrack.forward`` does not
change). Audio is not held: it is small, and a gap in it
is heard; it counts against the rate all the same.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from .link import Link
from .rtp import abs_send_time

DRAIN_S = 0.2  # what a full access-link queue holds (tbf / modem buffers: hundreds of ms)
PACE_S = 1.5  # how long after the move: the new keyframes, their repairs and first frames
MAX_QUEUE_S = 2.0  # packets beyond this much at the rate are dropped (the receiver NACKs)
# catch-up the bucket allows after a late timer: on a loaded machine the loop runs timers tens
# of milliseconds late, and a bucket that forgave each delay paced well under its rate, its
# queue overflowed and the drops read as the link's loss (a second cut under the low layers,
# to a transcoded rung: tests/sfu/test_throttled.py, 1 run in 6 at load 10). 0.1 s at the
# rate is half a full access-link queue.
BURST_S = 0.1


def _unprotected(data: bytes) -> bytes:
    """``Link.protect`` while pacing: packets are protected as they leave the queue."""
    return data


def _restamped(data: bytes) -> bytes:
    """``data`` with its abs-send-time, when it carries one (the node's own layout: a one-byte
    header extension holding only it, ``DownTrack.bind``), set to now: stamped when forwarded,
    the time a packet waited in the queue read, to the receiver's delay-based estimator, as a
    queue growing on the link, its REMB fell and every probe failed (libwebrtc stamps at its
    pacer's send for the same reason)."""
    if data[0] & 0x10 and data[12:14] == b"\xbe\xde" and data[16] & 0x0F == 2:
        return b"".join((data[:17], abs_send_time(time.perf_counter()), data[20:]))
    return data


class Pacer:
    """Leaky bucket in front of one subscriber's ``Link`` while it recovers."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.raw: Any = None  # the socket's sendto while pacing, else None
        self.protect: Any = None  # the SRTP session's protect while pacing
        self.queue: deque[tuple[bytes, Any]] = deque()
        self.queued = 0  # bytes in the queue
        self.rate = 0.0  # bytes per second
        self.next_at = 0.0  # loop time the next packet may leave
        self.until = 0.0
        self.audio: frozenset[int] = frozenset()  # payload types sent at once
        self.timer: asyncio.TimerHandle | None = None
        self.runs = 0
        self.dropped = 0

    @property
    def pacing(self) -> bool:
        return self.raw is not None

    def start(self, bps: float, audio_pts: frozenset[int], drain_s: float = DRAIN_S) -> None:
        """Hold video ``drain_s`` (the queue the stopped layers filled), then send at ``bps``
        for ``PACE_S``; a second start while pacing takes the new rate and extends the time."""
        link = self.link
        if not link.ready or bps <= 0:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.raw is None:
            self.raw, self.protect = link.sendto, link.protect
            link.sendto, link.protect = self.send, _unprotected
            self.next_at = now
            self.runs += 1
        if drain_s:  # a congested move while already pacing (a narrow link) holds video too
            self.next_at = max(self.next_at, now + drain_s)
        self.rate = bps / 8
        self.audio = audio_pts
        self.until = now + PACE_S
        self._schedule(loop)

    def send(self, data: bytes, addr: Any) -> None:
        """``Link.sendto`` while pacing: audio at once, video queued."""
        if data[1] & 0x7F in self.audio:
            self.next_at += len(data) / self.rate
            self.raw(self.protect(data), addr)
            return
        if self.queued + len(data) > self.rate * MAX_QUEUE_S:
            self.dropped += 1
            return
        queue = self.queue
        queue.append((data, addr))
        self.queued += len(data)
        if len(queue) == 1:  # the timer waited for the end, or for nothing
            self._schedule(asyncio.get_running_loop())

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.timer is not None:
            self.timer.cancel()
        at = self.next_at if self.queue else self.until
        self.timer = loop.call_at(max(at, loop.time()), self._drain)

    def _drain(self) -> None:
        self.timer = None
        if self.raw is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue, raw, protect = self.queue, self.raw, self.protect
        while queue and self.next_at <= now:
            data, addr = queue.popleft()
            self.queued -= len(data)
            self.next_at = max(self.next_at, now - BURST_S) + len(data) / self.rate
            try:
                raw(protect(_restamped(data)), addr)
            except OSError:  # a full socket buffer or a closed pair: the packet is lost
                self.dropped += 1
        # past its time the pacer drains what it holds, for MAX_QUEUE_S at most: at a rate under
        # what its legs send, its queue never emptied, and it paced (and dropped) for good
        # (tests/sfu/test_throttled.py: a receiver kept on its low layers for 40 s)
        if now < self.until or (queue and now < self.until + MAX_QUEUE_S):
            self._schedule(loop)
        else:
            self.stop()

    def stop(self) -> None:
        """Back to sending at once (whatever is queued goes now)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        raw, self.raw = self.raw, None
        if raw is None:
            return
        protect = self.protect
        if self.link.sendto == self.send:  # not re-resolved meanwhile (an ICE restart)
            self.link.sendto, self.link.protect = raw, protect
        while self.queue:
            data, addr = self.queue.popleft()
            try:
                raw(protect(_restamped(data)), addr)
            except OSError:
                self.dropped += 1
        self.queued = 0

"""A subscriber's probe: padding up to the rate a layer move would send, before the move.

``bwe.Downlink`` decides when a raise must be tried first (after a cut, above what the link has
carried without loss) and judges the probe from the NACKs of the real packets; this module only
sends the padding, on a 20 ms timer while the probe runs, spread round-robin over the
subscriber's video legs as RTX copies of their latest packets (``DownTrack.pad``). The steady
forwarding path is untouched: padding is extra sends from the loop, only during a probe.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from . import metrics

if TYPE_CHECKING:
    from .bwe import Downlink

INTERVAL_S = 0.02  # 50 small bursts a second: smooth enough for a 200 ms queue
BURST_S = 0.05  # at most this much padding at once after a late timer
BACK = 16  # the padding repeats the legs' last 16 packets


class Prober:
    """Sends one subscriber's padding while its ``Downlink`` probes."""

    def __init__(self, downlink: Downlink) -> None:
        self.downlink = downlink
        self.rate = 0.0  # bytes per second
        self.due = 0.0  # bytes owed
        self.last = 0.0
        self.back = 0
        self.sent = 0  # padding bytes, over every probe
        self.timer: asyncio.TimerHandle | None = None

    def start(self, pad_bps: float) -> None:
        """Pad at ``pad_bps`` (the probe's rate less what is being sent) until the probe ends."""
        self.rate = max(0.0, pad_bps) / 8
        self.due = 0.0
        self.last = time.monotonic()
        if self.timer is None and self.rate:
            self.timer = asyncio.get_running_loop().call_later(INTERVAL_S, self._pad)

    def _pad(self) -> None:
        self.timer = None
        now = time.monotonic()
        if not self.downlink.padding(now):
            return
        self.due = min(self.due + (now - self.last) * self.rate, BURST_S * self.rate)
        self.last = now
        legs = [dt for dt in self.downlink.legs if dt.layer is not None]
        before = self.sent
        while self.due > 0 and legs:
            for dt in list(legs):
                size = dt.pad(self.back % BACK)
                if not size:
                    legs.remove(dt)
                    continue
                self.due -= size
                self.sent += size
                if self.due <= 0:
                    break
            self.back += 1
        if self.sent > before:
            metrics.BWE_PROBE_PADDING.inc(self.sent - before)
        self.timer = asyncio.get_running_loop().call_later(INTERVAL_S, self._pad)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

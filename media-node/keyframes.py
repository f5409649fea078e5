"""Keyframe requests towards a publisher, coalesced.

Every subscriber that joins, loses packets or falls behind asks for a keyframe (PLI, RFC 4585
section 6.3.1; FIR, RFC 5104 section 4.3.1). Forwarding each one would make the publisher send a
keyframe per request, and keyframes are 5-20x the size of delta frames; so the call server sends at
most one request per interval per publisher track, and a request that arrives inside the interval
is answered by one deferred request at its end (the keyframe then serves all waiters).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from . import metrics

URGENT_INTERVAL = 0.1  # s: an urgent request (a link just up) waits at most this long


class KeyframeRequests:
    """Rate-limited PLI sender for one publisher track."""

    def __init__(self, send: Callable[[], None], min_interval: float = 0.5) -> None:
        self._send = send
        self.min_interval = min_interval
        self._last = -1e9
        self._deferred: asyncio.TimerHandle | None = None
        self.sent = 0
        self.suppressed = 0

    def request(self, urgent: bool = False) -> bool:
        """Ask for a keyframe; True when a request went out now. ``urgent`` (a subscriber's
        link just came up: the keyframe asked for at its bind may have come before it, and
        a full interval would leave it black that long) waits ``URGENT_INTERVAL`` at most, so
        many subscribers connecting together still share one keyframe."""
        now = time.monotonic()
        wait = self._last + (min(URGENT_INTERVAL, self.min_interval) if urgent
                             else self.min_interval) - now
        if wait <= 0:
            if self._deferred is not None:
                self._deferred.cancel()
                self._deferred = None
            self._fire()
            return True
        self.suppressed += 1
        metrics.KEYFRAME_REQUESTS_SUPPRESSED.inc()
        loop = asyncio.get_running_loop()
        if self._deferred is not None and self._deferred.when() > loop.time() + wait:
            self._deferred.cancel()  # an urgent request: sooner than the one deferred
            self._deferred = None
        if self._deferred is None:
            self._deferred = loop.call_later(wait, self._fire)
        return False

    def _fire(self) -> None:
        self._deferred = None
        self._last = time.monotonic()
        self.sent += 1
        metrics.KEYFRAME_REQUESTS.inc()
        self._send()

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

"""A subscriber's downlink estimate: how many bits per second the call server may send it.

Why receiver REMB plus RTCP loss, not transport-wide congestion control: TWCC (draft-holmer-rmcat-
transport-wide-cc-extensions) needs a sequence-number header extension written into every
forwarded packet and a send-side delay-based estimator fed per packet, which puts per-packet work
and state in the forwarding path; aiortc implements neither side. REMB (draft-alvestrand-rmcat-
remb) is computed by the browser from arrival times (the node stamps abs-send-time on forwarded
video for it) and sent about once a second, and receiver reports (RFC 3550 section 6.4.2) carry
each leg's fraction lost: both arrive as RTCP the node reads anyway.

The rules, after Google Congestion Control's loss-based controller (draft-ietf-rmcat-gcc-02
section 6):
- more than 10 % loss (receiver reports, or NACKs counted per sequence number, which come at
  once) cuts the estimate to ``sent * (1 - loss / 2)``, and the leg stops its current layer at
  once (``DownTrack.select``), since the link drops it anyway;
- under 2 % loss it grows 4 % per update (four a second), but after a cut only once a hold has
  passed: 8 s, doubling (up to 32 s) each time an increase was followed by loss, so a receiver on
  a fixed narrow link is probed with a bigger layer rarely;
- a REMB above 1.2x the estimate (the receiver's own, delay-based estimate says the link widened)
  ends the hold at once. A REMB is not used to cut: measured on this 2-core machine with five
  Chromium pages, REMB dipped to a third of a loss-free rate whenever the CPU was busy.
"""

from __future__ import annotations

import time

START_BPS = 4_000_000.0  # optimistic: a strong receiver gets every top layer at once
FLOOR_BPS = 60_000.0  # keeps audio and the lowest video layer
REMB_FRESH_S = 3.0
HOLD_MIN_S = 8.0
GROWTH = 1.04  # per update (4 a second): about 17 % a second
HOLD_MAX_S = 32.0


class Downlink:
    """Per-subscriber estimate, updated by the node's allocation tick."""

    def __init__(self, start_bps: float = START_BPS) -> None:
        self.estimate = start_bps
        self.remb: float | None = None
        self.remb_at = 0.0
        self.hold_until = 0.0
        self.hold = HOLD_MIN_S
        self.raised_at = -1e9  # when the estimate last grew (to spot a failed increase)
        self.congested = False
        self.reason = "start"

    def on_remb(self, bps: float) -> None:
        self.remb = float(bps)
        self.remb_at = time.monotonic()

    def update(self, sent_bps: float, loss: float, now: float | None = None) -> float:
        """Fold in what was sent since the last update and the receivers' loss fraction."""
        now = time.monotonic() if now is None else now
        remb = self.remb if self.remb is not None and now - self.remb_at < REMB_FRESH_S else None
        self.congested = False
        if loss > 0.10:  # packets are being dropped
            self._cut(max(FLOOR_BPS, sent_bps * (1 - loss / 2)), now, f"loss {loss:.0%}")
            self.congested = True
        elif loss < 0.02 and (now >= self.hold_until
                              or (remb is not None and remb > 1.2 * self.estimate)):
            grown = max(self.estimate, sent_bps) * GROWTH
            if grown > self.estimate:
                self.estimate = grown
                self.raised_at = now
                self.reason = "probe"
        return self.estimate

    def _cut(self, to: float, now: float, reason: str) -> None:
        if to >= self.estimate:
            return
        if now - self.raised_at < self.hold:  # an increase just failed: wait longer next time
            self.hold = min(HOLD_MAX_S, self.hold * 2)
        elif now - self.hold_until > 4 * self.hold:  # stable for a while: forgive
            self.hold = HOLD_MIN_S
        self.estimate = to
        self.hold_until = now + self.hold
        self.reason = reason

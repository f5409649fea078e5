"""A subscriber's downlink estimate: how many bits per second the call server may send it.

Why receiver REMB plus RTCP loss, not transport-wide congestion control: TWCC (draft-holmer-rmcat-
transport-wide-cc-extensions) needs a sequence-number header extension written into every
forwarded packet and a send-side delay-based estimator fed per packet, which puts per-packet work
and state in the forwarding path; aiortc implements neither side. REMB (draft-alvestrand-rmcat-
remb) is computed by the browser from arrival times (the node stamps abs-send-time on forwarded
video for it) and sent about once a second, and receiver reports (RFC 3550 section 6.4.2) carry
each leg's fraction lost: both arrive as RTCP the node reads anyway.

The rules, after Google Congestion Control's loss-based controller (draft-ietf-rmcat-gcc-02
section 6) with REMB as the delay signal:
- more than 10 % loss cuts the estimate to ``sent * (1 - loss / 2)``;
- a REMB that fell (below 80 % of its recent peak) and below 75 % of what is sent cuts it to REMB;
- it grows 8 % per update only while loss is under 2 % and the receiver's REMB shows headroom
  (at least 1.3x what is sent; a browser's REMB tops out at 1.5x what it receives, and sits at
  the link's rate when the link is full). So a receiver on a fixed narrow link is never probed
  with a bigger layer that would freeze it, and one whose link widened climbs at once.
- after a loss cut, growth also waits out a hold (4 s, doubling when an increase failed).
"""

from __future__ import annotations

import time

START_BPS = 4_000_000.0  # optimistic: a strong receiver gets every top layer at once
FLOOR_BPS = 60_000.0  # keeps audio and the lowest video layer
REMB_FRESH_S = 3.0
HOLD_MIN_S = 4.0
HOLD_MAX_S = 32.0


class Downlink:
    """Per-subscriber estimate, updated by the node's allocation tick."""

    def __init__(self, start_bps: float = START_BPS) -> None:
        self.estimate = start_bps
        self.remb: float | None = None
        self.remb_at = 0.0
        self.remb_peak = 0.0
        self.hold_until = 0.0
        self.hold = HOLD_MIN_S
        self.raised_at = -1e9  # when the estimate last grew (to spot a failed increase)
        self.congested = False
        self.reason = "start"

    def on_remb(self, bps: float) -> None:
        now = time.monotonic()
        # the peak decays 5 %/s: a REMB under it means the receiver's estimate fell (congestion);
        # one that is low but rising is the estimator's start-up ramp, not a limit
        decay = 0.95 ** max(0.0, now - self.remb_at) if self.remb_at else 1.0
        self.remb_peak = max(float(bps), self.remb_peak * decay)
        self.remb = float(bps)
        self.remb_at = now

    def update(self, sent_bps: float, loss: float, now: float | None = None) -> float:
        """Fold in what was sent since the last update and the receivers' loss fraction."""
        now = time.monotonic() if now is None else now
        remb = self.remb if self.remb is not None and now - self.remb_at < REMB_FRESH_S else None
        self.congested = False
        if loss > 0.10:
            self._cut(max(FLOOR_BPS, sent_bps * (1 - loss / 2)), now, f"loss {loss:.0%}")
        elif remb is not None and remb < 0.75 * sent_bps and remb < 0.8 * self.remb_peak:
            self._cut(max(FLOOR_BPS, remb), now, f"remb {remb / 1000:.0f} kbps")
        elif loss < 0.02 and (remb is None or remb >= 1.3 * sent_bps) and (
                now >= self.hold_until or (remb is not None and remb > 1.2 * self.estimate)):
            grown = max(self.estimate, sent_bps) * 1.08
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
        self.congested = True
        self.reason = reason

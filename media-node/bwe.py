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
- more than 10 % loss cuts the estimate to a margin under what got through,
  ``CUT_MARGIN * sent * (1 - loss)`` (``sent`` averaged over about a second: one 0.25 s window
  holds a keyframe burst, or nothing while legs wait for one), and the legs stop their current
  layer at once (``DownTrack.select``), since the link drops it anyway. The margin is GCC's
  delay-based one (0.85 x the received rate): a first share measured while the queue was
  still filling reads low, and layers packed to the brim of a link kept losing every keyframe
  and repair (a camera left full at 255 kbit/s on a 270 kbit/s link froze the other, cut one
  for 1.4 s). GCC steps down gently (``1 - loss / 2``) because it repeats every
  feedback interval; here each step is a layer switch that costs keyframes, so the first cut
  lands where the link is (with GCC's step a throttled receiver kept one camera on its full
  layer past 5 s). Loss is the receivers' reports (each leg's fraction lost, less what its
  layer already lost on the way in) or, sooner, the share of the video packets sent over all
  the subscriber's legs that it NACKed (each number once, and only numbers the node did send:
  a gap the publisher's uplink made is not this downlink's, and on a starved machine the
  node's own socket drops incoming packets; tests/sfu/test_throttled.py);
- the NACK share is counted over as many 0.25 s updates as it takes to send 20 packets: one
  10 frames/s leg sends about 6 per update, too few to judge alone, while the link is shared;
  these windows are disjoint (each packet judged once);
- the first loss of a good link is judged when it is reported, not only on the update: outside
  a hold (the estimate was growing: the link had room) a NACK with fresh numbers calls
  ``react``, which judges the shortest window from one of the last updates' marks that holds
  20 packets, and cuts at once (LiveKit's StreamAllocator reallocates on each feedback signal
  the same way). Only there: inside a hold (after a cut) loss is judged on the update alone.
  Judged at each NACK, a window always ends on a loss and sliding windows count a packet more
  than once, so they read high; on a link the low layers nearly fill that made a second cut
  under the low layers (the reverted ab3bc42: tests/sfu/test_throttled.py failed 1 run in 5),
  while for the first drop of a good link the cut is floored at the lowest layers anyway;
- after a cut, loss is not judged for ``SETTLE_S``: the queue the cut legs filled drains, the
  new layers' keyframes come in a burst, and what the receiver NACKs then says nothing about
  the narrower rate (counted, it cut a throttled receiver's 270 kbit/s link to 98 kbit/s, below
  its low layers, and the transcoder's rungs followed, with a freeze: the old flaky test); a
  second cut waits ``CUT_GAP_S`` (a browser's receiver report covers about the last second);
- a cut lands no lower than ``floor`` (the lowest layers and audio the subscriber receives)
  unless the estimate already is there: one burst of loss never routes a subscriber to the
  transcoder, loss that lasts on the lowest layers does;
- under 2 % loss it grows 4 % per update (four a second), but after a cut only once a hold has
  passed: 8 s, doubling (up to 32 s) each time the growth after a hold met loss within a hold's
  time, so a receiver on a fixed narrow link is probed with a bigger layer rarely (the first
  drop of a good link is not such a failure: the estimate grows all the time there);
- after a cut, a raise is tried on padding first (``probe``): the estimate grows as above, but
  a layer move that would send more than a probe showed the link carries (``proven``) waits
  while the subscriber is padded up to 1 / ``PROBE_HEADROOM`` times what the move would send,
  for ``PROBE_S``, with RTX copies of packets just sent (redundant payloads, as
  libwebrtc's ``RTPSender::GeneratePadding`` and LiveKit's probe clusters pad). Carried without
  loss until ``PROBE_FEEDBACK_S`` after the padding (a tail-drop queue loses only once full, and
  the NACK comes a queue's delay later), the move is made; loss on the real packets meanwhile
  (over ``PROBE_LOSS`` of them NACKed) ends the probe at once, the estimate goes back to what
  the link carried (the cut's estimate, the last passed probe's rate, or what it was sent
  without loss before the probe, whichever is more), its losses are not judged for
  ``CUT_GAP_S``, a hold starts, and no layer moved. For ``PROBE_AFTER_S`` after it, loss cuts
  no lower than that estimate: the padding's repairs, the keyframes its loss asked for and a
  receiver report still covering it overran the 2 s unjudged in the CI rehearsal, the next
  update cut a 270 kbit/s link's estimate to 76 kbit/s (on the lowest layers' cost a cut is
  not floored) and both cameras went to transcoded rungs, one froze 3.3 s; nor is a leg sent a
  new transcoded rung then (``aftermath``). Loss that outlasts it is the link's and cuts as any
  other. A NACK during a probe is judged when it comes, inside
  a hold too (a REMB can end one), so the padding stops at the first burst. And the padding
  stops before the queue loses at all: a REMB during the probe under ``PROBE_REMB_DROP`` of the
  one before it (and under the padded rate) fails it when it comes. The browser's delay-based
  estimator sees the queue grow and libwebrtc sends a lower REMB at once; the loss a full
  queue had to show first froze a camera 1.3-1.8 s in half the loaded test_throttled runs
  (the queue, with the low layers at three quarters of the link, drained in about a second),
  while the REMB fell 0.6-0.8 s into each probe there with no NACK yet. A REMB wrongly lower
  (the CPU, not the link) costs a later climb, never a cut: REMB still moves no estimate down.
  A raise of real layers that failed cost the receiver two switches (two keyframes on a full
  queue) and doubled the hold, up to 32 s (the layer_drop bench's 31-35 s climbs); a failed
  probe costs some padding and a few repaired packets, so it does not double the hold;
- a REMB above 1.2x the estimate (the receiver's own, delay-based estimate says the link widened)
  ends the hold at once. Delay alone never cuts (no REMB cut, no timeout as loss): measured on
  this 2-core machine with five Chromium pages, REMB dipped to a third of a loss-free rate
  whenever the CPU was busy, and late packets are not lost ones.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

NACK_MIN_PACKETS = 20  # video packets an update needs before its NACK share counts
START_BPS = 4_000_000.0  # optimistic: a strong receiver gets every top layer at once
FLOOR_BPS = 60_000.0  # keeps audio and the lowest video layer
REMB_FRESH_S = 3.0
HOLD_MIN_S = 8.0
GROWTH = 1.04  # per update (4 a second): about 17 % a second
HOLD_MAX_S = 32.0
SENT_CEILING = 1.5  # growth stops at this times the rate sent (or START_BPS, if more)
CUT_GAP_S = 2.0  # a second cut waits for feedback about the first
SENT_SMOOTHING = 0.3  # per update: the sent rate averaged over about a second
CUT_MARGIN = 0.85  # a cut lands this far under what got through
SETTLE_S = 1.0  # after a cut: the filled queue drains and the new keyframes pass, unjudged
REACT_WINDOW_S = 1.0  # the longest window ``react`` judges (its start: an update's mark)
LOSS_CUT = 0.10  # a loss fraction over this cuts
PROBE_S = 1.5  # how long a probe pads: a 200 ms queue overfilled by 40 kbit/s drops in 1.4 s
PROBE_FEEDBACK_S = 0.5  # then the NACKs of its last packets come back (the queue's delay, RTT)
# pads to the move's rate / this: a probe 15 % over a move that nearly filled a 270 kbit/s link
# overfilled its 200 ms queue too slowly to lose within the probe, passed, and the move met 15 %
# loss (a 2.5 s freeze); 43 % over fails within about a second wherever the move would not fit
PROBE_HEADROOM = 0.7
PROBE_LOSS = 0.05  # NACKed share of the real packets sent in a probe that fails it
PROBE_MIN_NACKS = 2  # one NACK can be a reordering under load, not the probe's loss
# a REMB during a probe under this share of the one before it, and under the padded rate, fails
# it: the browser's delay-based estimator saw the queue grow (libwebrtc sends a lower REMB at
# once), before the queue overflows and loses real packets
PROBE_REMB_DROP = 0.9
# after a failed probe, loss cuts no lower than what the link carried before it: its aftermath
# (repairs, the keyframes its loss asked for, a receiver report about it) outlasted CUT_GAP_S
PROBE_AFTER_S = 5.0
# a link cut once and estimated under this is paced at all times (``Downlink.narrow``): on a
# loaded machine the node and the publishers send in bursts, and a narrow link's queue is small
NARROW_BPS = 1_500_000.0


class Downlink:
    """Per-subscriber estimate, updated by the node's allocation tick."""

    def __init__(self, start_bps: float = START_BPS) -> None:
        self.estimate = start_bps
        self.remb: float | None = None
        self.remb_at = 0.0
        self.hold_until = -1e9
        self.hold = HOLD_MIN_S
        self.congested = False
        self.reason = "start"
        self.legs: set[Any] = set()  # the subscriber's video DownTracks (their packet counters)
        self.nacks = 0  # fresh NACKed sequence numbers over those legs
        self._marks = (0, 0)  # (packets, nacks) where the update's next window starts
        # (time, packets, nacks) of each update in the last REACT_WINDOW_S: ``react``'s windows
        self._ticks: deque[tuple[float, int, int]] = deque()
        # called when a NACK brings fresh numbers (the participant's ``react``), or None
        self.alert: Callable[[], None] | None = None
        self.sent: float | None = None  # bits/s sent, averaged over about a second
        self.cut_at = -1e9
        self.cut_to = 0.0  # the estimate the last cut set
        self.cut_until = -1e9  # the end of the last cut's hold (a failed probe's hold is not)
        self.cut_floor = 0.0  # what the lowest layers and audio cost at the last cut
        # what a probe showed the link carries since the last cut: 0 after a cut (the layers'
        # averages under-price what a raise sends, its keyframe first: a camera raised to a
        # total under the cut's estimate met 25 % loss), each passed probe's rate after it;
        # unbounded before any cut (a link never seen losing is not probed). Not the rate
        # sent, which a keyframe burst inflates while a queue holds it. And the probe running.
        self.proven = float("inf")
        self.probe_bps = 0.0
        self.probe_until = -1e9
        self._probe_marks = (0, 0)  # (packets, nacks) at the probe's start
        self._probe_sent = 0.0  # what the link carried, without loss, when the probe began
        self._probe_remb = 0.0  # the receiver's REMB when the probe began (0: none fresh)
        self._remb_fell = False  # a REMB during the probe said the queue grows
        self.quiet_until = -1e9  # a failed probe's losses are not the layers': not counted
        self.kept = 0.0  # what the link carried before a failed probe: no cut below it...
        self.kept_until = -1e9  # ...until then
        # told the probe's result ("passed" or "failed"): the participant's event and metric
        self.probed: Callable[[str], None] | None = None

    def nack_share(self) -> float:
        """Share of the video packets sent since the share was last judged that the subscriber
        NACKed; 0 until at least ``NACK_MIN_PACKETS`` were sent (three 10 frames/s legs send
        about 18 an update, so a share that waited for 20 in one update never counted)."""
        packets = sum(dt.packets for dt in self.legs)
        sent, nacked = packets - self._marks[0], self.nacks - self._marks[1]
        if sent < NACK_MIN_PACKETS:
            return 0.0  # keep counting into the next update
        self._marks = (packets, self.nacks)
        return min(1.0, nacked / sent)

    def settling(self, now: float) -> bool:
        """Within ``SETTLE_S`` of a cut or ``CUT_GAP_S`` of a failed probe: losses are not
        counted (the NACK share restarts after); the queue the cut layers or the padding filled
        drains."""
        if now - self.cut_at >= SETTLE_S and now >= self.quiet_until:
            return False
        self._marks = (sum(dt.packets for dt in self.legs), self.nacks)
        self._ticks.clear()
        return True

    def _tick(self, now: float) -> None:
        """Where ``react``'s windows may start: this update's counters."""
        packets = sum(dt.packets for dt in self.legs)
        ticks = self._ticks
        if ticks and packets < ticks[-1][1]:  # a leg left: its packets left the sum
            ticks.clear()
        ticks.append((now, packets, self.nacks))
        while now - ticks[0][0] > REACT_WINDOW_S:
            ticks.popleft()

    # -- probing a raise with padding ------------------------------------------------------
    def needs_probe(self, planned_bps: float) -> bool:
        """Whether a move up to ``planned_bps`` must first be carried as padding."""
        return planned_bps > self.proven

    def probing(self, now: float) -> bool:
        """A probe runs: padding, or waiting for the feedback about its last packets."""
        return now < self.probe_until

    def probe_rate(self, now: float) -> float:
        """Bits per second a running probe sends, padding included (0 when none runs)."""
        return self.probe_bps / PROBE_HEADROOM if self.probing(now) else 0.0

    def padding(self, now: float) -> bool:
        """A probe runs and still pads."""
        return now < self.probe_until - PROBE_FEEDBACK_S

    def start_probe(self, planned_bps: float, now: float) -> float:
        """Pad up to ``planned_bps`` / ``PROBE_HEADROOM`` for ``PROBE_S`` (``probe.Prober``
        sends it), judged ``PROBE_FEEDBACK_S`` after; returns that rate."""
        if not self.probing(now):
            self.probe_bps = planned_bps
            self.probe_until = now + PROBE_S + PROBE_FEEDBACK_S
            self._probe_marks = (sum(dt.packets for dt in self.legs), self.nacks)
            self._probe_sent = self.sent or 0.0
            fresh = self.remb is not None and now - self.remb_at < REMB_FRESH_S
            self._probe_remb = self.remb if fresh and self.remb is not None else 0.0
            self._remb_fell = False
        return self.probe_bps / PROBE_HEADROOM

    def _judge_probe(self, now: float, loss: float) -> bool:
        """During a probe: fail it on loss (True: it failed); pass it when it has run out."""
        packets = sum(dt.packets for dt in self.legs) - self._probe_marks[0]
        nacked = self.nacks - self._probe_marks[1]
        if (loss > LOSS_CUT or self._remb_fell
                or (nacked >= PROBE_MIN_NACKS and nacked > PROBE_LOSS * packets)):
            self.probe_until = -1e9
            # the layers did not move: back to what the link carried (the cut's estimate, the
            # last probe's rate, or what it was sent without loss before the probe: the cut's
            # estimate, under what the lowest layers came to cost, sent both cameras to a
            # transcoded rung a second after a failed probe), a hold before the next try
            carried = max(self.cut_to, self.proven, self._probe_sent)
            self.estimate = self.cut_to = min(self.estimate, carried)
            self.hold_until = now + HOLD_MIN_S
            # a receiver report covers about the last second: the loss the padding caused
            # still showed in the next one and cut the layers to a transcoded rung
            self.quiet_until = now + CUT_GAP_S
            self.kept, self.kept_until = self.estimate, now + PROBE_AFTER_S
            self.reason = "probe failed"
            self._told("failed")
            return True
        if now >= self.probe_until:
            self.probe_until = -1e9
            self.proven = max(self.proven, self.probe_bps / PROBE_HEADROOM)  # it carried that
            self.reason = "probe"
            self._told("passed")
        return False

    def _told(self, result: str) -> None:
        if self.probed is not None:
            self.probed(result)

    def on_remb(self, bps: float) -> None:
        self.remb = float(bps)
        self.remb_at = now = time.monotonic()
        if (self.probing(now) and bps < PROBE_REMB_DROP * self._probe_remb
                and bps < self.probe_bps / PROBE_HEADROOM):
            self._remb_fell = True
            if self.alert is not None:  # judged now: the padding stops before the queue loses
                self.alert()

    def update(self, sent_bps: float, loss: float, now: float | None = None,
               floor: float = FLOOR_BPS) -> float:
        """Fold in what was sent since the last update and the receivers' loss fraction;
        ``floor``: what the subscriber's lowest layers and audio cost."""
        now = time.monotonic() if now is None else now
        loss = 0.0 if self.settling(now) else max(loss, self.nack_share())
        self._tick(now)
        self.sent = sent_bps if self.sent is None else (
            self.sent + SENT_SMOOTHING * (sent_bps - self.sent))
        remb = self.remb if self.remb is not None and now - self.remb_at < REMB_FRESH_S else None
        self.congested = False
        if self.probe_until > -1e9:  # no cut, no growth: the padding is the excess
            self._judge_probe(now, loss)
            return self.estimate
        if loss > LOSS_CUT:  # packets are being dropped
            self._lossy(loss, now, floor)
        elif loss < 0.02 and (now >= self.hold_until
                              or (remb is not None and remb > 1.2 * self.estimate)):
            grown = min(max(self.estimate, sent_bps) * GROWTH, self.ceiling())
            if grown > self.estimate:
                self.estimate = grown
                self.reason = "probe"
        return self.estimate

    def ceiling(self) -> float:
        """How far growth may take the estimate: ``START_BPS``, or ``SENT_CEILING`` times what
        the subscriber is sent (GCC's bound, draft-ietf-rmcat-gcc-02 section 5.5: 1.5x the
        received rate). Unbounded, an unthrottled receiver's estimate grew 17 % a second for the
        whole call, to 131 Gbit/s in a 40 s test, and every layer event carried that number."""
        return max(START_BPS, SENT_CEILING * (self.sent or 0.0))

    def aftermath(self, now: float) -> bool:
        """Within ``PROBE_AFTER_S`` of a failed probe: its repairs and the keyframes its loss
        asked for still pass, so neither the loss nor the layers' rates then say the link
        narrowed (no cut under ``kept``, no new transcoded route: ``Participant._choose``)."""
        return now < self.kept_until

    def keeps_lowest(self, now: float) -> bool:
        """Within the hold of a cut that kept the lowest layers (it landed at or over what they
        and the audio cost then): their averages creeping over the estimate during it, as the
        keyframes the switch asked for pass and the encoders settle, is not a narrower link, so
        no leg is sent a new transcoded rung then (``Participant._choose``); loss that lasts
        cuts again, under them, and that routes. Without it, a throttled receiver cut to 189
        kbit/s on a 270 kbit/s link had a camera sent to a 90-line rung late in the hold and
        back at its end, with no new loss (tests/sfu/test_throttled.py, 2026-12-04)."""
        return now < self.cut_until and self.estimate >= self.cut_floor

    def narrow(self) -> bool:
        """A link that lost packets once (it was cut) and is still estimated under
        ``NARROW_BPS``: what the subscriber is sent is paced at all times (``pacer.py``). Paced
        only while it recovered, a throttled receiver's 270 kbit/s link (a 200 ms queue is
        7 KB) took the bursts of a loaded machine whole: 600 kbit/s for a quarter of a second
        when the node's loop or a publisher's encoder caught up, 30-90 % loss, and the cuts that
        loss made sent the lowest layers to a transcoded rung (tests/sfu/test_throttled.py)."""
        return self.cut_at > -1e9 and self.estimate < NARROW_BPS

    def holding(self, now: float) -> bool:
        """Within the hold after a cut and not grown since: no leg may go up. The estimate is
        fixed then, so a layer that seems to fit again only shows its rate wobbling (a full
        layer between keyframes), not a wider link; raised at the cut estimate, a camera went
        back to full and was cut again (test_throttled: a 1.15 s freeze)."""
        return now < self.hold_until and self.estimate <= self.cut_to

    def reacts(self, now: float) -> bool:
        """Whether a NACK is judged when it comes: during a probe (its padding stops at the
        first burst), or outside a hold, long enough after a cut."""
        return self.probe_until > -1e9 or (self.sent is not None and now >= self.hold_until
                                           and now - self.cut_at >= CUT_GAP_S
                                           and bool(self._ticks))

    def react(self, now: float, floor: float = FLOOR_BPS) -> bool:
        """A NACK just brought fresh numbers: outside a hold, judge the NACK share now rather
        than at the next update; True when it cut (the caller re-chooses the legs, which stop
        their layers at once: ``congested``)."""
        if not self.reacts(now):
            return False
        if self.probe_until > -1e9:  # loss in a probe fails the probe, it cuts nothing
            self._judge_probe(now, 0.0)
            return False
        packets = sum(dt.packets for dt in self.legs)
        for _, p, n in reversed(self._ticks):
            if packets - p >= NACK_MIN_PACKETS:
                loss = min(1.0, (self.nacks - n) / (packets - p))
                break
        else:
            return False
        if loss <= LOSS_CUT:
            return False
        self._lossy(loss, now, floor)
        return self.cut_at == now

    def _lossy(self, loss: float, now: float, floor: float) -> None:
        """Loss over ``LOSS_CUT``: cut (unless a cut is too recent); the link is congested."""
        if now - self.cut_at >= CUT_GAP_S and self.sent is not None:
            lowest = floor if self.estimate > floor else FLOOR_BPS
            if self.aftermath(now):  # a failed probe's aftermath, not a narrower link
                lowest = max(lowest, self.kept)
            self._cut(max(lowest, CUT_MARGIN * self.sent * (1 - loss)), now, f"loss {loss:.0%}")
            if self.cut_at == now:
                self.cut_floor = floor
        self.congested = True

    def _cut(self, to: float, now: float, reason: str) -> None:
        if to >= self.estimate:
            return
        since = now - self.hold_until  # time since the last hold ended: a probe began
        if 0 <= since < self.hold:  # the probe after a hold failed: wait longer next time
            self.hold = min(HOLD_MAX_S, self.hold * 2)
        elif since > 4 * self.hold:  # stable for a while: forgive
            self.hold = HOLD_MIN_S
        self.estimate = self.cut_to = to
        self.proven = 0.0  # every raise after a cut is probed first
        self.cut_at = now
        self.hold_until = self.cut_until = now + self.hold
        self.reason = reason

"""The downlink estimate's rules (media-node/bwe.py) on the numbers the node feeds it every
0.25 s and on each NACK (``react``); the throttled link end to end is
tests/sfu/test_throttled.py, its timing bench/layer_drop.py."""

from __future__ import annotations

import time

from parley.media.bwe import (
    CUT_GAP_S,
    CUT_MARGIN,
    FLOOR_BPS,
    HOLD_MIN_S,
    NARROW_BPS,
    PROBE_AFTER_S,
    PROBE_FEEDBACK_S,
    PROBE_HEADROOM,
    PROBE_S,
    SENT_CEILING,
    SETTLE_S,
    START_BPS,
    Downlink,
)


class Leg:
    """What ``Downlink`` reads of a video leg: its forwarded-packet counter."""

    def __init__(self) -> None:
        self.packets = 0


def test_nacks_count_over_all_legs_of_a_subscriber() -> None:
    """Three 10 frames/s legs send about 6 packets an update each, too few alone; together
    their 30 % NACKed is loss, and the cut lands a margin under what got through."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg(), Leg()]
    down.legs.update(legs)
    down.update(700_000, 0.0, now=0.0)
    for leg in legs:
        leg.packets += 7
    down.nacks += 7  # a third of the 21 packets
    assert round(down.update(700_000, 0.0, now=0.25)) == round(CUT_MARGIN * 700_000 * (1 - 7 / 21))
    assert down.congested and down.reason == "loss 33%"


def test_a_nack_share_waits_for_enough_packets_across_updates() -> None:
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    down.legs.update(legs)
    down.update(500_000, 0.0, now=0.0)
    for n in (1, 2):  # 12 packets an update: judged on the second, over all 24
        for leg in legs:
            leg.packets += 6
        down.nacks += 4
        down.update(500_000, 0.0, now=0.25 * n)
    assert down.congested and down.reason == "loss 33%"


def test_a_second_cut_waits_for_feedback_about_the_first() -> None:
    down = Downlink(start_bps=2_000_000)
    down.update(1_000_000, 0.0, now=0.0)
    first = down.update(1_000_000, 0.4, now=0.25)
    assert first < 1_000_000
    # reports still counting the losses from before the cut do not cut again...
    assert down.update(400_000, 0.4, now=0.25 + CUT_GAP_S / 2) == first
    assert down.congested
    # ...loss that lasts past the gap does
    assert down.update(400_000, 0.4, now=0.25 + CUT_GAP_S + 0.1) < first


def test_after_a_cut_it_grows_once_the_hold_passed_and_a_failed_probe_doubles_it() -> None:
    """On a good link the estimate grows all the time: the link's first drop is not a failed
    probe (the hold stays 8 s); loss soon after the hold ended is (the next hold is 16 s)."""
    down = Downlink(start_bps=2_000_000)
    down.update(1_000_000, 0.0, now=0.0)  # grows
    cut = down.update(1_000_000, 0.3, now=0.25)
    assert down.hold == HOLD_MIN_S
    assert down.update(cut, 0.0, now=1.0) == cut
    end = 0.25 + HOLD_MIN_S
    assert down.update(cut, 0.0, now=end + 0.1) > cut
    assert down.reason == "probe"
    down.update(cut, 0.3, now=end + 1.0)
    assert down.hold == 2 * HOLD_MIN_S


def test_losses_right_after_a_cut_do_not_cut_again() -> None:
    """The second after a cut holds the drained queue's and the new keyframes' losses: a NACK
    share counted then cut a throttled receiver below its low layers (the old flaky test)."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    down.legs.update(legs)
    down.update(460_000, 0.0, now=0.0)
    cut = down.update(460_000, 0.4, now=0.25)
    for n in range(1, 12):  # 55 % NACKed until the settle passes
        for leg in legs:
            leg.packets += 10
        down.nacks += 11 if 0.25 * n < SETTLE_S else 0
        assert down.update(220_000, 0.0, now=0.25 + 0.25 * n) == cut
    assert not down.congested


def test_a_cut_stops_at_the_lowest_layers_until_loss_lasts_there() -> None:
    """One burst of loss never cuts below what the lowest layers and audio cost (the
    transcoder's rungs are for loss that lasts on them)."""
    down = Downlink(start_bps=2_000_000)
    down.update(400_000, 0.0, now=0.0)
    assert down.update(400_000, 0.7, now=0.25, floor=220_000) == 220_000
    later = 0.25 + CUT_GAP_S
    assert down.update(220_000, 0.5, now=later, floor=220_000) < 220_000


def test_through_the_hold_of_a_cut_that_kept_the_lowest_layers_no_rung_is_new() -> None:
    """A cut that landed at or over what the lowest layers cost keeps them through its hold
    (no new transcoded rung while their averages creep up); loss that lasts cuts under them,
    and then a rung may come."""
    down = Downlink(start_bps=2_000_000)
    down.update(400_000, 0.0, now=0.0)
    down.update(400_000, 0.5, now=0.25, floor=180_000)
    assert down.estimate >= 180_000
    assert down.keeps_lowest(0.25) and down.keeps_lowest(0.25 + HOLD_MIN_S - 0.1)
    assert not down.keeps_lowest(0.25 + HOLD_MIN_S)
    later = 0.25 + CUT_GAP_S
    down.update(down.estimate, 0.5, now=later, floor=down.estimate + 20_000)
    assert down.estimate < down.cut_floor
    assert not down.keeps_lowest(later)


def test_a_good_links_first_loss_is_judged_when_the_nack_comes() -> None:
    """``react``: outside a hold, a share over 10 % of the last updates' 20+ packets cuts
    between two updates, with the update's margin."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    down.legs.update(legs)
    down.update(460_000, 0.0, now=0.0)
    for leg in legs:
        leg.packets += 10
    down.nacks += 1
    assert not down.react(0.1)  # 1 of 20: 5 %
    assert down.estimate > 460_000
    down.nacks += 4
    assert down.react(0.12)  # 5 of 20
    assert round(down.estimate) == round(CUT_MARGIN * 460_000 * (1 - 0.25))
    assert down.congested and down.reason == "loss 25%"


def test_inside_a_hold_a_nack_waits_for_the_update() -> None:
    """After a cut, NACKs do not cut on arrival while the hold lasts: judged at each NACK a
    window reads high, and on a link the low layers nearly fill that made a second cut under
    them (the reverted ab3bc42); the update's disjoint windows judge them instead."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    down.legs.update(legs)
    down.update(460_000, 0.0, now=0.0)
    cut = down.update(460_000, 0.5, now=0.25)
    t = 0.25 + CUT_GAP_S + 0.25  # past the gap and the settle, inside the hold
    assert t < 0.25 + HOLD_MIN_S
    for leg in legs:
        leg.packets += 10
    down.update(cut, 0.0, now=t)  # a clean update: where the next windows start
    for leg in legs:
        leg.packets += 10
    down.nacks += 10  # half of the 20 packets since
    assert not down.react(t + 0.1)
    assert down.estimate == cut
    assert down.update(cut, 0.0, now=t + 0.25) < cut  # the update judges them


def test_legs_hold_their_layers_until_the_estimate_grows_after_a_cut() -> None:
    down = Downlink(start_bps=2_000_000)
    assert not down.holding(0.0)  # no cut yet: layers go up as the estimate allows
    down.update(1_000_000, 0.0, now=0.0)
    cut = down.update(1_000_000, 0.3, now=0.25)
    assert down.holding(0.5) and down.holding(0.25 + HOLD_MIN_S - 0.1)
    assert not down.holding(0.25 + HOLD_MIN_S)
    # a receiver's REMB well over the estimate grows it within the hold: the hold is over
    down.on_remb(2 * cut)
    assert down.update(cut, 0.0, now=2.0) > cut
    assert not down.holding(2.0)


def cut_then_hold(down: Downlink, legs: list[Leg]) -> tuple[float, float]:
    """A good link's first drop, then loss-free updates through the hold: (the cut estimate,
    the time the hold ended)."""
    down.legs.update(legs)
    down.update(1_000_000, 0.0, now=0.0)
    cut = down.update(1_000_000, 0.3, now=0.25)
    t = 0.25
    while t < 0.25 + HOLD_MIN_S:
        t += 0.25
        for leg in legs:
            leg.packets += 10
        down.update(cut, 0.0, now=t)
    return cut, t


def test_a_link_never_cut_is_not_probed_and_after_a_cut_every_raise_is() -> None:
    """Even one to a total under the cut's estimate: the layers' averages under-price what a
    raise sends (its keyframe first)."""
    down = Downlink(start_bps=2_000_000)
    assert not down.needs_probe(1_900_000)  # a good link's layers go up as the estimate allows
    cut, _ = cut_then_hold(down, [Leg(), Leg()])
    assert down.needs_probe(cut * 1.5)
    assert down.needs_probe(cut * 0.9)


def test_a_probe_that_carries_its_rate_without_loss_passes_and_the_move_is_made() -> None:
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    cut, t = cut_then_hold(down, legs)
    results: list[str] = []
    down.probed = results.append
    want = cut * 1.5
    down.start_probe(want, t)
    assert down.probing(t)
    estimate = down.estimate
    while t < down.probe_until:
        t += 0.25
        for leg in legs:
            leg.packets += 15
        down.update(cut, 0.0, now=t)
        assert t >= down.probe_until or down.estimate == estimate  # no growth during it
    assert results == ["passed"] and not down.probing(t)
    assert not down.needs_probe(want)


def test_loss_in_a_probe_fails_it_at_the_nack_without_a_cut_or_a_longer_hold() -> None:
    """The padding was the excess: the layers did not move, so no cut and no layer stops
    (``congested``), the estimate goes back to what the link carried, the hold is the
    shortest one, and the losses the padding caused are not counted for a while."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    cut, t = cut_then_hold(down, legs)
    carried = down.estimate
    results: list[str] = []
    down.probed = results.append
    down.start_probe(cut * 1.5, t)
    for leg in legs:
        leg.packets += 20
    down.nacks += 1
    assert not down.react(t + 0.1)  # one NACK may be reordering
    assert results == []
    down.nacks += 2
    assert not down.react(t + 0.2)  # 3 of 40: over 5 %, failed at once
    assert results == ["failed"] and not down.probing(t + 0.2)
    assert down.estimate <= carried and not down.congested
    assert down.hold == HOLD_MIN_S and down.holding(t + 0.2 + HOLD_MIN_S - 0.1)
    assert down.reason == "probe failed"
    for leg in legs:  # the queue the padding filled drains: its NACKs are not judged
        leg.packets += 20
    down.nacks += 10
    before = down.estimate
    assert down.update(cut, 0.5, now=t + 0.5) == before and not down.congested


def test_loss_that_lasts_after_a_failed_probe_is_the_links_and_cuts() -> None:
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    cut, t = cut_then_hold(down, legs)
    down.start_probe(cut * 1.5, t)
    down.update(cut, 0.4, now=t + 0.25)  # fails the probe, cuts nothing
    assert not down.probing(t + 0.25) and round(down.estimate, -3) == round(cut, -3)
    assert not down.congested
    after = t + 0.25 + PROBE_AFTER_S
    assert down.update(cut, 0.4, now=after) < cut and down.congested


# The throttled receiver of tests/sfu/test_throttled.py: two cameras' low layers (about 70
# kbit/s each at 10 frames/s, 7 packets a second) and two audio tracks (about 40) on a 270 kbit/s
# link; one camera's full layer (about 190) does not fit.
FLOOR = 2 * 70_000 + 2 * 40_000
MOVE = 190_000 + 70_000 + 2 * 40_000  # one camera back on its full layer


def probed_with_loss(down: Downlink, legs: list[Leg], t: float, packets: int,
                     nacks: int) -> list[str]:
    """A probe of MOVE started at ``t`` while each leg sends ``packets`` and ``nacks`` of them
    come back NACKed; the probe's results (judged at the caller's react)."""
    results: list[str] = []
    down.probed = results.append
    down.start_probe(MOVE, t)
    for leg in legs:
        leg.packets += packets
    down.nacks += nacks
    return results


def throttled_then_held(down: Downlink, legs: list[Leg]) -> float:
    """The full layers met the throttle: the cut lands on the lowest layers' cost (its margin
    under what got through was below it), then clean updates at that rate through the hold, and
    the estimate grows past it. Returns the time."""
    down.legs.update(legs)
    down.update(460_000, 0.0, now=0.0)
    assert down.update(460_000, 0.5, now=0.25, floor=FLOOR) == FLOOR
    t = 0.25
    while not down.estimate > FLOOR:
        t += 0.25
        for leg in legs:
            leg.packets += 2
        down.update(FLOOR, 0.0, now=t, floor=FLOOR)
    return t


def test_a_failed_probes_aftermath_never_cuts_below_what_the_link_carried_before_it() -> None:
    """The CI rehearsal's cascade, packet by packet: a probe padding to 1.43x the move fails at
    the first NACK burst, the padding's repairs and the keyframes its loss asked for go on
    losing past the 2 s unjudged, and a receiver report still says 30 %; the estimate stays on
    what the link carried before the probe (the lowest layers' cost) instead of a cut under
    them to 76 kbit/s (transcoded rungs, a 3.3 s freeze). Loss that outlasts the aftermath is the
    link's: it cuts under the low layers as before."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    t = throttled_then_held(down, legs)
    results: list[str] = []
    down.probed = results.append
    pad = down.start_probe(MOVE, t)
    assert round(pad) == round(MOVE / 0.7)
    for step in range(1, 4):  # 3 packets per leg every 0.1 s; the queue fills
        for leg in legs:
            leg.packets += 3
        down.nacks += 2 if step == 3 else 0  # the first burst of NACKs comes back
        down.react(t + 0.1 * step)
    failed = t + 0.3
    assert results == ["failed"] and not down.padding(failed)  # the padding stops at once
    carried = down.estimate  # what it was sent without loss before the probe: the floor
    assert round(carried, -3) == FLOOR and not down.congested
    # the aftermath: repairs on the full queue, keyframes asked for, NACKed again
    now = failed
    while now < failed + PROBE_AFTER_S - 0.25:
        now += 0.25
        for leg in legs:
            leg.packets += 2
        down.nacks += 1  # 25 % NACKed, and a receiver report of 30 %
        down.react(now)
        assert down.update(FLOOR, 0.3, now=now, floor=FLOOR) == carried, now
        assert down.aftermath(now)  # no new transcoded rung either (``Participant._choose``)
    assert results == ["failed"]
    assert not down.aftermath(failed + PROBE_AFTER_S + 0.1)
    # the loss lasts: the link narrowed, and the lowest layers do not fit it either
    for leg in legs:
        leg.packets += 10
    down.nacks += 5
    assert down.update(FLOOR, 0.3, now=failed + PROBE_AFTER_S + 0.1, floor=FLOOR) < carried
    assert down.congested and down.reason == "loss 30%"


def test_a_probe_inside_a_hold_stops_at_the_first_nack_burst() -> None:
    """A REMB well over the estimate ends a hold early and a probe may start inside it: its
    NACKs are judged when they come there too, so the padding stops at the first burst rather
    than at the next update."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    down.legs.update(legs)
    down.update(460_000, 0.0, now=0.0)
    cut = down.update(460_000, 0.5, now=0.25, floor=FLOOR)
    down.on_remb(2 * cut)
    t = 0.25 + CUT_GAP_S + 0.25
    assert down.update(cut, 0.0, now=t, floor=FLOOR) > cut  # the hold is over at once
    assert t < down.hold_until
    grown = down.estimate
    results = probed_with_loss(down, legs, t, packets=3, nacks=2)
    assert down.reacts(t + 0.1)
    assert not down.react(t + 0.1, floor=FLOOR)  # it failed the probe, it cut nothing
    assert results == ["failed"] and not down.padding(t + 0.1)
    assert cut <= down.estimate <= grown and down.estimate > FLOOR_BPS


def test_a_probe_is_judged_until_the_feedback_about_its_last_padding() -> None:
    """The NACKs of the padding's last packets come a queue's delay later: loss then fails it,
    after it has stopped padding."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    t = throttled_then_held(down, legs)
    results: list[str] = []
    down.probed = results.append
    down.start_probe(MOVE, t)
    late = t + PROBE_S + PROBE_FEEDBACK_S / 2
    assert not down.padding(late) and down.probing(late)
    for leg in legs:
        leg.packets += 30
    down.nacks += 4
    down.react(late)
    assert results == ["failed"] and round(down.estimate, -3) == FLOOR


def test_a_failed_probe_keeps_what_the_layers_were_sent_without_loss_before_it() -> None:
    """The cut landed on the lowest layers' cost then (185 kbit/s); through the hold they came to
    send 199 without loss (their rates wobble with keyframes). A failed probe goes back to that,
    not to the cut's estimate: under what the lowest layers cost, the transcoder's rungs took
    both cameras a second later (test_throttled, loaded)."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    down.legs.update(legs)
    down.update(400_000, 0.0, now=0.0)
    assert down.update(400_000, 0.5, now=0.25, floor=185_000) == 185_000
    t = 0.25
    while t < 0.25 + HOLD_MIN_S + 0.5:  # the hold, and the estimate grows past it
        t += 0.25
        for leg in legs:
            leg.packets += 2
        down.update(199_000, 0.0, now=t, floor=193_000)
    results = probed_with_loss(down, legs, t, packets=10, nacks=3)
    down.react(t + 0.3)
    assert results == ["failed"]
    assert round(down.estimate, -3) == 199_000


def test_a_probe_fails_when_the_receivers_remb_falls_before_any_loss() -> None:
    """The browser's delay-based estimate sees the queue the padding fills grow and sends a
    lower REMB at once (libwebrtc): the probe fails then, before the queue overflows and loses
    real packets (on the throttled link 0.6-0.8 s into the probe, no NACK yet); the NACK-free
    alert stops the padding. A REMB that holds or rises does not fail it."""
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    throttled_then_held(down, legs)
    alerts: list[float] = []
    down.alert = lambda: alerts.append(down.estimate)
    results: list[str] = []
    down.probed = results.append
    down.on_remb(120_000)  # the receiver's estimate before the probe (a trend, not the link)
    down.start_probe(MOVE, time.monotonic())
    down.on_remb(118_000)  # within its wobble
    assert alerts == [] and down.probing(time.monotonic())
    down.on_remb(75_000)  # the queue grows
    assert len(alerts) == 1
    assert down.react(time.monotonic(), floor=FLOOR) is False  # the alert's judging: no cut
    assert results == ["failed"] and not down.padding(time.monotonic())
    assert round(down.estimate, -3) == FLOOR


def test_a_probe_on_a_wide_link_passes_while_the_remb_grows() -> None:
    down = Downlink(start_bps=2_000_000)
    legs = [Leg(), Leg()]
    throttled_then_held(down, legs)
    results: list[str] = []
    down.probed = results.append
    down.on_remb(90_000)
    start = time.monotonic()
    down.start_probe(MOVE, start)
    down.on_remb(140_000)
    for leg in legs:
        leg.packets += 40
    down.update(MOVE / PROBE_HEADROOM, 0.0, now=start + PROBE_S + PROBE_FEEDBACK_S)
    assert results == ["passed"] and not down.needs_probe(MOVE)


def test_a_link_cut_once_is_paced_while_it_stays_narrow() -> None:
    """A link never seen losing is not paced (every packet one sendto); once cut it is, until
    its estimate grows past ``NARROW_BPS``; a running probe's rate is its padded rate."""
    down = Downlink(start_bps=2_000_000)
    down.update(400_000, 0.0, now=0.0)
    assert not down.narrow()
    down.update(400_000, 0.4, now=0.25)
    assert down.narrow() and down.estimate < NARROW_BPS
    assert down.probe_rate(1.0) == 0.0
    down.start_probe(300_000, now=10.0)
    assert down.probe_rate(10.5) == 300_000 / PROBE_HEADROOM
    down.estimate = NARROW_BPS
    assert not down.narrow()


def test_growth_stops_at_a_bound_over_what_is_sent() -> None:
    """A clean link's estimate grows to ``START_BPS`` or 1.5x what it is sent, not for ever (an
    unthrottled receiver's reached 131 Gbit/s in a 40 s test)."""
    down = Downlink(start_bps=300_000)
    for step in range(400):  # 100 s of clean updates at 300 kbit/s
        down.update(300_000, 0.0, now=step * 0.25)
    assert down.estimate == START_BPS
    for step in range(400, 800):  # a receiver of many HD cameras: 6 Mbit/s
        down.update(6_000_000, 0.0, now=step * 0.25)
    assert round(down.estimate) == round(SENT_CEILING * 6_000_000)

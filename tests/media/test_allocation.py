"""Per-subscriber layer choice (media-node/allocation.py) on the figures the node keeps per
layer; the throttled link end to end is tests/sfu/test_throttled.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from parley.media.allocation import allocate


class Leg:
    """What ``allocate`` reads of a video leg (a DownTrack) on the top of two layers (h, f)."""

    def __init__(self, track: str, known: tuple[float, float],
                 bitrate: tuple[float, float]) -> None:
        layers = [SimpleNamespace(index=i, known=known[i], bitrate=bitrate[i], height=h)
                  for i, h in enumerate((180, 360))]
        self.kind, self.sender = "video", object()
        self.up = SimpleNamespace(layers=layers, track_id=track)
        self.layer, self.target = layers[1], None  # flowing on the full layer


def leg(track: str, known: tuple[float, float], bitrate: tuple[float, float]) -> Any:
    return Leg(track, known, bitrate)


def test_right_after_a_cut_a_layer_costs_what_it_sends_now() -> None:
    """A full layer whose encoder is still ramping (averaged 150 kbit/s, sending 190 now) fits
    a 240 kbit/s cut on its average with the other leg low, so it stayed on; congested, it is
    priced at what it sends and both legs go to their low layers at once."""
    legs = [leg("a", (70_000, 150_000), (70_000, 190_000)),
            leg("b", (70_000, 150_000), (70_000, 190_000))]
    assert sorted(allocate(legs, 240_000, {}).values()) == [0, 1]
    assert sorted(allocate(legs, 240_000, {}, congested=True).values()) == [0, 0]
    # on a link with room both stay full either way
    assert sorted(allocate(legs, 600_000, {}, congested=True).values()) == [1, 1]


def test_after_a_cut_a_leg_is_not_raised_back_while_the_estimate_holds() -> None:
    """The cut aimed both legs low while their full layers still flowed to them (they stop on
    the low layers' keyframes). Later ticks at the same estimate price the full layer on its
    average again: it must not count as the layer the leg keeps (no hysteresis credit) and,
    within the hold, not go up at all (a camera went back to full at the cut estimate and was
    cut again: a 1.15 s freeze in test_throttled)."""
    legs = [leg("a", (70_000, 150_000), (70_000, 190_000)),
            leg("b", (70_000, 150_000), (70_000, 190_000))]
    for dt in legs:
        dt.target = dt.up.layers[0]
    # 70 + 150 = 220 fits 240 but not 0.85 x 240 = 204: the leg left full, raising it is a raise
    assert sorted(allocate(legs, 240_000, {}).values()) == [0, 0]
    # at 270 it fits the raise headroom; within the hold it still stays low
    assert sorted(allocate(legs, 270_000, {}).values()) == [0, 1]
    assert sorted(allocate(legs, 270_000, {}, hold=True).values()) == [0, 0]
    # the hold keeps what a leg has: one already on its full layer stays there
    legs[1].target = None
    assert sorted(allocate(legs, 270_000, {}, hold=True).values()) == [0, 1]

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
        self.current = layers[1]


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

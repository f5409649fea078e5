"""Per-subscriber layer choice: which layer of each simulcast track fits the subscriber's
downlink and the tile it renders.

Every video track starts at its lowest layer (a screen share has one layer only, so it is always
in); the remaining budget (downlink estimate minus the audio it receives) then raises tracks one
layer at a time, larger tiles first, round after round, while the next step fits. A track is
never raised past the smallest layer at least as tall as its tile (a 180-pixel tile never gets
the 720p layer) nor past its publisher's top layer. The result is an index per leg;
``DownTrack.select`` makes the move on the new layer's next keyframe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .publisher import Layer
    from .subscriber import DownTrack

# Assumed bitrates of layers never seen sending (lowest first), from Chromium's simulcast table.
DEFAULT_BPS = (150_000.0, 500_000.0, 1_500_000.0)
RAISE_HEADROOM = 0.85


def rate(layer: Layer) -> float:
    if layer.known:
        return layer.known
    return DEFAULT_BPS[min(layer.index, len(DEFAULT_BPS) - 1)]


def view_cap(dt: DownTrack, height: int | None) -> int:
    """Highest layer index worth sending to a tile ``height`` pixels tall."""
    layers = dt.up.layers
    if not height:
        return len(layers) - 1
    for layer in layers:
        if layer.height > 0 and layer.height >= height:
            return layer.index
    return len(layers) - 1


def aimed(dt: DownTrack) -> int:
    """Index of the layer ``dt`` is moving to, or is on (a transcoded rung counts as the
    lowest layer): after a cut the layer it leaves is no longer the one it keeps."""
    layer = dt.target or dt.layer
    return max(layer.index, 0) if layer is not None else 0


def allocate(legs: Iterable[DownTrack], estimate: float, views: dict[str, int],
             congested: bool = False, hold: bool = False) -> dict[DownTrack, int]:
    """Layer index per video leg of one subscriber; ``views``: rendered tile height per track id
    (from the client). A screen share has one layer, so it is always in (first in line).
    ``congested`` (right after a cut and through its hold): a layer costs the more of its
    average and its last 0.25 s, since the layers just sent were too much for the link; a full
    layer whose encoder was still ramping up averaged low, stayed on through the cut and took a
    second cut 2 s later to leave (tests/sfu/test_throttled.py, past 5 s). ``hold``
    (``Downlink.holding``): no leg goes above the layer it is aimed at."""
    price = (lambda layer: max(rate(layer), layer.bitrate)) if congested else rate
    video: list[DownTrack] = []
    budget = estimate
    for dt in legs:
        if dt.kind == "audio":
            budget -= dt.up.layers[0].known
        elif dt.sender is not None:
            video.append(dt)
    choice = {dt: 0 for dt in video}
    spent = sum(price(dt.up.layers[0]) for dt in video)
    caps = {dt: view_cap(dt, views.get(dt.up.track_id)) for dt in video}
    if hold:
        caps = {dt: min(cap, aimed(dt)) for dt, cap in caps.items()}
    order = sorted(video, key=lambda dt: -(views.get(dt.up.track_id) or 10_000))
    raised = True
    while raised:
        raised = False
        for dt in order:
            i = choice[dt]
            if i >= caps[dt]:
                continue
            layers = dt.up.layers
            extra = price(layers[i + 1]) - price(layers[i])
            # hysteresis: keeping the layer a leg has needs the budget, going past it 15 % more,
            # so layer rates that wobble with every keyframe do not flip a leg back and forth
            if spent + extra <= (budget if i + 1 <= aimed(dt) else RAISE_HEADROOM * budget):
                choice[dt] = i + 1
                spent += extra
                raised = True
    return choice


def planned(legs: Iterable[DownTrack], choice: dict[DownTrack, int]) -> float:
    """Bits per second the subscriber is sent with ``choice``: its audio and each video leg's
    chosen layer (what a probe pads up to before the move is made: ``bwe.Downlink``)."""
    total = 0.0
    for dt in legs:
        if dt.kind == "audio":
            total += dt.up.layers[0].known
        elif dt in choice:
            total += rate(dt.up.layers[min(choice[dt], len(dt.up.layers) - 1)])
    return total

"""Per-subscriber layer choice (media-node/allocation.py) on the figures the node keeps per
layer; the throttled link end to end is tests/sfu/test_throttled.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from parley.media.allocation import allocate
from parley.media.transcoding import MEETING_LADDER, RungLayer, plan


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


def test_a_leg_off_its_rung_keeps_its_layer_while_the_total_fits_the_budget() -> None:
    """Two cameras' lowest layers (180 lines, 95 kbit/s each) and 20 kbit/s of audio on a
    187 kbit/s estimate: one leg still on a rung, the other just back on its layer. The rung leg
    stays (90p, 50 kbit/s), which leaves 165: within the budget, so the layer leg keeps its
    layer; the rung leg's 15 % headroom (159) is not a reason to send it back too (it was, at
    the same estimate, and came off again, over and over: test_throttled, 2026-12-03)."""
    class Cam:  # what ``plan`` reads of a video leg (hashable, as a DownTrack)
        def __init__(self, track: str) -> None:
            layer = SimpleNamespace(index=0, known=95_000.0, bitrate=95_000.0, height=180)
            codec = SimpleNamespace(mimeType="video/VP8")
            self.kind, self.current = "video", layer
            self.up = SimpleNamespace(layers=[layer], track_id=track, kind="video", codec=codec)

    def cam(track: str) -> Any:
        return Cam(track)

    on_rung, back = cam("a"), cam("b")
    on_rung.current = RungLayer.__new__(RungLayer)  # what that leg gets now: a rung
    audio = SimpleNamespace(kind="audio", up=SimpleNamespace(
        layers=[SimpleNamespace(known=20_000.0)]))
    ninety = next(r for r in MEETING_LADDER if r.name == "90p")
    assert plan({on_rung: 0, back: 0}, [audio, on_rung, back], 187_000.0, {}) == {
        on_rung: ninety}
    # over the budget itself the layer leg goes too; with the headroom both leave their rungs
    assert plan({on_rung: 0, back: 0}, [audio, on_rung, back], 150_000.0, {}) == {
        on_rung: ninety, back: ninety}
    assert plan({on_rung: 0, back: 0}, [audio, on_rung, back], 250_000.0, {}) == {}


def test_a_leg_between_two_rungs_falls_back_when_its_transcoder_is_lost() -> None:
    """A congested move from one rung to another leaves the leg "on" the first until the
    second's keyframe; the first is no longer an output, so a lost transcoder marks only the
    second dead. The leg still falls back to the lowest layer, once, with ``transcoder_lost``
    (it waited for that verdict forever: found in review, 2026-12-05)."""
    from parley.media.participant import Participant

    def rung(dead: bool) -> RungLayer:
        out = RungLayer.__new__(RungLayer)
        out.dead = dead
        return out

    lowest = SimpleNamespace(index=0, rid="q", height=180)
    aimed: list[Any] = []

    class Between:
        up = SimpleNamespace(layers=[lowest], track_id="cam", owner="pub")
        layer, target = rung(dead=False), rung(dead=True)

        def aim(self, want: Any) -> bool:
            aimed.append(want)
            self.target = want
            return True

    events: list[dict[str, Any]] = []
    me = SimpleNamespace(downtracks={"cam": Between()}, needs={"cam": "180p"},
                         decodes=lambda up: True, push=events.append)
    Participant._fall_back(me)  # type: ignore[arg-type]
    Participant._fall_back(me)  # type: ignore[arg-type]  # the next tick: it has moved
    assert aimed == [lowest] and me.needs == {}
    assert [(e["reason"], e["transcoded"], e["index"]) for e in events] == [
        ("transcoder_lost", False, 0)]

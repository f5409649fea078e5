"""The edge's keyframe cache: it holds the packets from the first packet of the last keyframe on
(a keyframe whose SPS comes after another packet of its frame included), hands them to a new
viewer's leg with the frames one timestamp tick apart ending at the newest frame's own timestamp
(so live packets continue that frame), and gives up on a GOP longer than its limit."""

from __future__ import annotations

from typing import Any

from parley.media.broadcast import edge_fanout
from parley.media.broadcast.edge_fanout import GopCache

SEI, IDR, SPS_STAP, DELTA, FU_MIDDLE = b"\x06\x05", b"\x65\x88", b"\x18\x00\x02\x67\x42", \
    b"\x41\x9a", b"\x7c\x05\x00"


class Leg:
    """Records what a DownTrack would be asked to forward."""

    def __init__(self) -> None:
        self.got: list[tuple[int, int, int, bytes, bool]] = []

    def forward(self, layer: Any, seq: int, ts: int, marker: int, payload: bytes,
                key: bool, ast: bytes = b"") -> None:
        self.got.append((seq, ts, marker, payload, key))


def _push(cache: GopCache, packets: list[tuple[int, int, int, bytes]]) -> None:
    for seq, ts, marker, payload in packets:
        cache.forward(None, seq, ts, marker, payload, False)  # type: ignore[arg-type]


def test_a_new_viewer_gets_the_gop_from_its_keyframe_one_tick_apart() -> None:
    cache = GopCache()
    _push(cache, [(10, 1000, 1, DELTA)])  # before any keyframe: nothing to start on
    assert not cache.valid
    gop = [(11, 4000, 0, SEI), (12, 4000, 0, SPS_STAP), (13, 4000, 0, IDR),
           (14, 4000, 1, FU_MIDDLE), (15, 7000, 1, DELTA), (16, 10000, 0, DELTA)]
    _push(cache, [(9, 1000, 1, DELTA), *gop])
    assert cache.valid and [p[0] for p in cache.packets] == [11, 12, 13, 14, 15, 16]
    leg = Leg()
    cache.replay(None, leg)  # type: ignore[arg-type]
    assert [(seq, ts, key) for seq, ts, _, _, key in leg.got] == [
        (11, 9998, True), (12, 9998, False), (13, 9998, False), (14, 9998, False),
        (15, 9999, False), (16, 10000, False)]
    # the next keyframe starts a new GOP; the one before is gone
    _push(cache, [(17, 10000, 1, DELTA), (18, 13000, 1, IDR), (19, 16000, 1, DELTA)])
    assert [p[0] for p in cache.packets] == [18, 19]


def test_a_gop_longer_than_the_limit_is_not_cached(monkeypatch: Any) -> None:
    monkeypatch.setattr(edge_fanout, "GOP_LIMIT", 3)
    cache = GopCache()
    _push(cache, [(1, 0, 1, IDR), (2, 1, 1, DELTA), (3, 2, 1, DELTA)])
    assert cache.valid and len(cache.packets) == 3
    _push(cache, [(4, 3, 1, DELTA)])
    assert not cache.valid
    _push(cache, [(5, 4, 1, DELTA), (6, 5, 1, IDR)])
    assert cache.valid and [p[0] for p in cache.packets] == [6]

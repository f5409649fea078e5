"""A rung that falls behind drops pictures instead of queueing them, and never drops a GOP
boundary (the IDR every rung and every transcoder process makes on the same source frame)."""

from __future__ import annotations

import threading

import pytest

from parley.media.broadcast.ladder import Rung, parse_presets, preset_for
from parley.media.broadcast.transcoder import Picture, RungQueue


def _picture(n: int, key: bool = False) -> Picture:
    return Picture(None, n * 3000, key, n * 3000, n / 30)  # type: ignore[arg-type]


def test_a_rung_behind_keeps_the_newest_pictures_and_every_boundary() -> None:
    q = RungQueue(limit_s=0.25, depth=8)
    # 30 fps, the encoder thread busy: pictures wait; the 4th starts a GOP
    dropped = [q.put(_picture(n, key=n == 4), now=n / 30) for n in range(12)]
    # up to 0.25 s of waiting is a hiccup, not a backlog: nothing dropped before picture 8
    assert dropped[:8] == [0] * 8
    # from then on the oldest non-boundary pictures go, the boundary (4) stays
    assert q.dropped == sum(dropped) > 0
    waiting = [(p.pts // 3000, p.key) for p in q.waiting]
    assert (4, True) in waiting and waiting[-1] == (11, False)
    assert all(n >= 4 for n, _ in waiting if n != 4)
    assert q.take() == _picture(4, key=True)


def test_depth_caps_the_queue_and_boundaries_wait_past_it() -> None:
    q = RungQueue(limit_s=10.0, depth=1)
    assert q.put(_picture(0, key=True), now=0.0) == 0
    assert q.put(_picture(1), now=0.0) == 1  # only a boundary may wait beyond the depth
    assert q.put(_picture(2, key=True), now=0.0) == 0
    assert [p.pts // 3000 for p in q.waiting] == [0, 2]


def test_close_wakes_the_encoder_thread() -> None:
    q = RungQueue()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.take()))
    t.start()
    q.close()
    t.join(5)
    assert got == [None] and not t.is_alive()
    assert q.put(_picture(1)) == 0 and not q.waiting and q.take() is None


def test_presets_per_rung() -> None:
    assert preset_for(Rung("720p", 720, 3000)) == "superfast"
    assert preset_for(Rung("360p", 360, 800)) == "veryfast"
    assert parse_presets("") is None
    assert parse_presets("ultrafast") == "ultrafast"
    assert parse_presets("720p:superfast,360p:veryfast") == {"720p": "superfast",
                                                             "360p": "veryfast"}
    with pytest.raises(ValueError, match="not an x264 preset"):
        parse_presets("warp")
    with pytest.raises(ValueError, match="360p"):
        parse_presets("720p:fast,360p:quick")

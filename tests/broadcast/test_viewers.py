"""The edge's viewer count on its own (media-node/broadcast/viewers.py): who is one HLS client,
what a fetch that counts is, and the window after which a client that stopped is forgotten.
End to end with a real edge and the operator: tests/operator/test_edge_viewers.py."""

from __future__ import annotations

import time

from starlette.requests import Request

from parley.media.broadcast.viewers import EdgeViewers, HlsViewers, client_id, is_media


def request(host: str, ua: str = "", session: str | None = None) -> Request:
    headers = [(b"user-agent", ua.encode())]
    if session is not None:
        headers.append((b"x-playback-session-id", session.encode()))
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                    "client": (host, 40000), "query_string": b""})


def test_a_client_is_its_playback_session_or_its_address_and_browser() -> None:
    a = client_id(request("10.0.0.1", "Firefox"))
    assert a == client_id(request("10.0.0.1", "Firefox"))  # another connection, same client
    assert a != client_id(request("10.0.0.1", "Chrome"))
    assert a != client_id(request("10.0.0.2", "Firefox"))
    s = client_id(request("10.0.0.1", "AppleCoreMedia", "A1"))
    assert s == client_id(request("10.0.0.9", "other", "A1"))  # the session id wins
    assert s != client_id(request("10.0.0.1", "AppleCoreMedia", "B2"))
    assert len(a) == 8 and b"10.0.0.1" not in a  # only a hash is kept


def test_only_parts_and_segments_count_and_the_window_forgets() -> None:
    assert is_media("12.3.m4s") and is_media("12.m4s")
    assert not is_media("init-0.mp4")
    hls = HlsViewers(window=0.3)
    for i in range(5):
        hls.seen("180p", request("10.0.0.1", f"ua{i}"))
    hls.seen("360p", request("10.0.0.1", "ua0"))  # switched rung: counted once, on the last
    hls.seen("360p", request("10.0.0.2", "ua0"))
    assert hls.by_rendition() == {"180p": 4, "360p": 2}
    whep = {"180p": 2}
    snap = EdgeViewers(lambda: whep, hls).snapshot()
    assert (snap["whep"], snap["hls"], snap["total"]) == (2, 6, 8)
    assert snap["renditions"]["180p"] == {"whep": 2, "hls": 4}
    time.sleep(0.35)  # the window itself is what is tested
    hls.seen("180p", request("10.0.0.3", "late"))
    assert hls.by_rendition() == {"180p": 1}

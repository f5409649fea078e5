"""A finished broadcast archive played through the recordings API (docs/recording.md,
"Playing"): `parley up` records its two rungs into its local store; the API serves the VOD
playlists with every URI signed, the segments and inits behind the same link + token check as
a meeting's MP4. Independent readers: Python's ``m3u8`` parser, ffprobe (Debian ffmpeg) reading
the archive over HTTP from the API alone, and hls.js in real Chromium on the recordings page
(currentTime advances, the duration is the archive's). Outsiders get 401/403."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import m3u8
import pytest

from parley import tokens
from tests.broadcast.test_hls import probe
from tests.broadcast.test_hls_browser import _publisher
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import wait_until

pytestmark = [pytest.mark.browser]
ROOM = "broadcast:final"


def _record(base: str, admin: dict[str, str]) -> dict[str, Any]:
    """Both rungs recorded while the publisher is live; its leaving ends the recording;
    the recording as the API lists it."""
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=_publisher, args=(base, stop, ready), daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "publisher"
        r = httpx.put(f"{base}/live/final/recording", headers=admin, timeout=20,
                      json={"enabled": True, "renditions": "all"})
        assert r.status_code == 200, r.text
        wait_until(lambda: httpx.get(f"{base}/live/final/recording").json().get(
            "segments", 0) >= 3, 40, 0.5, "three segments recorded")
    finally:
        stop.set()
        thread.join(20)
    wait_until(lambda: httpx.get(f"{base}/live/final/recording").json()["state"] == "ready",
               30, 0.5, "the recording ended by the source leaving")
    r = httpx.get(f"{base}/api/v1/recordings", params={"room": ROOM}, headers=admin)
    assert r.status_code == 200, r.text
    [listed] = r.json()["recordings"]
    assert (listed["kind"], listed["state"]) == ("broadcast", "ready"), listed
    return listed


def _refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["detail"]["code"] == code, r.text


def test_a_broadcast_archive_plays_through_the_recordings_api(
        browser: Any, parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET, "PARLEY_RECORDER_IDLE_S": "2",
                          "PARLEY_BROADCAST_LADDER": "180p:200,120p:100",
                          "PARLEY_X264_PRESET": "ultrafast"})
    admin_token = key("final", "director", "admin")
    admin = {"Authorization": f"Bearer {admin_token}"}
    listed = _record(base, admin)
    rid = listed["id"]
    files = f"/api/v1/recordings/{rid}/files/"
    http = httpx.Client(base_url=base, headers=admin, timeout=20)

    # the multivariant playlist: each rung's playlist a signed link into the API
    r = http.get(listed["hlsUrl"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.apple.mpegurl"), r.headers
    assert r.headers["cache-control"] == "private, no-cache"
    top = m3u8.loads(r.text)
    assert [p.uri.split("?")[0] for p in top.playlists] == [
        f"{files}180p/playlist.m3u8", f"{files}120p/playlist.m3u8"], r.text
    assert all("&sig=" in p.uri for p in top.playlists)
    for p, height in zip(top.playlists, (180, 120), strict=True):
        assert p.stream_info.resolution[1] == height
        r = http.get(p.uri)
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-cache"
        pl = m3u8.loads(r.text)
        assert pl.playlist_type == "vod" and pl.is_endlist and pl.segments, r.text
        assert abs(sum(s.duration for s in pl.segments) - listed["duration"]) < 0.5
        for uri, media in ((pl.segments[0].init_section.uri, "video/mp4"),
                           (pl.segments[0].uri, "video/iso.segment")):
            assert uri.startswith(files) and "&sig=" in uri, uri
            got = http.get(uri)
            assert got.status_code == 200 and got.headers["content-type"] == media, got.headers
            assert got.headers["cache-control"] == "private, max-age=86400, immutable"
            assert len(got.content) > 100
    segment = m3u8.loads(http.get(top.playlists[0].uri).text).segments[0].uri

    # outsiders: a viewer's token without a grant, no token, another broadcast's admin
    viewer = tokens.mint(SECRET, identity="viewer-1", room=ROOM, grants=("subscribe",))
    for url in (listed["hlsUrl"], top.playlists[0].uri, segment):
        _refused(httpx.get(base + url, headers={"Authorization": f"Bearer {viewer}"}), 403,
                 "not_a_participant")
        _refused(httpx.get(base + url), 401, "token_invalid")
        _refused(httpx.get(base + url, headers={
            "Authorization": f"Bearer {key('other', 'director', 'admin')}"}), 401,
                 "token_invalid")
    # a link is for its own file only: another name under the same signature, or a way out
    sig = listed["hlsUrl"].split("?", 1)[1]
    for name in ("180p/init-0.mp4", "../" + rid + "/files/index.m3u8", "manifest.json"):
        _refused(http.get(f"{files}{quote(name, safe='')}?{sig}"), 403, "link_invalid")

    # ffprobe follows the archive from the API alone (the token in the query goes on with
    # every link the playlists hand out, as a player that cannot set headers needs)
    streams = probe(f"{base}{listed['hlsUrl']}&token={admin_token}",  # type: ignore[arg-type]
                    "-show_entries stream=codec_name,height")["streams"]
    assert sorted(s.get("height") or 0 for s in streams if s["codec_name"] == "h264") == [
        120, 180], streams
    assert any(s["codec_name"] == "aac" for s in streams), streams

    # the recordings page plays it with hls.js
    page = browser.new_page()
    try:
        page.goto(f"{base}/recordings?room={quote(ROOM)}&token={admin_token}")
        page.wait_for_function("window.recordingsPage.recordings.length === 1", timeout=15000)
        assert "token=" not in page.evaluate("location.search")  # out of the address bar
        page.click(f"button[data-recording='{rid}']")
        page.wait_for_function("document.getElementById('video').currentTime > 2",
                               timeout=30000)
        state = page.evaluate("({t: document.getElementById('video').currentTime, "
                              "d: document.getElementById('video').duration, "
                              "error: window.recordingsPage.error, "
                              "h: document.getElementById('video').videoHeight})")
        page.wait_for_function(f"document.getElementById('video').currentTime > {state['t']}",
                               timeout=10000)
        print(f"hls.js on the recordings page: {state}, archive {listed['duration']} s")
        assert state["error"] is None, state
        assert abs(state["d"] - listed["duration"]) < 0.5, (state, listed["duration"])
        assert state["h"] in (120, 180), state
    finally:
        page.close()

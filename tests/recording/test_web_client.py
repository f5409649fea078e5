"""Recording from the web client: the Record button of a peer-to-peer meeting moves it to the call
server, everyone sees that it is being recorded, and everyone gets the download link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.signaling.browser import close, open_client, stats, wait_media

pytestmark = pytest.mark.browser

CAM = "w=320&h=240&fps=15"


def decoded(page: Any, who: str) -> int:
    return sum(r["framesDecoded"] for r in stats(page)["inbound"]
               if r["participant"] == who and r["kind"] == "video")


def test_record_button_switches_to_call_server_and_everyone_sees_it(
        browser: Any, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    room = "recorded-standup"
    a = open_client(browser, f"{base}/m/{room}?name=Ann&user=ann&topology=auto&{CAM}")
    b = open_client(browser, f"{base}/m/{room}?name=Ben&user=ben&topology=auto&{CAM}")
    try:
        wait_media(a, [("ben", "video", "camera")], timeout=30)
        wait_media(b, [("ann", "video", "camera")], timeout=30)
        assert stats(a)["topology"] == "p2p"
        assert b.locator("#recording-banner").is_hidden()

        a.click("#record")
        for page in (a, b):
            page.wait_for_selector("#recording-banner:not([hidden])", timeout=15000)
            assert "Recording" in page.inner_text("#recording-banner")
        wait_until(lambda: stats(a)["topology"] == "sfu" and stats(b)["topology"] == "sfu", 20,
                   0.5, "both clients on the call server")
        before = decoded(b, "ann"), decoded(a, "ben")
        wait_until(lambda: decoded(b, "ann") > before[0] + 30
                   and decoded(a, "ben") > before[1] + 30, 20, 0.5,
                   "video still decoding through the call server")
        assert a.inner_text("#record") == "Stop recording"

        a.click("#record")
        for page in (a, b):
            page.wait_for_selector("#recording-banner[hidden]", state="attached", timeout=15000)
            page.wait_for_selector("#recordings a", timeout=120000)
        href = b.get_attribute("#recordings a", "href")
        assert href
        r = httpx.get(href if href.startswith("http") else base + href, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"].startswith("video/")
        assert len(r.content) > 10_000
    finally:
        close(a, b)


def test_record_button_without_the_grant_shows_a_clear_error(
        browser: Any, parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_GUEST_GRANTS": "publish,subscribe"})
    page = open_client(browser, f"{base}/m/no-grant?name=Cy&user=cy&{CAM}")
    try:
        page.wait_for_function("window.parley.state.room === 'no-grant'", timeout=15000)
        page.click("#record")
        page.wait_for_selector("#error:not([hidden])", timeout=10000)
        assert "grant_missing" in page.inner_text("#error")
        assert page.locator("#recording-banner").is_hidden()
    finally:
        close(page)

"""`/golive` and `/watch/{b}` from a deployed `parley signaling` (no /live of its own): with
PARLEY_BROADCAST_URL it sends the pages to that broadcast host (`?base=`), and in Chromium the
Go-live page served by signaling publishes to a separate `parley up` over WHIP while the watch
page served by signaling plays it over WHEP from there (cross-origin, CORS)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.broadcast.test_parley_up import SECRET, key
from tests.cluster import Cluster

pytestmark = [pytest.mark.browser]


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_url, tmp_path)
    yield c
    c.stop()


def test_signaling_serves_the_broadcast_pages_for_another_host(
        browser: Any, cluster: Cluster, parley_server: Callable[..., str]) -> None:
    live = parley_server({"PARLEY_TOKEN_SECRET": SECRET, "PARLEY_BROADCAST_LADDER": "180p:200"})
    plain = cluster.signaling()  # no broadcast host configured: the pages use their origin
    site = cluster.signaling({"PARLEY_BROADCAST_URL": live + "/"})
    with httpx.Client(base_url=site) as http:
        for path in ("/golive", "/watch/final?rung=180p", "/watch"):
            r = http.get(path)
            assert r.status_code == 307, (path, r.status_code, r.text)
            to = urlsplit(r.headers["location"])
            assert to.path == path.split("?")[0] and parse_qs(to.query)["base"] == [live], to
            if "rung" in path:
                assert parse_qs(to.query)["rung"] == ["180p"]
        page = http.get("/watch/final", params={"base": "https://edge.example"})
        assert page.status_code == 200 and "watch.js" in page.text
        assert http.get("/golive", params={"base": live}).text.count("golive.js") == 1
        bad = http.get("/watch/Not_A_Name")
        assert bad.status_code == 404 and bad.json()["detail"]["code"] == "broadcast_unknown"
        assert http.get("/live/final").status_code == 404  # signaling serves no /live itself
    assert "golive.js" in httpx.get(f"{plain}/golive").text

    studio = browser.new_page()
    studio.goto(f"{site}/golive")
    assert parse_qs(urlsplit(studio.url).query)["base"] == [live]
    studio.fill("#broadcast", "final")
    studio.fill("#stream-key", key("final", "cam1"))
    studio.select_option("#height", "240")
    studio.click("#go")
    studio.wait_for_function("window.golive.state === 'live' && window.golive.sent "
                             "&& window.golive.sent.framesEncoded > 10", timeout=20000)
    assert window_location(studio).startswith(f"{live}/live/final/whip/")
    assert httpx.get(f"{live}/live/final").json()["sources"]["cam1"]["frames"]["video"] > 0
    link = studio.get_attribute("#watch-link", "href")
    assert link is not None and link.startswith("/watch/final?base="), link

    viewer = browser.new_page()
    viewer.goto(f"{site}{link}")
    viewer.wait_for_function("window.watch.transport === 'webrtc' "
                             "&& window.watch.stats.framesDecoded > 10", timeout=20000)
    assert httpx.get(f"{live}/live/final").json()["transcoder"]["renditions"][0]["viewers"] == 1
    studio.click("#stop")
    studio.wait_for_function("window.golive.state === 'idle'", timeout=10000)
    for p in (viewer, studio):
        p.close()


def window_location(page: Any) -> str:
    """The WHIP session's Location the Go-live page holds (absolute)."""
    return str(page.evaluate("window.golive.location"))

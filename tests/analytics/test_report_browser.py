"""The /analytics page in Chromium: refused without a token (401) and without the admin grant
(403); with it, the plots Chromium lays out carry the real meeting that `parley up` just counted
(three joins, a leave, a dropped connection): non-flat lines, not an empty frame."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from parley import tokens
from tests.conftest import wait_until

SECRET = "analytics-report-browser-secret-of-32-bytes"

# per <svg> Chromium rendered: its size and, per polyline, the height of its laid-out box (a
# flat line, i.e. no data, has height 0) and its title (the series' name)
PLOTS_JS = """() => [...document.querySelectorAll('svg')].map(svg => ({
  title: svg.querySelector('title').textContent,
  width: svg.getBoundingClientRect().width,
  lines: [...svg.querySelectorAll('polyline')].map(p => ({
    name: p.querySelector('title').textContent, points: p.points.numberOfItems,
    height: p.getBBox().height}))}))"""


def meeting(base: str, room: str, connections: contextlib.ExitStack) -> None:
    """Alice stays (until ``connections`` closes), Bob leaves, Carol's connection ends without
    a leave (a drop)."""
    clients = {}
    for name in ("alice", "bob", "carol"):
        token = tokens.mint(SECRET, identity=name, room=room)
        ws = connections.enter_context(connect(
            base.replace("http", "ws", 1) + f"/ws?token={token}", max_size=None))
        assert json.loads(ws.recv(5))["type"] == "welcome"
        ws.send(json.dumps({"type": "join", "room": room}))
        while json.loads(ws.recv(5))["type"] != "joined":
            pass
        clients[name] = ws
    clients["bob"].send(json.dumps({"type": "leave"}))
    clients["carol"].close()


@pytest.mark.browser
def test_the_report_page_renders_real_plots_for_admins_only(
        browser: Any, parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    admin = tokens.mint(SECRET, identity="ops", room="*", grants=("admin",))
    guest = tokens.mint(SECRET, identity="eve", room="*")
    with contextlib.ExitStack() as connections:  # alice stays connected to the end
        meeting(base, f"plots-{uuid.uuid4().hex[:6]}", connections)

        def counted() -> dict[str, Any] | None:
            rows = httpx.get(f"{base}/analytics/data", params={"token": admin}).json()["byLabels"]
            row = next((r for r in rows if r["region"] == "local"), None)
            return row if row and row["joined"] == 3 and row["dropped"] == 1 and row[
                "events"].get("participant.left") == 1 else None

        row = wait_until(counted, 10, what="the meeting counted by parley up's engine")
        assert row["participantsNow"] == 1 and row["meetingsStarted"] == 1, row

        page = browser.new_page()
        try:
            r = page.goto(f"{base}/analytics")
            assert r.status == 401, r.status
            r = page.goto(f"{base}/analytics?token={guest}")
            assert r.status == 403, r.status
            assert json.loads(page.inner_text("body"))["detail"]["code"] == "grant_missing"
            assert page.locator("svg").count() == 0

            r = page.goto(f"{base}/analytics?token={admin}")
            assert r.status == 200 and page.title() == "Parley analytics"
            cells = page.locator("table tr").nth(1).locator("td").all_inner_texts()
            assert cells[:6] == ["local", "unknown", "1", "3", "1", "33.3 %"], cells
            plots = page.evaluate(PLOTS_JS)
            assert len(plots) == 10, [p["title"] for p in plots]
            assert all(p["width"] == 720 for p in plots), plots
            day = {p["title"].split(" per ")[0]: {ln["name"]: ln for ln in p["lines"]}
                   for p in plots[:5]}
            usage = day["Usage: concurrent participants"]["participants"]
            assert usage["points"] == 1440 and usage["height"] > 0, usage
            joins = day["Joins and starts"]
            assert joins["joined"]["height"] > 0 and joins["meetings started"]["height"] > 0, joins
            assert joins["calls started"]["height"] == 0  # none: a flat line
            drops = day["Drops"]
            assert drops["dropped"]["height"] > 0 and drops["drop rate %"]["height"] > 0, drops
            month = {p["title"].split(" per ")[0]: {ln["name"]: ln for ln in p["lines"]}
                     for p in plots[5:]}
            hourly = month["Joins and starts"]["joined"]
            assert hourly["points"] == 720 and hourly["height"] > 0, hourly
            shot = page.locator("svg").first.screenshot()
            assert len(shot) > 2000  # a drawn PNG, not an empty box
        finally:
            page.close()

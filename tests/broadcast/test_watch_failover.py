"""The viewer page in Chromium moves to another edge of its region when its edge is SIGKILLed
(issue 10 item 4; watch.js, docs/broadcast.md "A lost edge"). Roles are processes with the
operator's environment (ingest, a 180p transcoder, relay, two edges of region eu), the camera
is Debian's simple-whip-client, the page is `parley up`'s /watch with ``?base=edgeA,edgeB``."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broadcast.test_parley_up import SECRET, key
from tests.broadcast.test_resilience import MOVE_S, RUNG, B, edge_env, start_role, stop_roles
from tests.broadcast.test_whip_independent import AUDIO, VIDEO

Role = tuple[str, subprocess.Popen[bytes]]


@pytest.fixture
def role(tmp_path: Path) -> Iterator[Callable[[str, dict[str, str]], Role]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield lambda name, env: start_role(procs, tmp_path, name, env)
    stop_roles(procs)


def test_the_watch_page_moves_to_another_edge_when_its_edge_is_killed(
        browser: Any, role: Callable[[str, dict[str, str]], Role],
        parley_server: Callable[..., str], testbed: dict[str, str], tmp_path: Path) -> None:
    ingest, _ = role("ingest", {"PARLEY_INGEST_SOURCES": "gst"})
    cam = subprocess.Popen(
        [testbed["WHIP_CLIENT"], "-u", f"{ingest}/live/{B}/whip", "-t", key(B, "gst"), "-o",
         "-n", "-V", VIDEO, "-A", AUDIO], stdout=(tmp_path / "whip-client.log").open("wb"),
        stderr=subprocess.STDOUT, env={**os.environ, "LD_LIBRARY_PATH": testbed[
            "WHIP_CLIENT_LIBS"], "GST_REGISTRY": str(tmp_path / "gst-registry.bin")})
    try:
        tx, _ = role("transcoder", {"PARLEY_UPSTREAM_URL": f"{ingest}/live/{B}/whep",
                                    "PARLEY_RENDITION": RUNG, "PARLEY_HEIGHT": "180",
                                    "PARLEY_BITRATE_KBPS": "200"})
        relay, _ = role("edge-relay", {"PARLEY_TIER": "relay", "PARLEY_RENDITIONS": RUNG,
                                       "PARLEY_UPSTREAM_URL": f"{tx}/live/{B}/{{rendition}}/whep"})
        edges = dict(role("edge-relay", edge_env(relay)) for _ in range(2))
        page_host = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
        page = browser.new_page()
        page.goto(f"{page_host}/watch/{B}?transport=webrtc&base={','.join(edges)}")
        page.wait_for_function("window.watch.transport === 'webrtc' "
                               "&& window.watch.stats.framesDecoded > 30", timeout=30000)
        first = page.evaluate("window.watch.edge")
        assert first in edges, first
        killed = time.monotonic()
        edges[first].kill()
        page.wait_for_function("window.watch.moves.length > 0 && window.watch.moves[0].to",
                               timeout=15000)
        moved_after = time.monotonic() - killed  # the new session decodes (polling included)
        w = page.evaluate("window.watch")
        assert w["moves"][0]["to"] != first and w["edge"] == w["moves"][0]["to"], w["moves"]
        assert moved_after < MOVE_S, (moved_after, w["moves"], w["log"])
        # and it keeps playing there (framesDecoded counts the new session's frames)
        page.wait_for_function("window.watch.stats.framesDecoded > 30", timeout=10000)
        print(f"watch page: moved to the other edge {moved_after:.2f} s after the kill: "
              f"{w['moves']}")
    finally:
        cam.send_signal(2)
        try:
            cam.wait(10)
        except subprocess.TimeoutExpired:
            cam.kill()

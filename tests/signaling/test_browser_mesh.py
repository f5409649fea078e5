"""Meetings in real Chromium (fake camera and microphone) against a real `parley up`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.signaling.browser import close, inbound, open_client, wait_media

pytestmark = pytest.mark.browser


def test_one_to_one_room_decodes_video_and_receives_audio(
        browser, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    a = open_client(browser, f"{base}/m/duo?name=Alice&user=alice")
    b = open_client(browser, f"{base}/m/duo?name=Bob&user=bob")
    try:
        sa = wait_media(a, [("bob", "video", "camera"), ("bob", "audio", "microphone")])
        sb = wait_media(b, [("alice", "video", "camera"), ("alice", "audio", "microphone")])
        assert sa["topology"] == sb["topology"] == "p2p"
        assert all(r["bytesReceived"] > 0 for r in inbound(a, "bob"))
    finally:
        close(a, b)

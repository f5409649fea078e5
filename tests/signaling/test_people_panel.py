"""The front page's people panel in real Chromium, on two signaling replicas over the test bed's
Redis: presence is pushed (the page subscribes once and never asks again, while Alice comes and
goes on the other replica), and a direct-message conversation is kept on the server, so Bob's
second browser shows it, as text."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.cluster import Cluster
from tests.signaling.browser import as_user, close, open_client
from tests.signaling.helpers import user_token

pytestmark = pytest.mark.browser

# Every frame the page sends, kept for the test: the protocol shows there is no polling.
RECORD_SENT = """(() => {
  window.__sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try { window.__sent.push(JSON.parse(data).type); } catch { /* not JSON */ }
    return send.call(this, data);
  };
})()"""


@pytest.fixture(scope="module")
def replicas(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    c = Cluster(redis_url, Path(tmp_path_factory.mktemp("people")))
    fast = {"PARLEY_RATE_CHAT_PER_S": "1000", "PARLEY_RATE_CHAT_BURST": "1000"}  # page test
    yield [c.signaling(fast), c.signaling(fast)]
    c.stop()


def contacts(base: str, *pairs: tuple[str, str]) -> None:
    admin = user_token(base, "ops", "*", grants=("admin",))
    for me, other in pairs:
        httpx.put(f"{base}/api/v1/users/{me}", json={"contacts": [other]},
                  headers={"Authorization": f"Bearer {admin}"}).raise_for_status()


def open_recorded(browser: Any, url: str) -> Any:
    """``open_client`` with every sent frame's type kept in ``window.__sent``."""
    context = browser.new_context(permissions=["camera", "microphone"])
    context.add_init_script(RECORD_SENT)
    page = context.new_page()
    page.goto(as_user(url))
    page.wait_for_function("window.parley && window.parley.state.identity", timeout=15000)
    return page


def test_presence_is_pushed_to_the_panel_without_polling(
        browser: Any, replicas: list[str], uniq: Callable[[str], str]) -> None:
    one, two = replicas
    alice_id, bob_id = uniq("alice"), uniq("bob")
    contacts(one, (bob_id, alice_id))
    bob = open_recorded(browser, f"{one}/?name=Bob&user={bob_id}")
    alice_row = f"#contacts li[data-identity='{alice_id}']"
    try:
        bob.wait_for_selector(f"{alice_row}[data-presence=offline]", timeout=10000)
        alice = open_client(browser, f"{two}/?name=Alice&user={alice_id}")
        bob.wait_for_selector(f"{alice_row}[data-presence=online]", timeout=5000)
        assert bob.inner_text(f"{alice_row} .presence-text") == "online"
        close(alice)
        bob.wait_for_selector(f"{alice_row}[data-presence=offline]", timeout=5000)
        sent = bob.evaluate("window.__sent")
        assert sent.count("presence.subscribe") == 1 and "presence" not in sent, sent
        got = [m for m in bob.evaluate("window.parley.state.messages") if m["type"] == "presence"]
        assert len(got) == 3  # the subscription's answer, then two pushes
    finally:
        close(bob)


def test_a_conversation_shows_in_a_second_browser(
        browser: Any, replicas: list[str], uniq: Callable[[str], str]) -> None:
    one, two = replicas
    alice_id, bob_id = uniq("alice"), uniq("bob")
    contacts(one, (alice_id, bob_id), (bob_id, alice_id))
    text = '<img src=x onerror="window.__pwned=1"> hi Bob'
    alice = open_client(browser, f"{one}/?name=Alice&user={alice_id}")
    bob = open_client(browser, f"{two}/?name=Bob&user={bob_id}")
    try:
        alice.click(f"#contacts li[data-identity='{bob_id}'] button.message")
        alice.fill("#dm-input", text)
        alice.click("#dm-form button")
        alice.wait_for_selector("#dm-log .chat-line.mine", timeout=5000)
        bob_row = f"#contacts li[data-identity='{alice_id}']"
        bob.wait_for_selector(f"{bob_row} .unread:not([hidden])", timeout=5000)
        bob.click(f"{bob_row} button.message")
        bob.fill("#dm-input", "hello Alice")
        bob.click("#dm-form button")
        alice.wait_for_selector("#dm-log .chat-line:nth-child(2)", timeout=5000)
        close(bob)
        # Bob's other browser (another context, the other replica): nothing waits in his inbox
        # (he saw and acked it), but the conversation is on the server
        second = open_client(browser, f"{one}/?name=Bob&user={bob_id}")
        second.click(f"{bob_row} button.message")
        second.wait_for_selector("#dm-log .chat-line:nth-child(2)", timeout=5000)
        assert second.locator("#dm-log .chat-text").all_inner_texts() == [text, "hello Alice"]
        assert second.locator("#dm-log .chat-line.mine .chat-text").inner_text() == "hello Alice"
        assert second.locator("#dm-log img").count() == 0
        assert second.evaluate("window.__pwned") is None
        assert second.is_hidden(f"{bob_row} .unread")
        history = [m for m in second.evaluate("window.parley.state.messages")
                   if m["type"] == "chat.message"]
        assert history == [], json.dumps(history)  # it came as history, not as a replay
        close(second)
    finally:
        close(alice)


def test_earlier_messages_page_back(browser: Any, replicas: list[str],
                                    uniq: Callable[[str], str]) -> None:
    """55 messages: the panel shows the newest 50, "Earlier messages" fetches the other 5."""
    one, two = replicas
    alice_id, bob_id = uniq("alice"), uniq("bob")
    contacts(one, (alice_id, bob_id))
    token = user_token(two, alice_id)
    with ws_connect(f"{two.replace('http', 'ws', 1)}/ws?token={token}") as ws:
        for i in range(55):
            ws.send(json.dumps({"type": "chat.send", "to": bob_id, "text": f"m{i}",
                                "clientId": f"c{i}"}))
        acks = 0
        while acks < 55:
            msg = json.loads(ws.recv(timeout=10))
            assert msg["type"] != "error", msg
            acks += msg["type"] == "chat.sent"
    alice = open_client(browser, f"{one}/?name=Alice&user={alice_id}")  # her inbox is empty
    try:
        alice.click(f"#contacts li[data-identity='{bob_id}'] button.message")
        alice.wait_for_selector("#dm-older:not([hidden])", timeout=5000)
        assert alice.locator("#dm-log .chat-line").count() == 50
        assert alice.locator("#dm-log .chat-text").first.inner_text() == "m5"
        alice.click("#dm-older")
        alice.wait_for_selector("#dm-older", state="hidden", timeout=5000)
        texts = alice.locator("#dm-log .chat-text").all_inner_texts()
        assert texts == [f"m{i}" for i in range(55)]
    finally:
        close(alice)

"""1:1 calls placed and answered in real Chromium: on one replica, and across two replicas
that share the test bed's Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.signaling.browser import close, open_client, wait_media

pytestmark = pytest.mark.browser


def call_and_answer(caller, callee, caller_id: str, callee_id: str) -> str:
    caller.evaluate(f"window.parley.invite('{callee_id}')")
    callee.wait_for_selector("#incoming:not([hidden])", timeout=10000)
    assert callee.locator("#incoming-from").inner_text() == caller_id.split("-")[0].title()
    callee.click("#accept")
    wait_media(caller, [(callee_id, "video", "camera"), (callee_id, "audio", "microphone")])
    wait_media(callee, [(caller_id, "video", "camera"), (caller_id, "audio", "microphone")])
    return caller.evaluate("window.parley.state.activeCall.callId")


def test_invite_accept_call_connects_and_hangup_ends_it(
        browser, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server()
    alice_id, bob_id = uniq("alice"), uniq("bob")
    alice = open_client(browser, f"{base}/?name=Alice&user={alice_id}")
    bob = open_client(browser, f"{base}/?name=Bob&user={bob_id}")
    try:
        call_id = call_and_answer(alice, bob, alice_id, bob_id)
        assert alice.evaluate("window.parley.state.room") == f"call-{call_id}"
        bob.click("#hangup")
        alice.wait_for_function("window.parley.state.activeCall.state === 'ended:hangup'",
                                timeout=10000)
        assert alice.evaluate("window.parley.stats()")["inbound"] == []
        assert alice.evaluate("window.parley.state.error") is None
        assert bob.evaluate("window.parley.state.error") is None
        bob.wait_for_function(
            "document.querySelector('#call-state').textContent.startsWith('ended:hangup')",
            timeout=10000)
    finally:
        close(alice, bob)


@pytest.mark.redis
def test_caller_and_callee_on_different_replicas_sharing_redis(
        browser, parley_server: Callable[..., str], redis_url: str, token_secret: str,
        uniq: Callable[[str], str]) -> None:
    env = {"PARLEY_REDIS_URL": redis_url, "PARLEY_TOKEN_SECRET": token_secret}
    one, two = parley_server(env), parley_server(env)
    alice_id, bob_id = uniq("alice"), uniq("bob")
    alice = open_client(browser, f"{one}/?name=Alice&user={alice_id}")
    bob = open_client(browser, f"{two}/?name=Bob&user={bob_id}")
    try:
        instances = {p.evaluate("window.parley.state.instance") for p in (alice, bob)}
        assert len(instances) == 2, "each browser must be held by a different replica"
        call_and_answer(alice, bob, alice_id, bob_id)
        alice.click("#hangup")
        bob.wait_for_function("window.parley.state.activeCall.state === 'ended:hangup'",
                              timeout=10000)
    finally:
        close(alice, bob)


def test_refused_and_offline_invites_are_shown_to_the_caller(
        browser, parley_server: Callable[..., str], tmp_path: Path,
        uniq: Callable[[str], str]) -> None:
    alice_id, eve_id, carol_id = uniq("alice"), uniq("eve"), uniq("carol")
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": {alice_id: {"org": "acme"}, carol_id: {"org": "acme"},
                                           eve_id: {"org": "other"}}}))
    base = parley_server({"PARLEY_USERS_FILE": str(users)})
    alice = open_client(browser, f"{base}/?name=Alice&user={alice_id}")
    eve = open_client(browser, f"{base}/?name=Eve&user={eve_id}")
    try:
        alice.fill("#callee", eve_id)
        alice.click("#call-form button")
        alice.wait_for_selector("#error:not([hidden])", timeout=10000)
        assert "call_not_allowed" in alice.locator("#error").inner_text()
        assert eve.locator("#incoming").is_hidden()
        alice.evaluate(f"window.parley.invite('{carol_id}')")  # allowed, but not connected
        alice.wait_for_function("window.parley.state.activeCall?.state === 'ended:offline'",
                                timeout=10000)
    finally:
        close(alice, eve)

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


def _call_state(page, state: str) -> None:
    """The caller's page shows the outcome, in its state and in the call bar."""
    page.wait_for_function(f"window.parley.state.activeCall?.state === '{state}'",
                           timeout=10000)
    assert page.locator("#call-state").inner_text().startswith(state)
    assert page.evaluate("window.parley.stats()")["inbound"] == []


def test_rejected_busy_and_unanswered_invites_reach_the_caller(
        browser, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server({"PARLEY_RING_TIMEOUT_S": "4"})
    alice_id, bob_id, carol_id = uniq("alice"), uniq("bob"), uniq("carol")
    alice = open_client(browser, f"{base}/?name=Alice&user={alice_id}")
    bob = open_client(browser, f"{base}/?name=Bob&user={bob_id}")
    carol = open_client(browser, f"{base}/?name=Carol&user={carol_id}")
    try:
        # rejected: Bob clicks Reject
        alice.evaluate(f"window.parley.invite('{bob_id}')")
        bob.wait_for_selector("#incoming:not([hidden])", timeout=10000)
        bob.click("#reject")
        _call_state(alice, "ended:rejected")
        bob.wait_for_selector("#incoming", state="hidden", timeout=10000)
        # busy: Bob is in a call with Carol, Alice calls him
        call_and_answer(carol, bob, carol_id, bob_id)
        alice.evaluate(f"window.parley.invite('{bob_id}')")
        _call_state(alice, "ended:busy")
        assert bob.evaluate("window.parley.state.activeCall.state") == "active"
        wait_media(bob, [(carol_id, "video", "camera")], frames=30)  # the call goes on
        carol.click("#hangup")
        bob.wait_for_function("window.parley.state.activeCall.state === 'ended:hangup'",
                              timeout=10000)
        # no answer: Bob lets it ring past the ring timeout
        alice.evaluate(f"window.parley.invite('{bob_id}')")
        bob.wait_for_selector("#incoming:not([hidden])", timeout=10000)
        _call_state(alice, "ended:no_answer")
        bob.wait_for_selector("#incoming", state="hidden", timeout=10000)
        for page in (alice, bob, carol):
            assert page.evaluate("window.parley.state.error") is None
    finally:
        close(alice, bob, carol)


def test_join_page_form_opens_the_meeting(
        browser, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    """The front page's form takes a room and a name and joins with the chosen devices."""
    base = parley_server()
    room = uniq("form")
    host = open_client(browser, f"{base}/m/{room}?name=Host&user={uniq('host')}")
    guest = open_client(browser, f"{base}/?name=Guest")
    try:
        guest.fill("#join-room", room)
        guest.fill("#join-name", "Dana Form")
        guest.uncheck("#join-audio")
        guest.click("#join-form button")
        guest.wait_for_url(f"**/m/{room}?*", timeout=10000)
        guest.wait_for_function("window.parley && window.parley.state.room", timeout=15000)
        assert guest.evaluate("window.parley.state.room") == room
        assert "audio=0" in guest.url and "name=Dana+Form" in guest.url
        host_id = host.evaluate("window.parley.state.identity")
        guest_id = guest.evaluate("window.parley.state.identity")
        wait_media(guest, [(host_id, "video", "camera")])
        got = wait_media(host, [(guest_id, "video", "camera")])
        assert not [r for r in got["inbound"] if r["participant"] == guest_id
                    and r["kind"] == "audio"], "the microphone was left off"
        host.wait_for_selector(f".tile[data-participant='{guest_id}']", timeout=10000)
        assert "Dana Form" in host.locator(f".tile[data-participant='{guest_id}']").inner_text()
    finally:
        close(host, guest)

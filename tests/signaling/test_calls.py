"""1:1 call flows at the protocol level: a real `parley up`, real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from parley import tokens
from tests.signaling.helpers import Client


@pytest.fixture
def server(parley_server: Callable[..., str], token_secret: str, tmp_path: Path) -> str:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"policy": "org", "users": {
        "alice": {"org": "acme"}, "bob": {"org": "acme"}, "carol": {"org": "acme"},
        "mallory": {"org": "evil"}}}))
    return parley_server({"PARLEY_TOKEN_SECRET": token_secret, "PARLEY_USERS_FILE": str(users),
                          "PARLEY_RING_TIMEOUT_S": "1.5"})


async def nothing_of(client: Client, mtype: str, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await client.expect(mtype, within=within)


async def test_invite_refused_by_user_service_never_rings(server: str) -> None:
    mallory = await Client.connect(server, "mallory")
    alice = await Client.connect(server, "alice")
    err = await mallory.request("invite", "error", to="alice")
    assert err["code"] == "call_not_allowed"
    assert "another organisation" in err["message"]
    await nothing_of(alice, "call.incoming")


async def test_policy_change_through_the_admin_api_takes_effect(server: str,
                                                                token_secret: str) -> None:
    admin = tokens.mint(token_secret, identity="ops", room="*", grants=("admin",))
    guest = tokens.mint(token_secret, identity="bob", room="*")
    async with httpx.AsyncClient(base_url=server) as http:
        denied = await http.put("/api/v1/users-policy", json={"policy": "contacts"},
                                headers={"Authorization": f"Bearer {guest}"})
        assert denied.status_code == 403
        ok = await http.put("/api/v1/users-policy", json={"policy": "contacts"},
                            headers={"Authorization": f"Bearer {admin}"})
        assert ok.json() == {"policy": "contacts"}
        alice = await Client.connect(server, "alice")
        bob = await Client.connect(server, "bob")
        err = await alice.request("invite", "error", to="bob")
        assert err["code"] == "call_not_allowed" and "contacts" in err["message"]
        put = await http.put("/api/v1/users/alice", json={"org": "acme", "contacts": ["bob"]},
                             headers={"Authorization": f"Bearer {admin}"})
        assert put.json()["contacts"] == ["bob"]
    ringing = await alice.request("invite", "call.ringing", to="bob")
    assert (await bob.expect("call.incoming"))["callId"] == ringing["callId"]


async def test_rejected_call_ends_for_both(server: str) -> None:
    alice, bob = await Client.connect(server, "alice"), await Client.connect(server, "bob")
    ringing = await alice.request("invite", "call.ringing", to="bob")
    incoming = await bob.expect("call.incoming", **{"from": "alice"})
    assert incoming["callId"] == ringing["callId"]
    await bob.send(type="reject", callId=incoming["callId"])
    ended = await alice.expect("call.ended")
    assert (ended["reason"], ended["by"]) == ("rejected", "bob")
    assert (await bob.expect("call.ended"))["reason"] == "rejected"
    late = await bob.request("accept", "error", callId=incoming["callId"])
    assert late["code"] == "call_state"


async def test_callee_offline_is_told_at_once(server: str) -> None:
    alice = await Client.connect(server, "alice")
    start = time.monotonic()
    await alice.send(type="invite", to="carol")
    ended = await alice.expect("call.ended", within=2)
    assert ended["reason"] == "offline"
    assert time.monotonic() - start < 0.5
    # and alice is free again right away
    bob = await Client.connect(server, "bob")
    await alice.request("invite", "call.ringing", to="bob")
    await bob.expect("call.incoming")


async def test_busy_callee_while_ringing_and_while_in_a_call(server: str) -> None:
    alice, bob, carol = [await Client.connect(server, n) for n in ("alice", "bob", "carol")]
    await alice.request("invite", "call.ringing", to="bob")
    ended = await carol.request("invite", "call.ended", to="bob")
    assert ended["reason"] == "busy"
    incoming = await bob.expect("call.incoming", **{"from": "alice"})
    assert not [m for m in bob.inbox if m.get("from") == "carol"]
    await bob.send(type="accept", callId=incoming["callId"])
    accepted = await alice.expect("call.accepted")
    assert accepted["room"] == f"call-{incoming['callId']}"
    assert (await carol.request("invite", "call.ended", to="alice"))["reason"] == "busy"
    assert (await carol.request("invite", "call.ended", to="bob"))["reason"] == "busy"


async def test_no_answer_times_out(server: str) -> None:
    alice, bob = await Client.connect(server, "alice"), await Client.connect(server, "bob")
    start = time.monotonic()
    await alice.request("invite", "call.ringing", to="bob")
    ended = await alice.expect("call.ended", within=5)
    assert ended["reason"] == "no_answer"
    assert 1.3 < time.monotonic() - start < 4
    assert (await bob.expect("call.ended"))["reason"] == "no_answer"


async def test_cancel_and_hangup(server: str) -> None:
    alice, bob = await Client.connect(server, "alice"), await Client.connect(server, "bob")
    ringing = await alice.request("invite", "call.ringing", to="bob")
    await bob.expect("call.incoming")
    await alice.send(type="cancel", callId=ringing["callId"])
    assert (await bob.expect("call.ended"))["reason"] == "cancelled"
    assert (await alice.expect("call.ended"))["reason"] == "cancelled"

    ringing = await alice.request("invite", "call.ringing", to="bob")
    await bob.expect("call.incoming", callId=ringing["callId"])
    await bob.send(type="accept", callId=ringing["callId"])
    accepted = await alice.expect("call.accepted")
    for c in (alice, bob):
        joined = await c.request("join", "joined", room=accepted["room"])
        assert joined["room"] == accepted["room"]
    # a third party cannot join someone else's call room
    carol = await Client.connect(server, "carol")
    assert (await carol.request("join", "error", room=accepted["room"]))["code"] == "unknown_call"
    await bob.send(type="hangup", callId=ringing["callId"])
    ended = await alice.expect("call.ended")
    assert (ended["reason"], ended["by"]) == ("hangup", "bob")
    await asyncio.sleep(0.2)  # the server takes both out of the call room
    for c in (alice, bob):
        assert (await c.request("leave", "error"))["code"] == "not_joined"
    again = await alice.request("hangup", "error", callId=ringing["callId"])
    assert again["code"] == "call_state"


async def test_caller_disconnect_while_ringing_cancels(server: str) -> None:
    alice, bob = await Client.connect(server, "alice"), await Client.connect(server, "bob")
    await alice.request("invite", "call.ringing", to="bob")
    await bob.expect("call.incoming")
    await alice.close()
    ended = await bob.expect("call.ended")
    assert ended["reason"] == "cancelled"


async def test_guest_tokens_can_be_turned_off(parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_ALLOW_GUESTS": "0"})
    async with httpx.AsyncClient(base_url=base) as http:
        resp = await http.post("/api/v1/guest-token", json={"room": "r", "name": "x"})
    assert resp.status_code == 403
    assert resp.json()["detail"]["code"] == "guests_disabled"


async def test_guest_token_carries_turn_credentials(parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TURN_URIS": "turn:127.0.0.1:3478?transport=udp",
                          "PARLEY_TURN_SECRET": "s3cret", "PARLEY_STUN_URIS": "stun:x:3478"})
    async with httpx.AsyncClient(base_url=base) as http:
        body = (await http.post("/api/v1/guest-token", json={"room": "r", "name": "X"})).json()
    stun, turn = body["iceServers"]
    assert stun == {"urls": ["stun:x:3478"]}
    expiry, identity = turn["username"].split(":", 1)
    assert identity == body["identity"] and int(expiry) > time.time()
    assert turn["credential"]
    await asyncio.sleep(0)

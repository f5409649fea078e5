"""Attack: become someone else. Guests ask for a registered user's identity, reuse a guest token
to take over a session, and try to take over a user's calls across replicas sharing Redis; only a
token the deployment minted for an identity takes its session over (docs/signaling.md,
"Identities")."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import websockets

from parley import tokens
from tests.security.signaling_attack import alive, refused_with, ws_url
from tests.signaling.helpers import Client, user_token


@pytest.fixture
def users(tmp_path: Path) -> tuple[str, str, Path]:
    """Two registered users of one organisation, unique per test (Redis is shared)."""
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"policy": "org", "users": {
        alice: {"org": "acme"}, bob: {"org": "acme"}}}))
    return alice, bob, path


async def test_a_requested_identity_is_ignored_and_guests_are_never_users(
        parley_server: Callable[..., str], users: tuple[str, str, Path]) -> None:
    alice, _, path = users
    secret = secrets.token_urlsafe(24)
    base = parley_server({"PARLEY_TOKEN_SECRET": secret, "PARLEY_USERS_FILE": str(path)})
    async with httpx.AsyncClient(base_url=base) as http:
        for asked in (alice, "alice", "admin"):
            body = (await http.post("/api/v1/guest-token", json={
                "room": "r", "name": "Mallory", "identity": asked})).json()
            assert body["identity"].startswith("guest-") and body["identity"] != asked
            claims = tokens.verify(secret, body["token"])
            assert (claims.identity, claims.guest) == (body["identity"], True)
            guest = await Client.connect(base, body["identity"], token=body["token"])
            assert guest.welcome["identity"] == body["identity"] and guest.welcome["guest"]
            await guest.close()
        # a guest's identity can never be registered as a user
        admin = tokens.mint(secret, identity="ops", room="*", grants=("admin",))
        r = await http.put(f"/api/v1/users/{body['identity']}", json={"org": "acme"},
                           headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 400 and "reserved for guests" in r.json()["detail"]["message"]
    # even a guest token naming a registered user (a leaked secret, a bug) is refused
    forged = tokens.mint(secret, identity=alice, room="*", guest=True)
    async with websockets.connect(ws_url(base, forged)) as ws:
        said, code = await refused_with(ws)
    assert (said[0]["code"], code) == ("token_invalid", 4401)


@pytest.mark.redis
async def test_a_guest_cannot_take_over_a_users_session_or_calls(
        parley_server: Callable[..., str], redis_url: str,
        users: tuple[str, str, Path]) -> None:
    alice, bob, path = users
    secret = secrets.token_urlsafe(24)
    env = {"PARLEY_REDIS_URL": redis_url, "PARLEY_TOKEN_SECRET": secret,
           "PARLEY_USERS_FILE": str(path)}
    one, two = parley_server(env), parley_server(env)
    a = await Client.connect(one, alice, token=user_token(one, alice))
    b = await Client.connect(two, bob, token=user_token(two, bob))
    ringing = await a.request("invite", "call.ringing", to=bob)
    await b.expect("call.incoming")
    await b.send(type="accept", callId=ringing["callId"])
    await a.expect("call.accepted")

    # The attacker asks for alice's identity on the other replica: it becomes a guest.
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{two}/api/v1/guest-token", json={"identity": alice, "name": alice})
    assert r.json()["identity"] != alice
    mallory = await Client.connect(two, r.json()["identity"], token=r.json()["token"])
    assert mallory.welcome["identity"].startswith("guest-")
    await alive(a)  # alice's session was not replaced (no 4409)
    err = await mallory.request("hangup", "error", callId=ringing["callId"])
    assert err["code"] == "unknown_call"  # and the call is not the guest's

    # Reusing a guest token for a second connection does not take over the first.
    async with websockets.connect(ws_url(one, r.json()["token"])) as ws:
        said, code = await refused_with(ws)
    assert (said[0]["code"], code) == ("identity_in_use", 4403)
    await alive(mallory)

    # Only a token the deployment minted for alice takes her session and calls over.
    a2 = await Client.connect(two, alice, token=user_token(two, alice))
    _, code = await refused_with(a.ws)
    assert code == 4409
    await b.send(type="hangup", callId=ringing["callId"])
    ended = await a2.expect("call.ended")
    assert (ended["callId"], ended["reason"]) == (ringing["callId"], "hangup")
    for c in (a2, b, mallory):
        await c.close()

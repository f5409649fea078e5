"""Attack: make the server do expensive work as fast as the socket takes it — place a
participant on the call server (``sfu.join``) again and again, hammer the node with
``sfu.answer``/``sfu.publish``/``sfu.view``, ring another user with ``invite`` after
``invite`` — and keep a guest alive forever by refreshing its token. Each is cut with its
documented refusal (``rate_limited``, ``guest_session_limit``) and the session stays usable
(docs/signaling.md, "Limits" and "Token expiry and refresh")."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription

from parley import tokens
from tests.conftest import eventually
from tests.media.client import PatternVideo
from tests.security.signaling_attack import alive, refused_with, sdp
from tests.signaling.helpers import Client, user_token


async def replies(client: Client, refs: list[str], within: float = 30) -> dict[str, dict]:
    """The reply (a success or an error) to each of ``refs``, by ref."""
    got: dict[str, dict] = {}
    while len(got) < len(refs):
        msg = await client.expect_any(("error", "sfu.joined"), within)
        if msg.get("ref") in refs:
            got[msg["ref"]] = msg
    return got


async def test_sfu_join_floods_never_reach_the_call_server(
        parley_server: Callable[..., str]) -> None:
    base = parley_server()  # defaults: sfu.join 20 burst + 1/s
    flooder = await Client.connect(base, "placer", room="placed")
    await flooder.request("join", "joined", room="placed", topology="sfu")
    started = time.monotonic()
    refs = [f"j{i}" for i in range(60)]
    for ref in refs:  # each asks signaling to place a participant on the node (an HTTP join)
        await flooder.send(type="sfu.join", sdp=sdp("recvonly"), id=ref)
    got = await replies(flooder, refs)
    elapsed = time.monotonic() - started
    limited = [r for r in refs if got[r].get("code") == "rate_limited"]
    asked = [r for r in refs if got[r].get("code") != "rate_limited"]  # the node answered
    assert {got[r].get("code", got[r]["type"]) for r in asked} <= {"sfu_session", "sfu.joined"}
    assert 20 <= len(asked) <= 20 + int(1 * elapsed) + 1, (len(asked), elapsed)
    assert asked[:20] == refs[:20]  # the burst first, then the flood is cut
    assert all(0 < got[r]["retryAfterMs"] <= 1001 for r in limited)
    print(f"sfu.join flood: 60 in {elapsed:.2f}s, {len(asked)} reached the node, "
          f"{len(limited)} rate_limited")
    await alive(flooder)

    async def placed_again() -> dict[str, Any] | None:
        await flooder.send(type="sfu.join", sdp=sdp("recvonly"), id="again")
        reply = (await replies(flooder, ["again"]))["again"]
        return None if reply.get("code") == "rate_limited" else reply

    # once a token has refilled (1/s), sfu.join reaches the node again
    assert (await eventually(placed_again, 3, "an sfu.join past the flood"))["ref"] == "again"
    assert (await flooder.request("leave", "left"))["room"] == "placed"
    await flooder.close()


async def test_sfu_answer_publish_and_view_floods_are_rate_limited(
        parley_server: Callable[..., str]) -> None:
    base = parley_server()  # defaults: sfu.answer + sfu.publish 40 burst + 10/s
    ws = await Client.connect(base, "signaller", room="answered")
    await ws.request("join", "joined", room="answered", topology="sfu")
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver(PatternVideo("signaller-camera"), "sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        joined = await ws.request("sfu.join", "sfu.joined", within=15,
                                  sdp=pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(joined["sdp"], "answer"))
        started = time.monotonic()
        refs = [f"a{i}" for i in range(200)]
        for ref in refs:  # answers nobody asked for: each would be a POST to the node
            await ws.send(type="sfu.answer", sdp=sdp("recvonly"), id=ref)
        await alive(ws)  # the ping is read after every answer: all were handled
        elapsed = time.monotonic() - started
        errors = [m for m in ws.inbox if m["type"] == "error" and m.get("ref") in refs]
        limited = [m for m in errors if m["code"] == "rate_limited"]
        asked = [m for m in errors if m["code"] != "rate_limited"]
        assert {m["code"] for m in asked} <= {"sfu_session"}, asked[:3]
        assert len(limited) >= 200 - 40 - int(10 * elapsed) - 1, (len(limited), elapsed)
        assert all(0 < m["retryAfterMs"] <= 101 for m in limited)
        print(f"sfu.answer flood: 200 in {elapsed:.2f}s, {len(limited)} rate_limited, "
              f"{len(asked)} refused by the node")
        # sfu.publish spends the same budget, which the flood emptied
        ws.inbox.clear()
        started = time.monotonic()
        for i in range(10):
            await ws.send(type="sfu.publish", kinds=["video"], id=f"p{i}")
        await alive(ws)
        elapsed = time.monotonic() - started
        limited = [m for m in ws.inbox if m.get("code") == "rate_limited"]
        assert len(limited) >= 10 - 1 - int(10 * elapsed) - 1, (len(limited), elapsed)
        assert {m["ref"] for m in limited} <= {f"p{i}" for i in range(10)}
        # sfu.view (tile heights, an HTTP call to the node) has a budget of its own: 20 + 5/s
        ws.inbox.clear()
        started = time.monotonic()
        for i in range(100):
            await ws.send(type="sfu.view", views={"t": 90 + i}, id=f"v{i}")
        await alive(ws)
        elapsed = time.monotonic() - started
        limited = [m for m in ws.inbox if m.get("code") == "rate_limited"]
        assert len(limited) >= 100 - 20 - int(5 * elapsed) - 1, (len(limited), elapsed)
        assert {m["ref"] for m in limited} <= {f"v{i}" for i in range(20, 100)}
        print(f"sfu.view flood: 100 in {elapsed:.2f}s, {len(limited)} rate_limited")
    finally:
        await pc.close()
        await ws.close()


async def test_invite_floods_ring_nobody_past_the_budget(
        parley_server: Callable[..., str]) -> None:
    base = parley_server()  # defaults: invite 5 burst + one per 5 s
    caller = await Client.connect(base, "ringer")
    callee = await Client.connect(base, "rung")
    outcomes = []
    for i in range(12):  # ring, cancel, ring again: each allowed invite rings the callee
        await caller.send(type="invite", to="rung", id=f"i{i}")
        reply = await caller.expect_any(("call.ringing", "error"))
        outcomes.append(reply.get("code", reply["type"]))
        if reply["type"] == "call.ringing":
            await caller.send(type="cancel", callId=reply["callId"])
            await caller.expect("call.ended", callId=reply["callId"])
        else:
            assert reply["ref"] == f"i{i}" and 4000 < reply["retryAfterMs"] <= 5001, reply
    assert outcomes[:5] == ["call.ringing"] * 5, outcomes
    assert outcomes[-6:] == ["rate_limited"] * 6, outcomes
    await alive(callee)  # every message for the callee before the pong has arrived
    rung = [m for m in callee.inbox if m["type"] == "call.incoming"]
    assert len(rung) == outcomes.count("call.ringing"), (len(rung), outcomes)
    await alive(caller)
    # the refused caller is still a caller: the callee can ring it
    assert (await callee.request("invite", "call.ringing", to="ringer"))["to"] == "ringer"
    assert (await caller.expect("call.incoming"))["from"] == "rung"
    for c in (caller, callee):
        await c.close()


async def test_a_guest_cannot_refresh_its_token_forever(
        parley_server: Callable[..., str]) -> None:
    secret = secrets.token_urlsafe(24)
    base = parley_server({"PARLEY_TOKEN_SECRET": secret, "PARLEY_GUEST_MAX_SESSION_S": "3",
                          "PARLEY_GUEST_TTL_S": "60"})
    async with httpx.AsyncClient(base_url=base) as http:
        async def guest_refresh(token: str) -> httpx.Response:
            return await http.post("/api/v1/guest-token", json={}, headers={
                "Authorization": f"Bearer {token}"})

        first = (await http.post("/api/v1/guest-token", json={"room": "r"})).json()
        since = tokens.verify(secret, first["token"]).since
        guest = await Client.connect(base, first["identity"], token=first["token"])
        user = await Client.connect(base, "member", token=user_token(base, "member", "r"))
        # young: the endpoint and token.refresh renew it, and the first issue time is kept
        young = await guest_refresh(first["token"])
        assert young.status_code == 200 and young.json()["identity"] == first["identity"]
        assert tokens.verify(secret, young.json()["token"]).since == since
        done = await guest.request("token.refresh", "token.refreshed", token=young.json()["token"])
        assert 55 <= done["expiresIn"] <= 60

        async def refused() -> httpx.Response | None:
            r = await guest_refresh(young.json()["token"])
            return r if r.status_code != 200 else None

        old = await eventually(refused, 10, "the guest-token endpoint refusing an old guest")
        assert old.status_code == 403
        assert old.json()["detail"]["code"] == "guest_session_limit"
        assert old.json()["detail"]["maxSessionS"] == 3
        assert time.time() - since >= 3
    # a token obtained while young does not renew it over the WebSocket either
    err = await guest.request("token.refresh", "error", token=young.json()["token"])
    assert (err["code"], err["maxSessionS"]) == ("guest_session_limit", 3), err
    await alive(guest)  # refused, not cut: it lives on with its current token
    # a registered user's refresh is unchanged by the guest bound
    done = await user.request("token.refresh", "token.refreshed", token=user_token(
        base, "member", "r", ttl_s=120))
    assert 115 <= done["expiresIn"] <= 120
    await alive(user)
    for c in (guest, user):
        await c.close()


async def test_an_old_guest_session_ends_at_its_tokens_expiry(
        parley_server: Callable[..., str]) -> None:
    secret = secrets.token_urlsafe(24)
    base = parley_server({"PARLEY_TOKEN_SECRET": secret, "PARLEY_GUEST_MAX_SESSION_S": "3"})
    now = time.time()
    identity = f"{tokens.GUEST_PREFIX}{secrets.token_hex(4)}"

    def guest_token(ttl_s: int) -> str:  # what the endpoint gave a guest that came 10 s ago
        return tokens.mint(secret, identity=identity, room="r", guest=True, ttl_s=ttl_s,
                           since=int(now) - 10)

    guest = await Client.connect(base, identity, token=guest_token(3))
    err = await guest.request("token.refresh", "error", token=guest_token(600))
    assert err["code"] == "guest_session_limit"
    await alive(guest)
    said, code = await refused_with(guest.ws)  # the expiry of the token it still has
    assert code == 4402 and said[-1]["code"] == "token_expired"
    assert time.time() - now < 3 + 5  # at that expiry, not the refused token's

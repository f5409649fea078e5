"""Bad input: the sender gets an error or a proper close code; others are unaffected."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import websockets

from parley import tokens
from tests.signaling.helpers import Client

SDP = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n")


@pytest.fixture
def server(parley_server: Callable[..., str], token_secret: str) -> str:
    return parley_server({"PARLEY_TOKEN_SECRET": token_secret, "PARLEY_AUTH_TIMEOUT_S": "1"})


def ws_url(base: str, token: str | None = None) -> str:
    return base.replace("http", "ws", 1) + "/ws" + (f"?token={token}" if token else "")


async def closed_with(ws: websockets.ClientConnection) -> tuple[list[dict], int]:
    """Read until the server closes; return what it said and the close code."""
    said = []
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            said.append(json.loads(await ws.recv()))
    assert info.value.rcvd is not None, "the server must close with a code"
    return said, info.value.rcvd.code


async def still_alive(client: Client) -> None:
    pong = await client.request("ping", "pong", id="alive")
    assert pong["ref"] == "alive"


async def test_malformed_json_unknown_types_and_bad_fields_get_errors(server: str) -> None:
    c = await Client.connect(server, "alice")
    cases = [
        ("{not json", "bad_json"), ("[1, 2]", "bad_json"), ('"just a string"', "bad_json"),
        ("[" * 20000 + "]" * 20000, "bad_json"), ("\x00\xff", "bad_json"),
        (json.dumps({"type": "teleport", "id": "t1"}), "unknown_type"),
        (json.dumps({"type": 7}), "bad_message"), (json.dumps({"id": 1}), "bad_message"),
        (json.dumps({"type": "join"}), "bad_message"),
        (json.dumps({"type": "join", "room": "bad room!"}), "bad_message"),
        (json.dumps({"type": "join", "room": "r", "maxFps": "fast"}), "bad_message"),
        (json.dumps({"type": "join", "room": "r", "maxHeight": True}), "bad_message"),
        (json.dumps({"type": "join", "room": "r", "topology": "star"}), "bad_message"),
        (json.dumps({"type": "ice", "to": "bob", "candidate": {"candidate": "x"}}),
         "bad_message"),
        (json.dumps({"type": "invite", "to": ["bob"]}), "bad_message"),
        (json.dumps({"type": "media", "audio": "off"}), "bad_message"),
    ]
    for raw, code in cases:
        await c.ws.send(raw)
        err = await c.expect("error")
        assert err["code"] == code, (raw[:40], err)
    await c.ws.send(b"\xff\xfe binary garbage")
    assert (await c.expect("error"))["code"] == "bad_json"
    unknown = await c.request("teleport", "error", id="t2")
    assert unknown["ref"] == "t2"
    await still_alive(c)


async def test_oversized_frame_closes_only_that_connection(server: str) -> None:
    bystander = await Client.connect(server, "bob")
    big = await Client.connect(server, "alice")
    await big.ws.send(json.dumps({"type": "ping", "pad": "x" * 100_000}))
    _, code = await closed_with(big.ws)
    assert code == 1009
    await still_alive(bystander)


async def test_out_of_order_messages(server: str) -> None:
    a = await Client.connect(server, "alice", room="r1")
    b = await Client.connect(server, "bob", room="r1")
    assert (await a.request("offer", "error", to="bob", sdp=SDP))["code"] == "not_joined"
    assert (await a.request("leave", "error"))["code"] == "not_joined"
    assert (await a.request("accept", "error", callId="nope"))["code"] == "unknown_call"
    assert (await a.request("hangup", "error", callId="nope"))["code"] == "unknown_call"
    assert (await a.request("auth", "error", token="x"))["code"] == "already_authenticated"
    await a.request("join", "joined", room="r1")
    assert (await a.request("join", "error", room="r1"))["code"] == "already_joined"
    assert (await a.request("offer", "error", to="bob", sdp=SDP))["code"] == "peer_not_in_room"
    assert (await a.request("offer", "error", to="alice", sdp=SDP))["code"] == "peer_not_in_room"
    ringing = await a.request("invite", "call.ringing", to="bob")
    assert (await a.request("accept", "error", callId=ringing["callId"]))["code"] == \
        "unknown_call", "only the callee accepts"
    assert (await a.request("hangup", "error", callId=ringing["callId"]))["code"] == "call_state"
    assert (await a.request("invite", "error", to="bob"))["code"] == "already_in_call"
    assert (await a.request("invite", "error", to="alice"))["code"] == "self_call"
    await b.expect("call.incoming")
    await b.request("join", "joined", room="r1")
    await still_alive(a)
    await still_alive(b)


async def test_garbage_sdp_is_refused_and_real_sdp_relayed(server: str) -> None:
    a = await Client.connect(server, "alice", room="r2")
    b = await Client.connect(server, "bob", room="r2")
    await a.request("join", "joined", room="r2")
    await b.request("join", "joined", room="r2")
    for garbage in ["hello", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n", "m=audio 9 x\r\nv=0",
                    "", "v=0\nm=audio 9 " + "a" * 61000]:
        err = await a.request("offer", "error", to="bob", sdp=garbage)
        assert err["code"] in ("bad_sdp", "too_large"), err
    assert (await a.request("answer", "error", to="bob", sdp=12))["code"] == "bad_sdp"
    await a.send(type="offer", to="bob", sdp=SDP, sources={"s1": "camera"})
    offer = await b.expect("offer")
    assert (offer["from"], offer["sdp"], offer["sources"]) == ("alice", SDP, {"s1": "camera"})
    assert not [m for m in b.inbox if m["type"] == "offer"], "garbage never reached bob"
    await a.send(type="ice", to="bob", candidate=None)
    assert (await b.expect("ice"))["candidate"] is None


async def test_invalid_expired_and_missing_tokens_get_close_codes(server: str,
                                                                  token_secret: str) -> None:
    bystander = await Client.connect(server, "carol")
    async with websockets.connect(ws_url(server, "not.a.token")) as ws:
        said, code = await closed_with(ws)
        assert (said[0]["code"], code) == ("token_invalid", 4401)
    forged = tokens.mint("another-secret-of-32-bytes-or-more!!", identity="mallory", room="*")
    async with websockets.connect(ws_url(server, forged)) as ws:
        said, code = await closed_with(ws)
        assert (said[0]["code"], code) == ("token_invalid", 4401)
    expired = tokens.mint(token_secret, identity="old", room="*", ttl_s=10,
                          now=time.time() - 120)
    async with websockets.connect(ws_url(server, expired)) as ws:
        said, code = await closed_with(ws)
        assert (said[0]["code"], code) == ("token_expired", 4402)
    async with websockets.connect(ws_url(server)) as ws:  # never authenticates
        said, code = await closed_with(ws)
        assert (said[0]["code"], code) == ("not_authenticated", 4408)
    async with websockets.connect(ws_url(server)) as ws:  # speaks before auth
        await ws.send(json.dumps({"type": "join", "room": "r"}))
        said, code = await closed_with(ws)
        assert (said[0]["code"], code) == ("not_authenticated", 4401)
    good = tokens.mint(token_secret, identity="dave", room="r3")
    async with websockets.connect(ws_url(server)) as ws:  # token in the first message
        await ws.send(json.dumps({"type": "auth", "token": good}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(json.dumps({"type": "join", "room": "elsewhere"}))
        err = json.loads(await ws.recv())
        assert (err["type"], err["code"]) == ("error", "token_invalid")
    no_subscribe = tokens.mint(token_secret, identity="eve", room="r3", grants=("record",))
    eve = await Client.connect(server, "eve", token=no_subscribe)
    assert (await eve.request("join", "error", room="r3"))["code"] == "grant_missing"
    await still_alive(bystander)


async def test_a_second_connection_of_the_same_user_replaces_the_first(server: str) -> None:
    first = await Client.connect(server, "alice")
    second = await Client.connect(server, "alice")
    _, code = await closed_with(first.ws)
    assert code == 4409
    await still_alive(second)

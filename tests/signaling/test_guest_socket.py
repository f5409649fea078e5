"""A guest identity made by the WebSocket itself (``/ws?guest=1&room=&name=``): the same
identity rule, grants, lifetime and checks as ``POST /api/v1/guest-token``, and the token in the
welcome works for the HTTP API (its refresh). Real `parley up`, real WebSocket clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import websockets

from parley import tokens
from tests.conftest import SERVER_SECRETS
from tests.security.signaling_attack import refused_with
from tests.signaling.helpers import Client, guest_token, user_token


def guest_url(base: str, **query: str) -> str:
    return base.replace("http", "ws", 1) + "/ws?" + urlencode({"guest": "1", **query})


async def refusal(base: str, **query: str) -> tuple[list[dict[str, Any]], int]:
    """What the server said before closing a guest socket it refused, and the close code."""
    async with websockets.connect(guest_url(base, **query)) as ws:
        return await refused_with(ws)


async def test_a_socket_guest_is_a_guest_token_guest(parley_server: Callable[..., str]) -> None:
    base = parley_server()
    ws = await websockets.connect(guest_url(base, room="r1", name="Ann Lee"), max_size=None)
    guest = Client(ws, "")
    welcome = guest.welcome = await guest.expect("welcome")
    guest.identity = welcome["identity"]
    # the identity is server-made and the token is what the endpoint would have given
    assert welcome["identity"].startswith(tokens.GUEST_PREFIX) and welcome["guest"] is True
    claims = tokens.verify(SERVER_SECRETS[base], welcome["token"])
    assert (claims.identity, claims.room, claims.name, claims.guest) == (
        welcome["identity"], "r1", "Ann Lee", True)
    endpoint = guest_token(base, room="r1", name="Ann Lee")
    assert sorted(claims.grants) == endpoint["grants"] == welcome["grants"]
    assert abs(welcome["expiresIn"] - endpoint["expiresIn"]) <= 2
    assert welcome["identity"] != endpoint["identity"]
    # its room is the one it asked for, and only that one
    joined = await guest.request("join", "joined", room="r1")
    assert joined["room"] == "r1"
    await guest.send(type="leave")
    err = await guest.request("join", "error", room="r2")
    assert err["code"] == "token_invalid"
    # the welcome's token is the page's for the HTTP API: its refresh keeps the identity
    async with httpx.AsyncClient(base_url=base) as http:
        fresh = (await http.post("/api/v1/guest-token", json={}, headers={
            "authorization": f"Bearer {welcome['token']}"})).json()
    assert fresh["identity"] == welcome["identity"]
    assert (await guest.request("token.refresh", "token.refreshed", token=fresh["token"]))
    # a token's socket gets no token back in its welcome
    user = await Client.connect(base, "bob", token=user_token(base, "bob"))
    assert "token" not in user.welcome
    await guest.ws.close()
    await user.ws.close()


async def test_bad_guest_sockets_get_a_clear_error(parley_server: Callable[..., str]) -> None:
    base = parley_server()
    for query, code in (({"room": "r 1", "name": "x"}, "bad_request"),
                        ({"room": "r", "name": "a\nb"}, "bad_request"),
                        ({"room": "r", "name": "x" * 65}, "bad_request"),
                        ({"room": "broadcast:b", "name": "x"}, "broadcast_room")):
        said, close = await refusal(base, **query)
        assert [m["code"] for m in said] == [code] and said[0]["message"]
        assert close == 4401
    # the server is unharmed: a good guest socket still gets in
    async with websockets.connect(guest_url(base, room="r", name="x")) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"


async def test_no_socket_guests_where_guests_are_off(parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_ALLOW_GUESTS": "0"})
    said, close = await refusal(base, room="r", name="x")
    assert [m["code"] for m in said] == ["guests_disabled"] and close == 4401


async def test_a_join_sent_as_the_socket_opens_is_taken_once(
        parley_server: Callable[..., str]) -> None:
    """The web client's early.js sends media and join as soon as its socket is open, before
    the welcome arrived: the server reads nothing before it sends the welcome, so the join is
    taken after it, in order. A second join, a malformed one, and a join sent first on a socket
    that still has to authenticate each get a clear error; the session goes on."""
    base = parley_server()
    async with websockets.connect(guest_url(base, room="early", name="Ann")) as ws:
        await ws.send(json.dumps({"type": "media", "audio": False, "video": True}))
        await ws.send(json.dumps({"type": "join", "room": "early", "id": "j1"}))
        await ws.send(json.dumps({"type": "join", "room": "early", "id": "j2"}))
        await ws.send(json.dumps({"type": "join", "id": "j3"}))
        guest = Client(ws, "")
        types = [json.loads(await ws.recv())["type"]]
        while types[-1] != "joined":
            types.append(json.loads(await ws.recv())["type"])
        assert types[0] == "welcome" and "error" not in types, types
        again = await guest.expect("error")
        assert (again["code"], again["ref"]) == ("already_joined", "j2") and again["message"]
        bad = await guest.expect("error")
        assert (bad["code"], bad["ref"]) == ("bad_message", "j3") and "room" in bad["message"]
        assert (await guest.request("ping", "pong"))["type"] == "pong"
    # a socket without a token in its URL must authenticate first: a join is refused, clearly
    async with websockets.connect(base.replace("http", "ws", 1) + "/ws") as ws:
        await ws.send(json.dumps({"type": "join", "room": "early"}))
        said, close = await refused_with(ws)
        assert [m["code"] for m in said] == ["not_authenticated"] and close == 4401

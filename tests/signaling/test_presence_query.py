"""The ``presence`` query (docs/signaling.md, "Presence for the people panel") against a real
`parley up`: a user learns who of the users they may call is online, nothing about the others;
a guest learns nothing; an offline user shows as offline at once."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.signaling.helpers import Client, guest_token, user_token


async def test_presence_shows_only_whom_the_user_may_call(
        parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server()
    ann, ben, cy = uniq("ann"), uniq("ben"), uniq("cy")
    admin = user_token(base, "ops", "*", grants=("admin",))
    async with httpx.AsyncClient(base_url=base,
                                 headers={"Authorization": f"Bearer {admin}"}) as http:
        (await http.put("/api/v1/users-policy", json={"policy": "contacts"})).raise_for_status()
        (await http.put(f"/api/v1/users/{ann}", json={"contacts": [ben]})).raise_for_status()
    a = await Client.connect(base, ann)
    b = await Client.connect(base, ben)
    c = await Client.connect(base, cy)  # online, but not one of Ann's contacts
    reply = await a.request("presence", "presence", ids=[ben, cy, ann, "nobody-here"], id="p1")
    assert reply == {"type": "presence", "online": {ben: True}, "ref": "p1"}
    # Ben sees Ann (she lists him: the contacts policy goes both ways), Cy sees neither
    assert (await b.request("presence", "presence", ids=[ann, cy]))["online"] == {ann: True}
    assert (await c.request("presence", "presence", ids=[ann, ben]))["online"] == {}
    await b.close()
    gone = await a.request("presence", "presence", ids=[ben])
    assert gone["online"] == {ben: False}  # the session ended: offline at once, no TTL wait
    # a guest learns nothing; bad input is refused with the documented codes
    guest = await Client.connect(base, "guest", token=guest_token(base)["token"])
    err = await guest.request("presence", "error", ids=[ann], id="g")
    assert (err["code"], err["ref"]) == ("presence_not_allowed", "g")
    assert (await a.request("presence", "error", ids=[]))["code"] == "bad_message"
    assert (await a.request("presence", "error", ids=["x"] * 101))["code"] == "bad_message"
    # polling is bounded: a burst beyond the budget is refused with retryAfterMs
    for _ in range(12):
        await a.send(type="presence", ids=[ben])
    limited = await a.expect("error", code="rate_limited")
    assert limited["retryAfterMs"] > 0
    for client in (a, c, guest):
        await client.close()

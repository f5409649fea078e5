"""`parley up` includes a call server: its control API at /media, media through it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from parley import tokens

from .client import Client, wait_for

SECRET = "embedded-call-server-test-secret-32-bytes"


async def test_parley_up_serves_a_call_server(parley_server: Callable[..., str]) -> None:
    """The control API shares the public port with the web client, so it needs the control
    key (derived from the token secret): a browser, or a client's access token, cannot drive
    it; probes stay open."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    media = f"{base}/media"
    key = tokens.control_headers(SECRET)
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{media}/readyz")).status_code == 200
        assert (await http.get(f"{media}/livez")).status_code == 200
        refused = await http.get(f"{media}/v1/status")
        assert refused.status_code == 401
        assert refused.json()["detail"]["code"] == "control_key_invalid"
        access = tokens.mint(SECRET, identity="a", room="up", grants=("admin",))
        for headers in ({"Authorization": f"Bearer {access}"},
                        tokens.control_headers("another-secret-of-enough-length")):
            assert (await http.post(f"{media}/v1/drain", json={"deadline": 1},
                                    headers=headers)).status_code == 401
        status = (await http.get(f"{media}/v1/status", headers=key)).json()
    assert status["id"] == "embedded" and status["url"] == media and not status["draining"]
    a, b = Client("a", "up", headers=key), Client("b", "up", headers=key)
    try:
        await a.join(media)
        await b.join(media)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 20,
                       "decoding through the embedded call server")
    finally:
        await asyncio.gather(a.close(), b.close())

"""`parley up` includes a call server: its control API at /media, media through it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from .client import Client, wait_for


async def test_parley_up_serves_a_call_server(parley_server: Callable[..., str]) -> None:
    base = parley_server()
    media = f"{base}/media"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{media}/readyz")).status_code == 200
        status = (await http.get(f"{media}/v1/status")).json()
    assert status["id"] == "embedded" and status["url"] == media
    a, b = Client("a", "up"), Client("b", "up")
    try:
        await a.join(media)
        await b.join(media)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 20,
                       "decoding through the embedded call server")
    finally:
        await asyncio.gather(a.close(), b.close())

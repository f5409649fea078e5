"""Recording fixtures: a real call server (in-process or a `parley media-node` process), signaling
on a real port wired to it, a webhook receiver, and aiortc participants (tests/media/client.py)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from parley import tokens
from parley.config import Settings
from parley.signaling.app import create_app
from parley.signaling.hub import Hub
from parley.signaling.negotiation import Placement
from tests.conftest import free_port
from tests.media.client import TEST_SECRET


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run an ASGI app on a free port of 127.0.0.1 in this event loop."""
    port = free_port()
    userver = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                            log_level="warning"))
    task = asyncio.ensure_future(userver.serve())
    for _ in range(500):
        if userver.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        userver.should_exit = True
        await task


class FixedDirectory:
    """Places every room on one call server URL (what Redis placement would answer)."""

    def __init__(self, url: str, node: str) -> None:
        self.url, self.node = url, node

    async def place(self, room: str, participants: int, caps: list[Any]) -> Placement | None:
        return Placement(url=self.url, node=self.node)


@dataclass
class Webhooks:
    """Captures webhook deliveries: (headers, raw body)."""

    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> dict[str, bool]:
            self.received.append((dict(request.headers), await request.body()))
            return {"ok": True}

        return app


@dataclass
class Stack:
    base: str
    secret: str
    hub: Hub
    webhooks: Webhooks
    http: httpx.AsyncClient

    def token(self, identity: str, room: str, grants: tuple[str, ...] = ("publish", "subscribe"),
              ttl_s: int = 600) -> str:
        return tokens.mint(self.secret, identity=identity, room=room, grants=grants, ttl_s=ttl_s)

    async def control(self, room: str, action: str, token: str) -> httpx.Response:
        return await self.http.post(f"{self.base}/api/v1/rooms/{room}/recording",
                                    json={"action": action},
                                    headers={"Authorization": f"Bearer {token}"})

    async def recordings(self, room: str, token: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.base}/api/v1/recordings", params={"room": room},
                                headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        return r.json()["recordings"]

    async def wait_ready(self, room: str, token: str, limit: float = 120) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + limit
        while True:
            recs = await self.recordings(room, token)
            if recs and recs[-1]["state"] in ("ready", "failed"):
                return recs[-1]
            assert asyncio.get_running_loop().time() < deadline, f"not ready: {recs}"
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def signaling(tmp_path: Path, directory: Any, monkeypatch: pytest.MonkeyPatch,
                    store_url: str | None = None, chunk_s: float = 2.0,
                    file_creator: str = "inline") -> AsyncIterator[Stack]:
    """Signaling with the recording API on a real port, a webhook receiver beside it."""
    hooks = Webhooks()
    async with serve(hooks.app()) as hook_base:
        hooks.url = f"{hook_base}/hook"
        monkeypatch.setenv("PARLEY_RECORDING_WEBHOOK_URL", hooks.url)
        monkeypatch.setenv("PARLEY_RECORDING_WEBHOOK_SECRET", hooks.secret)
        monkeypatch.setenv("PARLEY_RECORDING_CHUNK_S", str(chunk_s))
        if store_url:
            monkeypatch.setenv("PARLEY_RECORDING_STORE", store_url)
        else:
            monkeypatch.delenv("PARLEY_RECORDING_STORE", raising=False)
        secret = TEST_SECRET  # the test call servers hold its control key
        settings = Settings(token_secret=secret, data_dir=tmp_path / "signaling",
                            file_creator=file_creator)
        hub = Hub(settings, directory=directory)
        async with serve(create_app(settings, hub)) as base, httpx.AsyncClient(
                timeout=30) as http:
            yield Stack(base, secret, hub, hooks, http)

"""A protocol-level client (websockets) for signaling tests: real server, real frames."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import websockets

from parley import tokens
from tests.conftest import SERVER_SECRETS


def guest_token(base: str, room: str = "lobby", name: str = "Guest") -> dict[str, Any]:
    """A real guest's token response: the server makes the identity (``guest-<hex>``)."""
    resp = httpx.post(f"{base}/api/v1/guest-token", json={"room": room, "name": name})
    resp.raise_for_status()
    return resp.json()


def user_token(base: str, identity: str, room: str = "lobby", name: str | None = None,
               grants: tuple[str, ...] = tokens.DEFAULT_GRANTS, ttl_s: int = 3600) -> str:
    """A token the deployment minted for ``identity`` (what its login or `parley token` gives),
    signed with the secret of the server at ``base`` (tests/conftest.py SERVER_SECRETS)."""
    return tokens.mint(SERVER_SECRETS[base], identity=identity, room=room, name=name or identity,
                       grants=grants, ttl_s=ttl_s)


class Client:
    """One signaling connection; ``expect`` waits for a message type, keeping the others."""

    def __init__(self, ws: Any, identity: str) -> None:
        self.ws = ws
        self.identity = identity
        self.inbox: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def connect(cls, base: str, identity: str, room: str = "lobby",
                      token: str | None = None) -> Client:
        token = token or user_token(base, identity, room)
        ws = await websockets.connect(base.replace("http", "ws", 1) + "/ws?token=" + token,
                                      max_size=None)
        client = cls(ws, identity)
        client.welcome = await client.expect("welcome")
        return client

    async def send(self, **msg: Any) -> None:
        await self.ws.send(json.dumps(msg))

    async def expect(self, mtype: str, within: float = 5, **match: Any) -> dict[str, Any]:
        for i, msg in enumerate(self.inbox):
            if msg["type"] == mtype and all(msg.get(k) == v for k, v in match.items()):
                return self.inbox.pop(i)
        async with asyncio.timeout(within):
            while True:
                msg = json.loads(await self.ws.recv())
                if msg["type"] == mtype and all(msg.get(k) == v for k, v in match.items()):
                    return msg
                self.inbox.append(msg)

    async def expect_any(self, mtypes: tuple[str, ...], within: float = 5) -> dict[str, Any]:
        """The first message of any of ``mtypes`` (a reply that may be an error)."""
        for i, msg in enumerate(self.inbox):
            if msg["type"] in mtypes:
                return self.inbox.pop(i)
        async with asyncio.timeout(within):
            while True:
                msg = json.loads(await self.ws.recv())
                if msg["type"] in mtypes:
                    return msg
                self.inbox.append(msg)

    async def request(self, mtype: str, reply: str, within: float = 5,
                      **fields: Any) -> dict[str, Any]:
        await self.send(type=mtype, **fields)
        return await self.expect(reply, within)

    async def close(self) -> None:
        await self.ws.close()

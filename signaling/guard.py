"""The HTTP server's front door: which Host names and Origins it answers, and how big a request
body may be (docs/signaling.md, "Limits").

A page on another site that resolves its own name to 127.0.0.1 (DNS rebinding) sends its own
Host header, and a cross-site page opening a WebSocket sends its own Origin: both are refused
before any route runs. Bodies are read up to the bound before the route sees them.

``/live/`` (WHIP/WHEP/LL-HLS, docs/broadcast.md) is exempt from the Origin check only: it
answers ``Access-Control-Allow-Origin: *`` because a publisher or player on another site is the
point, a WHIP publish or a cut needs a bearer token (a header a cross-site page cannot borrow
from the browser: no cookies are involved), and what needs none (WHEP, playlists) is public.
The Host check and the body bound still apply there.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
CROSS_ORIGIN_PREFIXES = ("/live/",)  # token-authorized or public, with CORS: see above
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def host_of(value: str) -> str:
    """``example.org:8080`` -> ``example.org``; ``[::1]:80`` -> ``::1``; lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: Host in ``hosts`` (or ``*``), Origin (when sent) a host of ``hosts`` or
    the request's own host, request bodies at most ``max_body`` bytes."""

    def __init__(self, app: App, hosts: frozenset[str], max_body: int) -> None:
        self.app = app
        self.hosts = hosts
        self.any_host = "*" in hosts
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = host_of(headers.get("host", ""))
        if not self.any_host and host not in self.hosts:
            await self._refuse(scope, send, 421, "host_not_allowed",
                               f"this server does not answer to host {host[:64]!r} "
                               "(PARLEY_ALLOWED_HOSTS)")
            return
        origin = headers.get("origin")
        if origin is not None and not scope.get("path", "").startswith(CROSS_ORIGIN_PREFIXES):
            ohost = (urlsplit(origin).hostname or "").lower()
            if not ohost or (ohost not in self.hosts and ohost != host):
                await self._refuse(scope, send, 403, "origin_not_allowed",
                                   f"requests from origin {origin[:80]!r} are not allowed")
                return
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
            await self._bounded(scope, receive, send, headers)
            return
        await self.app(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send,
                       headers: dict[str, str]) -> None:
        """Read the body up to the bound, then hand it to the app in one piece."""
        try:
            declared = int(headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        too_big = f"request bodies are limited to {self.max_body} bytes"
        if declared > self.max_body:
            await self._refuse(scope, send, 413, "body_too_large", too_big)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                await self._refuse(scope, send, 413, "body_too_large", too_big)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps({"detail": {"code": code, "message": message}}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # refused handshake: the server answers 403
            await send({"type": "websocket.close", "code": 1008})

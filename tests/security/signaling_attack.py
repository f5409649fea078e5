"""Shared pieces of the attacks on signaling (tests/security/test_{identity,grants,tokens,
floods,origin}.py): session descriptions with chosen directions, and liveness checks."""

from __future__ import annotations

import json
from typing import Any

import websockets

from tests.signaling.helpers import Client


def sdp(*directions: str) -> str:
    """A session description with one m-line per direction (audio first, then video)."""
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for i, direction in enumerate(directions):
        kind = "audio" if i == 0 else "video"
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", f"a=mid:{i}",
                  f"a={direction}", "a=rtpmap:96 opus/48000/2" if kind == "audio"
                  else "a=rtpmap:96 VP8/90000"]
    return "\r\n".join(lines) + "\r\n"


async def alive(client: Client) -> None:
    """The session is still up and answering."""
    assert (await client.request("ping", "pong"))["type"] == "pong"


async def refused_with(ws: websockets.ClientConnection) -> tuple[list[dict[str, Any]], int]:
    """Messages until the server closes the connection, and the close code."""
    said: list[dict[str, Any]] = []
    try:
        async for frame in ws:
            said.append(json.loads(frame))
    except websockets.ConnectionClosed:
        pass
    assert ws.close_code is not None
    return said, ws.close_code


def ws_url(base: str, token: str) -> str:
    return base.replace("http", "ws", 1) + "/ws?token=" + token

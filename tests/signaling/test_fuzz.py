"""Fuzz: >= 10,000 random and mutated messages at a live server while a real call goes on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.signaling.browser import close, open_client, wait_media
from tests.signaling.helpers import Client, user_token

SDP = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n")
TYPES = ["auth", "ping", "join", "leave", "caps", "media", "offer", "answer", "ice", "invite",
         "accept", "reject", "cancel", "hangup", "welcome", "error", "", "JOIN", "offer\x00"]
WEIRD: list[Any] = [None, True, False, 0, -1, 2**63, 1e308, -0.0, "", "x" * 300, "\u202e\ud7ff",
                    [], {}, [[[]]], {"a": {"b": {}}}, "v=0", "candidate:1 1 udp 1 1.2.3.4 5 typ"]


def templates(targets: list[str]) -> list[dict[str, Any]]:
    to = random.choice(targets)
    return [
        {"type": "join", "room": f"fuzz-{random.randint(0, 3)}", "maxHeight": 360,
         "codecs": ["VP8", "opus"], "topology": random.choice(["auto", "p2p", "sfu"])},
        {"type": "leave"}, {"type": "ping", "id": random.randint(0, 9)},
        {"type": "caps", "bandwidthKbps": random.randint(50, 5000), "maxFps": 15},
        {"type": "media", "audio": random.random() < 0.5, "video": random.random() < 0.5},
        {"type": "offer", "to": to, "sdp": SDP, "sources": {"s": "screen"}},
        {"type": "answer", "to": to, "sdp": SDP},
        {"type": "ice", "to": to, "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 "
                                                "typ host", "sdpMid": "0"}},
        {"type": "invite", "to": to},
        {"type": random.choice(["accept", "reject", "cancel", "hangup"]),
         "callId": random.choice(["0" * 16, "abc", to])},
    ]


def mutate(msg: dict[str, Any]) -> str | bytes:
    """One of: valid, field dropped/retyped/added, type swapped, text truncated/flipped/bytes."""
    msg = dict(msg)
    op = random.randrange(9)
    if op == 1 and len(msg) > 1:
        msg.pop(random.choice([k for k in msg if k != "type"]))
    elif op == 2:
        msg[random.choice(list(msg))] = random.choice(WEIRD)
    elif op == 3:
        msg[random.choice(["x", "to", "sdp", "room", "id", "candidate"])] = random.choice(WEIRD)
    elif op == 4:
        msg["type"] = random.choice(TYPES)
    raw = json.dumps(msg)
    if op == 5:
        return raw[: random.randrange(len(raw))]
    if op == 6:
        chars = list(raw)
        for _ in range(random.randint(1, 5)):
            chars[random.randrange(len(chars))] = chr(random.randrange(0x20, 0x7f))
        return "".join(chars)
    if op == 7:
        return bytes(random.getrandbits(8) for _ in range(random.randint(1, 64)))
    if op == 8:
        return json.dumps(random.choice(WEIRD))
    return raw


async def fuzz_connection(base: str, identity: str, targets: list[str], count: int,
                          stats: dict[str, int]) -> None:
    """Send ``count`` messages, reconnecting whenever the server closes us (as it may)."""
    sent = 0
    while sent < count:
        token = user_token(base, identity, room=f"fuzz-{random.randint(0, 3)}")
        url = base.replace("http", "ws", 1) + "/ws?token=" + token
        try:
            async with websockets.connect(url, max_size=None) as ws:
                async def drain(ws: Any = ws) -> None:
                    async for frame in ws:
                        if json.loads(frame).get("type") == "error":
                            stats["errors"] += 1
                reader = asyncio.create_task(drain())
                while sent < count:
                    await ws.send(mutate(random.choice(templates(targets))))
                    sent += 1
                    stats["sent"] += 1
                    if sent % 50 == 0:
                        await asyncio.sleep(0.01)  # let the call's own traffic through
                await asyncio.sleep(0.5)
                reader.cancel()
        except websockets.ConnectionClosed:
            stats["closed"] += 1


def run_async(make: Callable[[], Any]) -> Any:
    """Run a coroutine in its own thread: Playwright's sync API owns this thread's loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@pytest.mark.browser
def test_fuzz_ten_thousand_messages_while_a_call_keeps_working(
        browser, parley_server: Callable[..., str], tmp_path: Path) -> None:
    random.seed(20261125)
    base = parley_server()
    a = open_client(browser, f"{base}/m/fuzzed?name=A&user=fa")
    b = open_client(browser, f"{base}/m/fuzzed?name=B&user=fb")
    try:
        before = wait_media(a, [("fb", "video", "camera"), ("fb", "audio", "microphone")])
        frames_before = max(r["framesDecoded"] for r in before["inbound"] if r["kind"] == "video")
        stats = {"sent": 0, "errors": 0, "closed": 0}
        targets = ["fa", "fb", "fz0", "fz1", "fz2", "nobody", "x" * 200]

        async def fuzz() -> None:
            await asyncio.gather(*(fuzz_connection(base, f"fz{i}", targets, 2600, stats)
                                   for i in range(4)))

        started = time.monotonic()
        run_async(fuzz)
        elapsed = time.monotonic() - started
        assert stats["sent"] >= 10_000, stats
        assert stats["errors"] >= 3000, stats  # most mutations are refused, one by one
        print(f"fuzz: {stats} in {elapsed:.1f}s")

        after = wait_media(a, [("fb", "video", "camera")], frames=frames_before + 30)
        assert {r["participant"] for r in after["inbound"]} == {"fb"}
        wait_media(b, [("fa", "video", "camera"), ("fa", "audio", "microphone")])
        assert a.evaluate("window.parley.state.error") is None
        assert httpx.get(f"{base}/healthz").text == "ok"
        metrics = httpx.get(f"{base}/metrics").text
        assert 'parley_signaling_errors_total{code="internal"}' not in metrics
        log = (tmp_path / f"parley-{base.rsplit(':', 1)[1]}.log").read_text()
        assert "Traceback" not in log, log[-3000:]

        async def fresh_client_works() -> None:
            c = await Client.connect(base, "after")
            assert (await c.request("ping", "pong"))["type"] == "pong"
            await c.close()

        run_async(fresh_client_works)
    finally:
        close(a, b)

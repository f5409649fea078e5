"""People panel: how soon a contact's coming and going reaches a watcher as a `presence` push,
and how long a page of a direct-message conversation takes, across two signaling replicas.

Two `parley signaling` processes share a Redis (the test bed's by default). Bob connects to
replica one and subscribes (`presence.subscribe`) to Alice and ``--watched`` - 1 others; Alice
then connects to replica two and closes again, ``--rounds`` times: the time from opening Alice's
WebSocket to Bob's `presence {alice: true}`, and from Alice's close to `{alice: false}`, are
recorded (the close is measured from the client's close handshake, which includes its round
trip). Then Alice sends ``--messages`` direct messages to Bob and Bob asks for pages of 50 of
their conversation from replica one (`chat.history`), ``--rounds`` times. The same runs against
one `parley up` (memory) for comparison. Results in bench/results/presence.json.

    python -m bench.presence                       # the test bed's Redis
    python -m bench.presence --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import websockets

from parley.tokens import mint

from .load import percentile
from .signaling import Client, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-presence-secret-of-32-bytes-or-more"


class Replica:
    """A `parley signaling` (with Redis) or `parley up` (without) subprocess."""

    def __init__(self, redis_url: str | None, data: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "PARLEY_TOKEN_SECRET": SECRET, "PARLEY_DATA_DIR": str(data),
               # the conversation is filled quickly; the per-sender rate is not measured here
               "PARLEY_RATE_CHAT_PER_S": "10000", "PARLEY_RATE_CHAT_BURST": "10000"}
        args = ["signaling"] if redis_url else ["up", "--data-dir", str(data)]
        if redis_url:
            env["PARLEY_REDIS_URL"] = redis_url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", *args, "--host", "127.0.0.1", "--port",
             str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self) -> None:
        for _ in range(300):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError("replica did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def connect(port: int, identity: str) -> Client:
    token = mint(SECRET, identity=identity, room="*", ttl_s=3600)
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?token={token}", ping_interval=None)
    client = Client(ws, identity)
    await asyncio.wait_for(client.wait("welcome"), 10)
    return client


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.5), 2),
            "p95_ms": round(percentile(ms, 0.95), 2), "max_ms": round(ms[-1], 2)}


async def measure(ports: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    watched = [alice] + [f"other{i}-{tag}" for i in range(args.watched - 1)]
    b = await connect(ports[0], bob)
    answer = b.wait("presence")
    await b.ws.send(json.dumps({"type": "presence.subscribe", "ids": watched}))
    await asyncio.wait_for(answer, 10)
    online, offline = [], []
    for _ in range(args.rounds):
        push = b.wait("presence")
        t0 = time.perf_counter()
        a = await connect(ports[1], alice)
        assert (await asyncio.wait_for(push, 10))["online"] == {alice: True}
        online.append(time.perf_counter() - t0)
        push = b.wait("presence")
        t0 = time.perf_counter()
        await a.ws.close()
        assert (await asyncio.wait_for(push, 10))["online"] == {alice: False}
        offline.append(time.perf_counter() - t0)
    a = await connect(ports[1], alice)
    for i in range(args.messages):
        sent = a.wait("chat.sent")
        await a.ws.send(json.dumps({"type": "chat.send", "to": bob, "text": f"message {i}",
                                    "clientId": f"{tag}{i}"}))
        await asyncio.wait_for(sent, 10)
    pages = []
    for _ in range(args.rounds):
        page = b.wait("chat.history")
        t0 = time.perf_counter()
        await b.ws.send(json.dumps({"type": "chat.history", "with": alice, "limit": 50}))
        assert len((await asyncio.wait_for(page, 10))["messages"]) == min(50, args.messages)
        pages.append(time.perf_counter() - t0)
        await asyncio.sleep(0.25)  # within chat.history's budget (5/s)
    await a.ws.close()
    await b.ws.close()
    return {"online_push": summary(online), "offline_push": summary(offline),
            "history_page_50": summary(pages)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": args.rounds, "watched": args.watched,
                           "messages": args.messages, "host": platform.node(),
                           "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                          time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="parley-presence-") as tmp:
        one, two = Replica(args.redis_url, Path(tmp)), Replica(args.redis_url, Path(tmp))
        mem = Replica(None, Path(tmp) / "memory")
        try:
            for r in (one, two, mem):
                await r.ready()
            out["redis_two_replicas"] = await measure((one.port, two.port), args)
            out["memory_one_process"] = await measure((mem.port, mem.port), args)
        finally:
            for r in (one, two, mem):
                r.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=None, help="default: the test bed's")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--watched", type=int, default=100, help="users Bob subscribes to")
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args(argv)
    if not args.redis_url:
        env = ROOT / ".testbed" / "env"
        args.redis_url = dict(line.split("=", 1) for line in env.read_text().splitlines()
                              if "=" in line)["REDIS_URL"]
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "presence.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

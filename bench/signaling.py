"""Signaling capacity: concurrent WebSocket clients held by one process, and invite-to-ringing
latency while they are all connected.

One `parley up` process (embedded defaults: in-memory presence, JSONL events) is started; clients
are opened in batches from this process (the load generator, on the same 2 cores), each holding a
real authenticated WebSocket. With all of them connected and each pinging every
``--ping-interval``, ``--invites`` callers invite distinct callees one after another at a steady
rate and the time from sending ``invite`` to receiving
``call.ringing`` is recorded; each call is then cancelled. Server CPU and memory come from /proc.

    python -m bench.signaling                 # 5,000 clients, 300 invites
    python -m bench.signaling --clients 500   # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from parley.tokens import mint

from .load import cpu_seconds, percentile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-signaling-secret"


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `parley up` subprocess with a known token secret."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="parley-bench-")
        env = {**os.environ, "PARLEY_TOKEN_SECRET": SECRET}
        self.log = open(Path(self.dir.name) / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "up", "--port", str(self.port), "--data-dir",
             self.dir.name], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, within_s: float = 30) -> None:
        """Block until the server accepts connections (it prints its URL when bound)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"parley up exited: {self.tail()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("parley up did not start")

    def tail(self) -> str:
        return (Path(self.dir.name) / "server.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.dir.cleanup()


class Client:
    """One connected identity; routes the frames it receives to waiting futures by type."""

    def __init__(self, ws: Any, identity: str) -> None:
        self.ws = ws
        self.identity = identity
        self.waiters: dict[str, asyncio.Future[dict]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            msg = json.loads(frame)
            fut = self.waiters.pop(msg.get("type", ""), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def wait(self, mtype: str) -> asyncio.Future[dict]:
        fut = asyncio.get_running_loop().create_future()
        self.waiters[mtype] = fut
        return fut


async def connect(port: int, identity: str) -> Client:
    token = mint(SECRET, identity=identity, room="*", ttl_s=7200)
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?token={token}", max_size=2**20,
                                  ping_interval=None, open_timeout=60)
    client = Client(ws, identity)
    welcome = client.wait("welcome")
    await asyncio.wait_for(welcome, 60)
    return client


async def background_pings(clients: list[Client], interval_s: float) -> None:
    """Every client sends a `ping` every ``interval_s``, spread evenly: the heartbeat traffic a
    real population of connected clients puts on the server while invites are measured."""
    tick = 0.02
    per_tick = max(1, round(len(clients) * tick / interval_s))
    i = 0
    while True:
        for _ in range(per_tick):
            await clients[i % len(clients)].ws.send('{"type":"ping"}')
            i += 1
        await asyncio.sleep(tick)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = Server()
    server.wait_ready()
    pid = server.proc.pid
    rss0 = proc_rss_mb(pid)
    clients: list[Client] = []
    try:
        t0 = time.monotonic()
        cpu0 = cpu_seconds(pid)
        for start in range(0, args.clients, args.batch):
            batch = range(start, min(start + args.batch, args.clients))
            clients += await asyncio.gather(*(connect(server.port, f"u{i}") for i in batch))
            print(f"\r  connected {len(clients)}/{args.clients}", end="", flush=True)
        connect_s = time.monotonic() - t0
        connect_cpu = cpu_seconds(pid) - cpu0
        print()
        await asyncio.sleep(1)
        rss_connected = proc_rss_mb(pid)
        alive_before = sum(1 for c in clients if not c.reader.done())

        pinger = asyncio.create_task(background_pings(clients, args.ping_interval))
        latencies: list[float] = []
        failures = 0
        cpu1 = cpu_seconds(pid)
        t1 = time.monotonic()
        pairs = min(args.invites, len(clients) // 2)
        for i in range(pairs):
            caller, callee = clients[2 * i], clients[2 * i + 1]
            ringing = caller.wait("call.ringing")
            sent = time.perf_counter()
            await caller.ws.send(json.dumps({"type": "invite", "to": callee.identity}))
            try:
                msg = await asyncio.wait_for(ringing, 10)
                latencies.append((time.perf_counter() - sent) * 1000)
                await caller.ws.send(json.dumps({"type": "cancel", "callId": msg["callId"]}))
            except TimeoutError:
                failures += 1
            await asyncio.sleep(1 / args.invite_rate)
        invite_s = time.monotonic() - t1
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)
        invite_cpu = cpu_seconds(pid) - cpu1
        alive_after = sum(1 for c in clients if not c.reader.done())
        return {
            "benchmark": "signaling-capacity",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg": os.getloadavg()},
            "clients": args.clients,
            "connected": alive_before,
            "still_connected_after_invites": alive_after,
            "connect_seconds": round(connect_s, 2),
            "connect_server_cpu_ms_per_client": round(connect_cpu * 1000 / args.clients, 3),
            "server_rss_mb_idle": round(rss0, 1),
            "server_rss_mb_connected": round(rss_connected, 1),
            "server_kb_per_client": round((rss_connected - rss0) * 1024 / args.clients, 1),
            "invites": pairs,
            "invite_failures": failures,
            "invite_rate_per_s": args.invite_rate,
            "background_pings_per_s": round(len(clients) / args.ping_interval, 1),
            "invite_to_ringing_ms": {
                "p50": round(percentile(latencies, 0.5), 2),
                "p95": round(percentile(latencies, 0.95), 2),
                "p99": round(percentile(latencies, 0.99), 2),
                "max": round(max(latencies, default=0.0), 2),
            },
            "server_cpu_ms_per_invite": round(invite_cpu * 1000 / max(pairs, 1), 3),
            "invite_phase_seconds": round(invite_s, 2),
        }
    finally:
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
        server.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.signaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=250, help="clients connecting at once")
    ap.add_argument("--invites", type=int, default=300)
    ap.add_argument("--invite-rate", type=float, default=50.0, help="invites per second")
    ap.add_argument("--ping-interval", type=float, default=10.0,
                    help="seconds between one client's background pings")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / "signaling.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`parley media-node --role call-server`: the call server process."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import signal
import sys
import time
from types import FrameType

import uvicorn

from parley.heap import freeze_start_up

from .api import create_app
from .node import CallServer
from .report import NodeReport


async def serve(args: argparse.Namespace) -> None:
    host = os.environ.get("POD_IP") or (
        "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host)
    url = args.url or f"http://{host}:{args.port}"
    server = CallServer(args.node_id, region=args.region, url=url,
                        capacity_subscriptions=args.capacity,
                        capacity_participants=getattr(args, "capacity_participants", 0),
                        udp_port=getattr(args, "udp_port", None),
                        advertise=[args.advertise] if args.advertise else None,
                        transcoder=os.environ.get("PARLEY_MEETING_TRANSCODER") or None)
    # the chart's, derived from the token secret (parley.tokens.control_key); the node never
    # holds the secret itself. Without a key the control API refuses every call (503).
    key = os.environ.get("PARLEY_CONTROL_KEY") or None
    if key is None:
        print(f"call server {server.id}: no PARLEY_CONTROL_KEY, the control API refuses "
              "every call", file=sys.stderr, flush=True)
    app = create_app(server, key)
    registration = None
    redis_url = args.redis_url or os.environ.get("PARLEY_REDIS_URL")
    if redis_url:
        from redis.asyncio import Redis

        from .registry import Registration

        server.redis = Redis.from_url(redis_url)  # also where subscribers' needs are kept
        server.transcoding.redis = server.redis  # and where meetings' transcoders announce
        registration = Registration(server.redis, server, address=args.advertise)
        registration.start()
    report = NodeReport.from_env(server)
    if report is not None:
        report.start()
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    userver = DrainingServer(config, server, float(args.drain_deadline),
                             asyncio.get_running_loop())
    freeze_start_up()
    print(f"call server {server.id} listening on {url}", flush=True)
    try:
        await userver.serve()
    finally:
        if registration is not None:
            await registration.stop()
        if report is not None:
            await report.stop()
        await server.close()


BROADCAST_ROLES = ("ingest", "edge-relay", "transcoder", "recorder")


class DrainingServer(uvicorn.Server):
    """SIGTERM (a pod being scaled down or evicted) drains instead of cutting calls: no new
    meetings, the current ones go on until the deadline, then signaling moves whoever is left
    (the node's ``move`` events) and the process exits, with status 0, once empty. A second
    SIGTERM, or SIGINT, exits at once."""

    def __init__(self, config: uvicorn.Config, node: CallServer, deadline: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(config)
        self.node, self.deadline, self.loop = node, deadline, loop
        self.draining: concurrent.futures.Future[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.draining is not None:
            super().handle_exit(sig, frame)
            return
        # the handler runs between bytecodes of the loop's thread: hand the drain to the loop
        self.draining = asyncio.run_coroutine_threadsafe(self._drain(), self.loop)

    async def _drain(self) -> None:
        if self.node.participants:
            print(f"call server {self.node.id}: SIGTERM, draining "
                  f"{len(self.node.participants)} participants (deadline {self.deadline:g}s)",
                  flush=True)
            self.node.drain(self.deadline)
            limit = time.monotonic() + self.deadline + 5.0  # the move, then leave regardless
            while time.monotonic() < limit:
                if not self.node.participants:
                    break
                await asyncio.sleep(0.2)
        self.should_exit = True


def run(args: argparse.Namespace) -> int:
    if args.role in BROADCAST_ROLES:  # docs/broadcast.md
        from .broadcast.roles import run as run_broadcast

        return run_broadcast(args)
    if args.role != "call-server":
        print(f"parley media-node --role {args.role}: unknown role", file=sys.stderr)
        return 3
    asyncio.run(serve(args))
    return 0

"""`parley media-node --role call-server`: the call server process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

import uvicorn

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
                        advertise=[args.advertise] if args.advertise else None)
    app = create_app(server)
    registration = None
    redis_url = args.redis_url or os.environ.get("PARLEY_REDIS_URL")
    if redis_url:
        from redis.asyncio import Redis

        from .registry import Registration

        registration = Registration(Redis.from_url(redis_url), server, address=args.advertise)
        registration.start()
    report = NodeReport.from_env(server)
    if report is not None:
        report.start()
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    userver = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, lambda: setattr(userver, "should_exit", True))
    print(f"call server {server.id} listening on {url}", flush=True)
    try:
        await userver.serve()
    finally:
        if registration is not None:
            await registration.stop()
        if report is not None:
            await report.stop()
        await server.close()


def run(args: argparse.Namespace) -> int:
    if args.role != "call-server":
        print(f"parley media-node --role {args.role}: not implemented yet (issue #4 delivers "
              "the call-server role only)", file=sys.stderr)
        return 3
    asyncio.run(serve(args))
    return 0

"""`parley up`: every component in one process on one machine, with embedded defaults.

No Redis, Kafka or TURN is needed: presence is in memory, events go to a local JSONL file and
the call server runs in-process. Setting ``PARLEY_*`` variables swaps in the real services.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys

import uvicorn

from parley.config import Settings
from parley.heap import freeze_start_up


async def serve(settings: Settings, host: str, port: int, embed_call_server: bool = True) -> None:
    from parley.media.embedded import directory_for, embed, mount
    from parley.signaling.app import create_app
    from parley.signaling.hub import Hub

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if shown != "127.0.0.1" and not settings.allowed_hosts:  # answer to the address it binds
        settings = dataclasses.replace(settings, allowed_hosts=(*settings.hosts(), shown))
    if embed_call_server:  # `parley up`: the call server runs in this process, at /media
        call_server, directory = embed(settings, f"http://{shown}:{port}")
        hub = Hub(settings, directory=directory)
        app = create_app(settings, hub)
        mount(app, call_server, settings.token_secret)
        hub.sfu.serve_in_process(f"http://{shown}:{port}", app)
        from parley.events import Emitter
        from parley.media.broadcast.roles import mount as mount_live  # docs/broadcast.md

        # broadcast.* events go where signaling's go (the JSONL file the engine tails)
        live = mount_live(app, settings.token_secret, call_server.url)  # meeting sources: here
        live.events = Emitter(hub.instance, hub.events)
    else:  # a deployment: call-server nodes registered in Redis, if configured
        app = create_app(settings, Hub(settings, directory=directory_for(settings)))
    if not settings.kafka_bootstrap and os.environ.get("PARLEY_ANALYTICS", "1") != "0":
        from parley.analytics.engine import start_embedded  # issue 13: tails events.jsonl

        start_embedded(settings.data_dir)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", ws_max_size=65536)
    freeze_start_up()
    await _AnnouncingServer(config, f"http://{shown}:{port}/").serve()


class _AnnouncingServer(uvicorn.Server):
    """Prints the URL once the socket is bound, so a user (or a script) knows where to go."""

    def __init__(self, config: uvicorn.Config, url: str):
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"Parley is running at {self.url}", flush=True)


def run(args: argparse.Namespace) -> int:
    embed = getattr(args, "embed_call_server", True)  # PARLEY_EMBED_CALL_SERVER=0: none
    embed = embed and os.environ.get("PARLEY_EMBED_CALL_SERVER", "1") != "0"
    # On one machine everyone in a room may press Record; a deployment grants it by token.
    guest_grants = None if os.environ.get("PARLEY_GUEST_GRANTS") or not embed else (
        "publish", "subscribe", "record")
    # `parley up` answers loopback names and the public host only (DNS rebinding); a deployed
    # `parley signaling` sits behind a Service/Ingress: any Host unless PARLEY_ALLOWED_HOSTS says.
    any_host = getattr(args, "any_host", False) and not os.environ.get("PARLEY_ALLOWED_HOSTS")
    settings = Settings.from_env(data_dir=args.data_dir, guest_grants=guest_grants,
                                 allowed_hosts=("*",) if any_host else None)
    try:
        asyncio.run(serve(settings, args.host, args.port, embed))
    except OSError as exc:
        print(f"parley up: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def run_signaling(args: argparse.Namespace) -> int:
    """`parley signaling`: the same server, configured for a deployment by environment."""
    return run(argparse.Namespace(host=args.host, port=args.port, data_dir=None,
                                  embed_call_server=False, any_host=True))

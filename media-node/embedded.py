"""The call server inside `parley up`: same process, control API mounted at ``/media``."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys

from fastapi import FastAPI

from parley.config import Settings
from parley.tokens import control_key

from .api import create_app
from .directory import LocalDirectory, RedisDirectory
from .node import CallServer
from .transcoding import parse_addr


def embed(settings: Settings, base_url: str) -> tuple[CallServer, LocalDirectory]:
    """A call server whose control API will live at ``<base_url>/media``; its meetings'
    transcoder is a local process started on the first need (PARLEY_MEETING_TRANSCODER:
    an address to use instead, ``0``: none)."""
    server = CallServer("embedded", region=settings.region, url=f"{base_url.rstrip('/')}/media")
    address = os.environ.get("PARLEY_MEETING_TRANSCODER", "")
    if address and address != "0":
        server.transcoding.static = parse_addr(address)
    elif not address:
        server.transcoding.launcher = start_local_transcoder
    return server, LocalDirectory(server)


def start_local_transcoder() -> str:
    """`parley media-node --role transcoder` for every meeting of this process (PARLEY_MEETING=
    *), on loopback; it ends with this process (SIGTERM at exit, and the parent-death signal
    should this one be killed). Returns its UDP address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        udp = probe.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        http = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "media-node", "--role", "transcoder",
         "--host", "127.0.0.1", "--port", str(http), "--udp-port", str(udp)],
        env={**os.environ, "PARLEY_MEETING": "*"}, preexec_fn=_die_with_parent)
    atexit.register(proc.terminate)
    return f"127.0.0.1:{udp}"


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def mount(app: FastAPI, server: CallServer, token_secret: str) -> None:
    """Mount the control API, behind the control key: it shares the public port with the web
    client (a mounted app's lifespan does not run: start the tick here)."""
    app.mount("/media", create_app(server, control_key(token_secret)))
    server.start()


def directory_for(settings: Settings) -> RedisDirectory | None:
    """For `parley signaling`: place rooms on the nodes registered in Redis, if there is one."""
    return RedisDirectory(settings.redis_url, settings.region) if settings.redis_url else None

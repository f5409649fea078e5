"""How every broadcast role (ingest, transcoder, edge-relay, recorder) serves and stops.

uvicorn re-raises the SIGTERM it caught once ``serve()`` returns; with the default handler back
in place that kills the process (status -15) before any ``finally`` after ``serve()`` runs, so
an edge never withdrew its Lease report and no tier DELETEd its upstream WHEP session. Here a
SIGTERM (a pod scaled down or deleted) is a normal end: the role stops accepting connections,
runs its clean-up at once (before waiting for open requests such as LL-HLS blocking reloads,
which the clean-up ends), and the process exits 0. SIGINT keeps uvicorn's behaviour (a second
one forces the exit). The clean-up also runs when start-up fails (port taken).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn
from fastapi import FastAPI

from parley.heap import freeze_start_up

GRACE_S = 5.0  # open requests get this long after the clean-up; then they are cancelled


class RoleServer(uvicorn.Server):
    """A uvicorn server whose SIGTERM ends ``serve()`` normally, after ``close``."""

    def __init__(self, config: uvicorn.Config, close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._close = close
        self._closed = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:  # handled here: not raised again after serve()
            self._captured_signals = [s for s in self._captured_signals if s != sig]

    async def close_once(self) -> None:
        if not self._closed:
            self._closed = True
            await self._close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:  # no new request while the role tears down
            server.close()
        await self.close_once()
        await super().shutdown(sockets)


async def serve_role(app: FastAPI, host: str, port: int,
                     close: Callable[[], Awaitable[None]]) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then run ``close`` exactly once."""
    server = RoleServer(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                       timeout_graceful_shutdown=GRACE_S), close)
    freeze_start_up()  # the media loop never walks start-up's objects again (parley/heap.py)
    try:
        await server.serve()
    finally:
        await server.close_once()

"""The call server inside `parley up`: same process, control API mounted at ``/media``."""

from __future__ import annotations

from fastapi import FastAPI

from parley.config import Settings
from parley.tokens import control_key

from .api import create_app
from .directory import LocalDirectory, RedisDirectory
from .node import CallServer


def embed(settings: Settings, base_url: str) -> tuple[CallServer, LocalDirectory]:
    """A call server whose control API will live at ``<base_url>/media``."""
    server = CallServer("embedded", region=settings.region, url=f"{base_url.rstrip('/')}/media")
    return server, LocalDirectory(server)


def mount(app: FastAPI, server: CallServer, token_secret: str) -> None:
    """Mount the control API, behind the control key: it shares the public port with the web
    client (a mounted app's lifespan does not run: start the tick here)."""
    app.mount("/media", create_app(server, control_key(token_secret)))
    server.start()


def directory_for(settings: Settings) -> RedisDirectory | None:
    """For `parley signaling`: place rooms on the nodes registered in Redis, if there is one."""
    return RedisDirectory(settings.redis_url, settings.region) if settings.redis_url else None

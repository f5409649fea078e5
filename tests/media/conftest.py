"""Fixtures for call-server tests: an in-process call server on a real HTTP port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import uvicorn

from parley.media.api import create_app
from parley.media.node import CallServer
from tests.conftest import free_port
from tests.media.client import CONTROL_KEY


@contextlib.asynccontextmanager
async def running(server: CallServer) -> AsyncIterator[str]:
    port = free_port()
    config = uvicorn.Config(create_app(server, CONTROL_KEY), host="127.0.0.1", port=port,
                            log_level="warning")
    userver = uvicorn.Server(config)
    task = asyncio.ensure_future(userver.serve())
    for _ in range(500):
        if userver.started:
            break
        await asyncio.sleep(0.02)
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server.url
    finally:
        await server.close()
        userver.should_exit = True
        await task


@pytest.fixture
async def call_server() -> AsyncIterator[tuple[CallServer, str]]:
    server = CallServer()
    async with running(server) as url:
        yield server, url


@pytest.fixture
async def call_server_one_port() -> AsyncIterator[tuple[CallServer, str]]:
    """A call server whose participants all share one UDP port (the chart's single-port mode)."""
    server = CallServer(udp_port=0, udp_host="0.0.0.0")
    async with running(server) as url:
        yield server, url

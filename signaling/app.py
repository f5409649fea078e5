"""The signaling service's HTTP application."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from parley import __version__
from parley.config import Settings


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="Parley signaling", version=__version__)
    app.state.settings = settings

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return "<!doctype html><title>Parley</title><h1>Parley</h1>"

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app

"""Webhooks for integrations, signed with HMAC-SHA256 (RFC 2104) over the timestamp and body.

Header ``Parley-Signature: t=<unix time>,v1=<hex HMAC(secret, "<t>.<body>")>``. Signing the
timestamp lets a receiver refuse replays older than its tolerance; ``verify`` is what a receiver
runs (and what the tests run).

An unsigned webhook is never sent: a URL without a secret refuses to start (``from_env``), since a
receiver could not tell Parley's notifications from anyone's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

HEADER = "Parley-Signature"
URL_ENV = "PARLEY_RECORDING_WEBHOOK_URL"
SECRET_ENV = "PARLEY_RECORDING_WEBHOOK_SECRET"
log = logging.getLogger("parley.recorder.webhook")


class WebhookConfigError(SystemExit):
    """A webhook that cannot be sent safely. A SystemExit, so the process that configured it
    stops at startup with this message instead of a traceback (exit status 1)."""


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str


def configured(url: str | None, secret: str | None) -> Webhook | None:
    """The webhook to call, ``None`` when no URL is set; refuses a URL without a secret."""
    if not url:
        return None
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise WebhookConfigError(f"parley: {URL_ENV}={url!r} is not an http(s) URL")
    if not (secret or "").strip():
        raise WebhookConfigError(
            f"parley: {URL_ENV} is set but {SECRET_ENV} is empty; refusing to start: every "
            "webhook is signed so receivers can reject forged ones. Set a long random secret "
            f"(e.g. `openssl rand -hex 32`) or unset {URL_ENV}.")
    return Webhook(url, secret or "")


def from_env(environ: Mapping[str, str] | None = None) -> Webhook | None:
    env = os.environ if environ is None else environ
    return configured(env.get(URL_ENV), env.get(SECRET_ENV))


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(timestamp if timestamp is not None else time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: float = 300,
           now: float | None = None) -> bool:
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - t) > tolerance_s:
        return False
    good = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(good, parts.get("v1", ""))


async def send(url: str, secret: str, payload: dict[str, Any], attempts: int = 4) -> int:
    """POST ``payload``; retried with backoff on errors and 5xx. Returns the last status
    (0 if never reached). A failing webhook never fails the recording."""
    if not secret:
        raise ValueError("webhooks are always signed: no secret given")
    body = json.dumps(payload, separators=(",", ":")).encode()
    status = 0
    async with httpx.AsyncClient(timeout=10) as client:
        for attempt in range(attempts):
            try:
                r = await client.post(url, content=body, headers={
                    "Content-Type": "application/json", HEADER: sign(secret, body)})
                status = r.status_code
                if status < 500:
                    return status
            except httpx.HTTPError as exc:
                log.warning("webhook %s failed: %s", url, exc)
            await asyncio.sleep(0.5 * 2 ** attempt)
    return status

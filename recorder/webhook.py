"""Webhooks for integrations, signed with HMAC-SHA256 (RFC 2104) over the timestamp and body.

Header ``Parley-Signature: t=<unix time>,v1=<hex HMAC(secret, "<t>.<body>")>``. Signing the
timestamp lets a receiver refuse replays older than its tolerance; ``verify`` is what a receiver
runs (and what the tests run).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

HEADER = "Parley-Signature"
log = logging.getLogger("parley.recorder.webhook")


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

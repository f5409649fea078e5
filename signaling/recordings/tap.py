"""The recording tap's side of the call servers' control API, over ONE shared HTTP client.

Every replica polls the node of each recording it watches every ``PARLEY_RECORDING_WATCH_S``;
a client per poll meant a new connection (and TLS handshake in a deployment) each time. The
client is made on first use, on the event loop that uses it, and closed with the replica.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger("parley.signaling.recordings")

STATUS_TIMEOUT_S = 5.0
TAP_TIMEOUT_S = 15.0  # a stop flushes the last chunks to the store first


class TapClient:
    """Start/stop a recording tap on a call server and ask who is in its meetings."""

    def __init__(self, control_headers: dict[str, str]) -> None:
        self.headers = control_headers
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(headers=self.headers, timeout=TAP_TIMEOUT_S)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def meeting(self, node_url: str, room: str) -> list[str] | None:
        """Participants of the meeting on that call server; None if the node is unreachable."""
        try:
            r = await self.client.get(f"{node_url}/v1/status", timeout=STATUS_TIMEOUT_S)
            r.raise_for_status()
            status: dict[str, Any] = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        return list(status.get("participant_ids", {}).get(room, []))

    async def tap(self, url: str, room: str, recording: str, action: str, store_url: str,
                  chunk_s: float) -> bool:
        """``action`` is ``start`` or ``stop``; False when the node refused or is gone."""
        try:
            r = await self.client.post(
                f"{url}/v1/meetings/{quote(room, safe='')}/recording",
                json={"action": action, "id": recording, "store": store_url,
                      "chunk_s": chunk_s})
            return r.status_code == 200
        except httpx.HTTPError as exc:
            log.warning("recording %s: %s on %s failed (%s)", recording, action, url, exc)
            return False

"""Call-server forwarding with real aiortc participants (VP8 + Opus, decoded by the clients)."""

from __future__ import annotations

import asyncio
import time

from parley.media import metrics
from parley.media.keyframes import KeyframeRequests
from parley.media.node import CallServer
from parley.media.rtp import vp8_keyframe

from .client import Client, PatternVideo, wait_for


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels or None) or 0.0


async def test_two_participants_decode_each_other(call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    a, b = Client("a", "m2"), Client("b", "m2")
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 15,
                       "a and b decoding each other")
        # nothing was decoded on the server: its receivers' decoder threads never got a frame
        up = server.participants["a"].uptracks[0]
        assert up.packets > 0 and up.downtracks and up.downtracks[0].packets > 0
    finally:
        await a.close()
        await b.close()

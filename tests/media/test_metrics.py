"""The call server's metrics, scraped by the test bed's Prometheus."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from parley.media.node import CallServer

from .client import Client, wait_for


@pytest.mark.prometheus
async def test_prometheus_scrapes_forwarding_metrics(
        call_server: tuple[CallServer, str], prometheus: tuple[str, Path]) -> None:
    _, url = call_server
    prom, targets = prometheus
    job = f"callserver-{uuid.uuid4().hex[:8]}"
    target = targets / f"{job}.json"
    target.write_text(json.dumps([{"targets": [url.removeprefix("http://")],
                                   "labels": {"instance_name": job}}]))
    a, b = Client("a", "prom"), Client("b", "prom")
    try:
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 15, "media")
        queries = {
            "video": f'parley_media_forwarded_packets_total{{kind="video",instance_name="{job}"}}',
            "bytes": f'parley_media_forwarded_bytes_total{{kind="audio",instance_name="{job}"}}',
            "subs": f'parley_media_subscriptions{{instance_name="{job}"}}',
            "latency": f'parley_media_forward_latency_seconds_count{{instance_name="{job}"}}',
            "keyframes": f'parley_media_keyframe_requests_total{{instance_name="{job}"}}',
        }
        values: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=prom) as http:
            for _ in range(100):
                for name, q in queries.items():
                    body = (await http.get("/api/v1/query", params={"query": q})).json()
                    if body["data"]["result"]:
                        values[name] = float(body["data"]["result"][0]["value"][1])
                # a scrape from before the last leg was negotiated can still be the newest
                if len(values) == len(queries) and values["video"] > 0 and values["subs"] == 4:
                    break
                await asyncio.sleep(0.2)
        assert values.get("video", 0) > 0 and values.get("bytes", 0) > 0, values
        assert values["subs"] == 4  # two participants x (video + audio) from the other
        assert values["latency"] > 0 and values["keyframes"] >= 1
    finally:
        target.unlink()
        await asyncio.gather(a.close(), b.close())

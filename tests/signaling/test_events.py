"""Call events: consumed from the real Kafka broker in order and valid against the schema;
the JSONL default; Kafka down never breaks a call; the Prometheus metrics that count it all."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from parley.events import validate
from tests.conftest import free_port, wait_until
from tests.signaling.helpers import Client


async def place_call(base: str, uniq: Callable[[str], str]) -> str:
    """invite -> accept -> both join the call room -> hang up; returns the call id."""
    alice = await Client.connect(base, uniq("alice"))
    bob = await Client.connect(base, uniq("bob"))
    ringing = await alice.request("invite", "call.ringing", to=bob.identity)
    await bob.expect("call.incoming")
    await bob.send(type="accept", callId=ringing["callId"])
    room = (await alice.expect("call.accepted"))["room"]
    await alice.request("join", "joined", room=room)
    await bob.request("join", "joined", room=room)
    await alice.send(type="hangup", callId=ringing["callId"])
    await bob.expect("call.ended")
    await alice.close()
    await bob.close()
    return ringing["callId"]


def check_call_events(events: list[dict], call_id: str) -> None:
    for e in events:
        validate(e)
    types = [e["type"] for e in events if e["callId"] == call_id]
    assert types[:2] == ["call.invited", "call.started"], types
    assert types.count("participant.joined") == 2 and types.count("participant.left") == 2
    ended = types.index("call.ended")
    assert types.index("participant.joined") > 1
    assert all(t == "participant.left" for t in types[ended + 1:]), types
    assert "config.changed" in types[2:ended]
    end = next(e for e in events if e["type"] == "call.ended")
    assert end["data"]["reason"] == "hangup" and end["data"]["durationMs"] >= 0


@pytest.mark.kafka
async def test_call_events_reach_kafka_in_order_and_match_the_schema(
        parley_server: Callable[..., str], kafka_bootstrap: str,
        uniq: Callable[[str], str]) -> None:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"parley.events.test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(
        30)
    base = parley_server({"PARLEY_KAFKA_BOOTSTRAP": kafka_bootstrap,
                          "PARLEY_KAFKA_TOPIC": topic})
    call_id = await place_call(base, uniq)

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    events: list[dict] = []
    keys: set[bytes] = set()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and sum(
                e["type"] == "participant.left" for e in events) < 2:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            keys.add(msg.key())
            events.append(json.loads(msg.value()))
    finally:
        consumer.close()
    assert keys == {call_id.encode()}, "one call's events share a key, hence a partition"
    check_call_events(events, call_id)


async def test_jsonl_is_the_embedded_default(parley_server: Callable[..., str],
                                             tmp_path: Path, uniq: Callable[[str], str]) -> None:
    base = parley_server()
    call_id = await place_call(base, uniq)
    port = base.rsplit(":", 1)[1]
    log = tmp_path / f"parley-{port}" / "events.jsonl"

    def events() -> list[dict]:
        lines = log.read_text().splitlines() if log.exists() else []
        found = [json.loads(line) for line in lines]
        return found if sum(e["type"] == "participant.left" for e in found) == 2 else []

    check_call_events(wait_until(events, 10, what="events in the JSONL file"), call_id)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (in any order)."""
    total = 0.0
    for m in re.finditer(r"^" + re.escape(name) + r"(?:\{(.*?)\})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.mark.kafka
async def test_kafka_down_never_breaks_a_call_and_drops_are_counted(
        parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    base = parley_server({"PARLEY_KAFKA_BOOTSTRAP": dead, "PARLEY_EVENTS_BUFFER": "3",
                          "PARLEY_KAFKA_DELIVERY_TIMEOUT_MS": "1000"})
    started = time.monotonic()
    await place_call(base, uniq)
    assert time.monotonic() - started < 5, "a call must not wait for the event sink"
    await place_call(base, uniq)

    def dropped() -> float:
        text = httpx.get(f"{base}/metrics").text
        return metric(text, "parley_events_dropped_total", sink="kafka")

    # 2 calls x 8 events, at most 3 buffered at a time: most are dropped, and counted
    wait_until(lambda: dropped() >= 10, 15, what="dropped events counted")


async def test_metrics_count_clients_calls_messages_and_errors(
        parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server()
    alice = await Client.connect(base, uniq("alice"))
    bob = await Client.connect(base, uniq("bob"))
    await alice.send(type="nonsense")
    await alice.expect("error")
    await alice.send(type="invite", to=bob.identity)
    await alice.expect("call.ringing")
    async with httpx.AsyncClient(base_url=base) as http:
        text = (await http.get("/metrics")).text
        assert metric(text, "parley_signaling_connected_clients") == 2
        assert metric(text, "parley_signaling_messages_total", type="invite") == 1
        assert metric(text, "parley_signaling_messages_total", type="invalid") == 1
        assert metric(text, "parley_signaling_errors_total", code="unknown_type") == 1
        assert metric(text, "parley_signaling_calls_total", state="ringing") == 1
        assert metric(text, "parley_signaling_active_calls", state="ringing") == 1
        await bob.close()
        for _ in range(50):
            text = (await http.get("/metrics")).text
            if metric(text, "parley_signaling_connected_clients") == 1:
                break
            await asyncio.sleep(0.1)
    assert metric(text, "parley_signaling_connected_clients") == 1
    assert metric(text, "parley_signaling_calls_total", state="offline") == 1
    assert metric(text, "parley_signaling_active_calls", state="ringing") == 0


@pytest.mark.prometheus
async def test_prometheus_scrapes_the_signaling_metrics(
        parley_server: Callable[..., str], prometheus: tuple[str, Path],
        uniq: Callable[[str], str]) -> None:
    url, targets = prometheus
    base = parley_server()
    job = uniq("signaling")
    target = targets / f"{job}.json"
    target.write_text(json.dumps([{"targets": [base.removeprefix("http://")],
                                   "labels": {"instance_name": job}}]))
    try:
        alice = await Client.connect(base, uniq("alice"))
        await alice.send(type="bogus")
        await alice.expect("error")
        query = f'parley_signaling_errors_total{{code="unknown_type",instance_name="{job}"}}'
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(100):
                body = (await http.get("/api/v1/query", params={"query": query})).json()
                if body["data"]["result"]:
                    break
                await asyncio.sleep(0.2)
        assert float(body["data"]["result"][0]["value"][1]) == 1.0
    finally:
        target.unlink()

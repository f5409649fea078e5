"""The operator's Meeting placements reach signaling's call-server directory (real cluster,
real Redis): signaling's own placement then sends the Meeting's participants to the pod in
``status.callServer``, and a released Meeting leaves no placement behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from parley import tokens
from parley.directory import MeetingPolicy, active_recording_key, meeting_key, policy_key
from parley.media import registry
from parley.media.node import CallServer
from parley.media.registry import Registration, place
from tests.cluster import Cluster
from tests.conftest import Kube, eventually, wait_until
from tests.operator.conftest import Operator, apply, cond, get, make_pool, meeting
from tests.signaling.helpers import Client as WsClient

pytestmark = [pytest.mark.k8s, pytest.mark.redis]


@pytest.fixture
def directory_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + "/10"


@pytest.fixture
def placing_operator(kube: Kube, namespace: str, crds: None, tmp_path: Path,
                     directory_url: str) -> Iterator[Operator]:
    op = Operator(kube, namespace, tmp_path, env={"PARLEY_REDIS_URL": directory_url}).start()
    yield op
    op.stop()


async def _register(url: str, node_id: str, region: str) -> Registration:
    """A call-server record as a real node heartbeats it (the pods on kwok run no process)."""
    server = CallServer(node_id, region=region, url=f"http://{node_id}.test:8080",
                        capacity_subscriptions=400)
    reg = Registration(Redis.from_url(url), server)
    await reg.beat()
    return reg


def test_signaling_follows_the_operators_placement(
        kube: Kube, namespace: str, placing_operator: Operator, directory_url: str) -> None:
    make_pool(kube, namespace, per_pod=100, headroom=2, region="dir")
    apply(kube, namespace, meeting("allhands", region="dir", maxParticipants=60))
    room = f"{namespace}.allhands"
    r = sync_redis.Redis.from_url(directory_url)

    def placed() -> dict | None:
        m = get(kube, namespace, "mtg", "allhands")
        return m if cond(m, "Ready").get("status") == "True" else None

    m = wait_until(placed, 60, 0.5, what="Meeting placed")
    pod = m["status"]["callServer"]["pod"]
    wait_until(lambda: r.get(meeting_key(room)) == pod.encode(), 20, 0.3,
               what="placement in the directory")

    async def signaling_places() -> list[str]:
        pods = [p["metadata"]["name"] for p in kube.json(
            "get", "pods", "-n", namespace, "-l", "parley.dev/region=dir")["items"]]
        assert len(pods) >= 2, pods  # a real choice: the operator's pod is one of several
        regs = [await _register(directory_url, p, "dir") for p in pods]
        try:
            redis = Redis.from_url(directory_url)
            got = [(await place(redis, room, "dir"))["id"] for _ in range(5)]
            await redis.aclose()
            return got
        finally:
            for reg in regs:
                await reg.stop()

    assert asyncio.run(signaling_places()) == [pod] * 5
    # signaling moves the room to another pod of the pool (its node died or drained): the
    # operator follows what it observes and never writes its own choice back over it
    other = next(p["metadata"]["name"] for p in kube.json(
        "get", "pods", "-n", namespace, "-l", "parley.dev/region=dir")["items"]
        if p["metadata"]["name"] != pod)
    r.set(meeting_key(room), other)
    wait_until(lambda: get(kube, namespace, "mtg", "allhands")["status"]["callServer"]["pod"]
               == other, 20, 0.3, what="status.callServer following the room")
    time.sleep(2.5)  # passes go on (resync 1 s): the room stays where signaling put it
    assert r.get(meeting_key(room)) == other.encode()
    assert "Replaced" in {e["reason"] for e in kube.json(
        "get", "events", "-n", namespace,
        "--field-selector", "involvedObject.name=allhands")["items"]}
    kube.kubectl("delete", "mtg", "allhands", "-n", namespace, "--wait=true")
    wait_until(lambda: r.get(meeting_key(room)) is None, 30, 0.3,
               what="placement released with the Meeting")
    assert "directory:" not in placing_operator.logs(), placing_operator.logs()[-2000:]


@pytest.fixture
def cluster(directory_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(directory_url, tmp_path)
    yield c
    c.stop()


async def test_signaling_enforces_a_meetings_spec_and_records_it(
        kube: Kube, namespace: str, placing_operator: Operator, cluster: Cluster,
        directory_url: str) -> None:
    """The whole path with real processes: the operator publishes the Meetings' policies,
    `parley signaling` (sharing Redis with a real `parley media-node`) enforces them on join,
    starts recording a Meeting that asks for it, and the operator's Recording condition turns
    True from what signaling records; deleting the Meeting removes its policy."""
    make_pool(kube, namespace, per_pod=100, headroom=0, region="pol")
    apply(kube, namespace, meeting("rec", region="pol", maxParticipants=2,
                                   recording={"enabled": True}))
    apply(kube, namespace, meeting("big", region="pol", topology="sfu", maxParticipants=50))
    r = Redis.from_url(directory_url, decode_responses=True)
    clients: list[WsClient] = []
    try:
        for name in ("rec", "big"):
            key = policy_key(f"{namespace}.{name}")
            await eventually(lambda k=key: r.get(k), 30, f"policy of {name}")
        policy = MeetingPolicy.parse(await r.get(policy_key(f"{namespace}.rec")))
        assert policy == MeetingPolicy(maxParticipants=2, topology="auto", record=True)
        secret = "directory-test-secret-of-32-bytes-or-more"
        node = cluster.node("a", {"PARLEY_TOKEN_SECRET": secret})  # control API behind its key
        await eventually(lambda: _registered(r, node["id"]), 15, "the node registered")
        base = cluster.signaling({"PARLEY_TOKEN_SECRET": secret})

        async def join(identity: str, name: str) -> tuple[WsClient, dict[str, Any]]:
            room = f"{namespace}.{name}"
            c = await WsClient.connect(base, identity, room, token=tokens.mint(
                secret, identity=identity, room=room, ttl_s=600))
            clients.append(c)
            await c.send(type="join", room=room, id="j1")
            reply = await c.expect_any(("joined", "error"), within=15)
            return c, reply

        ann, joined = await join("ann", "rec")
        assert joined["type"] == "joined", joined
        started = await ann.expect("recording.started", within=20)
        assert started["by"] == "meeting" and started["room"] == f"{namespace}.rec"
        rid = started["recording"]
        assert await r.get(active_recording_key(f"{namespace}.rec")) == rid

        def recording() -> dict | None:
            m = get(kube, namespace, "mtg", "rec")
            return m if cond(m, "Recording").get("status") == "True" else None

        m = wait_until(recording, 30, 0.5, what="Recording condition True")
        assert rid in cond(m, "Recording")["message"]
        _, second = await join("bob", "rec")
        assert second["type"] == "joined", second
        _, third = await join("cyd", "rec")  # maxParticipants 2
        assert third["type"] == "error" and third["code"] == "room_full", third
        assert "admits 2 participants" in third["message"]
        # topology sfu from the Meeting, though the client asked for nothing
        _, alone = await join("dee", "big")
        assert alone["type"] == "joined" and alone["topology"] == "sfu", alone

        kube.kubectl("delete", "mtg", "rec", "-n", namespace, "--wait=true")
        await eventually(lambda: _absent(r, policy_key(f"{namespace}.rec")), 30,
                         "policy removed with the Meeting")
    finally:
        for c in clients:
            await c.close()
        await r.aclose()


async def _registered(r: Redis, node_id: str) -> bool:
    return node_id in {n["id"] for n in await registry.nodes(r)}


async def _absent(r: Redis, key: str) -> bool:
    return not await r.exists(key)

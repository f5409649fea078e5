"""A recording's background work outlives the signaling replica that started it: the watcher
that stops it when the meeting ended and the compile-and-notify after stop are owned through
leases in the signaling store, and any replica's sweeper takes over what a dead one held."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from parley import tokens
from parley.media import registry
from parley.media.node import CallServer
from parley.recorder import state, webhook
from parley.recorder.store import LocalStore, Store
from parley.signaling.recordings import LIVE
from parley.signaling.store import PREFIX
from tests.cluster import Cluster
from tests.conftest import eventually
from tests.media.client import wait_for
from tests.media.conftest import running

from .conftest import FixedDirectory, Webhooks, serve, signaling
from .jobs import record
from .media import participant, probe


def orphan(store: Store, room: str, phase: str, node_url: str) -> str:
    """What a replica that died leaves behind: a manifest in ``phase`` and the chunks of a
    two-participant meeting (real ones, through the chunk writer)."""
    recording = uuid.uuid4().hex
    record(store, recording)  # type: ignore[arg-type]
    state.save(store, {**state.new(room, "host"), "id": recording, "state": phase,
                       "nodeUrl": node_url, "nodes": [node_url]})
    return recording


async def test_sweeper_takes_over_orphans_after_their_lease_and_drops_malformed_entries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_RECORDING_WATCH_S", "0.3")
    server = CallServer()
    async with running(server) as url, signaling(
            tmp_path, FixedDirectory(url, server.id), monkeypatch) as stack:
        rec, kv = stack.hub.recordings, stack.hub.store  # type: ignore[attr-defined]
        watched_room, compiled_room = f"w-{uuid.uuid4().hex[:6]}", f"c-{uuid.uuid4().hex[:6]}"
        watched = orphan(rec.store, watched_room, "recording", url)
        compiled = orphan(rec.store, compiled_room, "processing", url)
        # malformed entries first, so the sweep meets them before the good ones
        await kv.hset(LIVE, "garbage", "not json")
        await kv.hset(LIVE, "half", json.dumps({"room": "x"}))
        await kv.hset(LIVE, "list", "[1, 2]")
        await kv.set(f"recording:active:{watched_room}", watched)
        # the watcher's owner is a replica that is gone; its lease runs out in 1.5 s
        await kv.set(f"recording:owner:{watched}:recording", "dead-replica", ttl_s=1.5)
        lease_ends = time.time() + 1.5
        for recording, room, phase in ((watched, watched_room, "recording"),
                                       (compiled, compiled_room, "processing")):
            await kv.hset(LIVE, recording, json.dumps(
                {"room": room, "phase": phase, "nodeUrl": url}))

        async def final() -> list[dict[str, Any]]:
            found = [await asyncio.to_thread(state.load, rec.store, r) for r in (watched, compiled)]
            return found if all(m["state"] in state.DONE for m in found) else []

        auto, done = await eventually(final, 90, "both recordings final")
        assert auto["state"] == done["state"] == "ready", (auto, done)
        assert auto["stoppedBy"] == "auto"
        assert auto["stoppedAt"] >= lease_ends, "took over a lease that was still held"
        assert await kv.get(f"recording:active:{watched_room}") is None
        await eventually(lambda: _empty(kv), 10, f"{LIVE} empty")
        await wait_for(lambda: len(stack.webhooks.received) >= 2, 10, "two webhooks")
        ids = sorted(json.loads(body)["id"] for _, body in stack.webhooks.received)
        assert ids == sorted([watched, compiled])
        for recording in (watched, compiled):
            for phase in ("recording", "processing"):
                assert await kv.get(f"recording:owner:{recording}:{phase}") is None
        assert not rec.leases._sweeper.done()  # survived the malformed entries

        # and it keeps sweeping: a recording orphaned now is compiled as well
        late = orphan(rec.store, compiled_room, "processing", url)
        await kv.hset(LIVE, late, json.dumps(
            {"room": compiled_room, "phase": "processing", "nodeUrl": url}))
        await wait_for(lambda: len(stack.webhooks.received) >= 3, 60, "the third webhook")
        assert json.loads(stack.webhooks.received[-1][1])["id"] == late


async def _empty(kv: Any) -> bool:
    return not await kv.hgetall(LIVE)


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_url.rsplit("/", 1)[0] + "/11", tmp_path)  # a database of its own
    yield c
    c.stop()


@pytest.mark.redis
async def test_a_killed_replicas_recording_is_stopped_compiled_and_notified_by_another(
        cluster: Cluster, tmp_path: Path) -> None:
    """Two `parley signaling` replicas sharing Redis, one `parley media-node`, two aiortc
    participants: the recording is started through replica 1, which is SIGKILLed; everyone
    leaves; replica 2 takes over the watcher, stops the recording, compiles and notifies."""
    redis = Redis.from_url(cluster.redis_url, decode_responses=True)
    hooks = Webhooks()
    room = f"takeover-{uuid.uuid4().hex[:6]}"
    a, b = participant("a", room), participant("b", room)
    try:
        await redis.delete(PREFIX + LIVE)  # the database is this test's
        node = cluster.node("a")

        async def registered() -> bool:
            return node["id"] in {n["id"] for n in await registry.nodes(redis)}

        await eventually(registered, 15, "the node registered")
        async with serve(hooks.app()) as hook_base:
            secret = cluster.secret  # the nodes have its control key
            env = {"PARLEY_TOKEN_SECRET": secret, "PARLEY_RECORDING_WEBHOOK_URL":
                   f"{hook_base}/hook", "PARLEY_RECORDING_WEBHOOK_SECRET": hooks.secret}
            one, two = cluster.signaling(env), cluster.signaling(env)
            for c in (a, b):
                await c.join(node["url"])  # where signaling places the room: the only node
            await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 30,
                           "a and b decoding each other")
            host = tokens.mint(secret, identity="a", room=room, grants=("record",), ttl_s=600)
            async with httpx.AsyncClient(timeout=30) as http:
                r = await http.post(f"{one}/api/v1/rooms/{room}/recording",
                                    json={"action": "start"},
                                    headers={"Authorization": f"Bearer {host}"})
                assert r.status_code == 200, r.text
                rid = r.json()["id"]
                owner_key = f"{PREFIX}recording:owner:{rid}:recording"
                first = await redis.get(owner_key)
                assert first, "the starting replica owns the watcher"
                await asyncio.sleep(4.0)

                cluster.replicas[one].send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await asyncio.to_thread(cluster.replicas[one].wait, 10)
                await asyncio.gather(a.close(), b.close())  # the meeting ends with it

                async def taken() -> str | None:
                    owner = await redis.get(owner_key)
                    return owner if owner not in (None, first) else None

                await eventually(taken, 30, "another replica owning the watcher")
                took_over = time.monotonic() - killed

                async def final() -> dict[str, Any] | None:
                    r = await http.get(f"{two}/api/v1/recordings", params={"room": room},
                                       headers={"Authorization": f"Bearer {host}"})
                    recs = r.json()["recordings"]
                    return recs[-1] if recs and recs[-1]["state"] in state.DONE else None

                done = await eventually(final, 120, "the recording final")
                finished = time.monotonic() - killed
            await wait_for(lambda: hooks.received, 15, "the ready webhook")
            notified = time.monotonic() - killed
        print(f"replica killed: watcher taken over after {took_over:.1f} s, recording "
              f"{done['state']} after {finished:.1f} s, webhook after {notified:.1f} s")

        assert done["state"] == "ready", done
        store = LocalStore(tmp_path / "data" / "recordings")
        manifest = state.load(store, rid)
        assert manifest["stoppedBy"] == "auto" and manifest["nodeLost"] is False
        assert {t["track"] for t in manifest["files"]["tracks"]} == {
            "a-camera", "a-mic", "b-camera", "b-mic"}
        composite = probe(store.local_path(f"recordings/{rid}/files/composite.mp4"))
        assert composite["streams"] == ["audio", "video"] and composite["duration"] >= 3.5
        headers, body = hooks.received[0]
        assert webhook.verify(hooks.secret, body, headers["parley-signature"])
        assert json.loads(body)["id"] == rid and len(hooks.received) == 1
        await eventually(lambda: _gone(redis, rid), 10, f"{LIVE} empty and leases released")
        # a takeover is bounded by the lease TTL (3 x watch, 6 s) plus one sweep (2 s)
        assert took_over <= 6.0 + 2.0 + 2.0, took_over
    finally:
        await asyncio.gather(a.close(leave=False), b.close(leave=False))
        await redis.aclose()


async def _gone(redis: Redis, rid: str) -> bool:
    keys = [f"{PREFIX}recording:owner:{rid}:{p}" for p in ("recording", "processing")]
    return not await redis.hgetall(PREFIX + LIVE) and not await redis.exists(*keys)

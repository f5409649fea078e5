"""Presence and routing across replicas through the test bed's Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
import websockets

from parley.signaling.presence import Presence
from parley.signaling.store import RedisStore
from tests.signaling.helpers import Client

pytestmark = pytest.mark.redis

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


class FakePeer:
    def __init__(self, identity: str) -> None:
        self.identity, self.session_id, self.got = identity, "s1", []

    def send(self, msg: dict) -> None:
        self.got.append(msg)


async def test_presence_expires_without_heartbeat_and_routes_via_pubsub(
        redis_url: str, uniq: Callable[[str], str]) -> None:
    one, two = RedisStore(redis_url), RedisStore(redis_url)
    p1 = Presence(one, ttl_s=1.0, heartbeat_s=0.3)
    p2 = Presence(two, ttl_s=1.0, heartbeat_s=0.3)
    await p1.start()
    await p2.start()
    try:
        peer = FakePeer(uniq("u"))
        await p1.register(peer)
        assert await p2.locate(peer.identity) == p1.instance
        assert await p2.deliver(peer.identity, {"type": "hello"})
        for _ in range(50):
            if peer.got:
                break
            await asyncio.sleep(0.05)
        assert peer.got == [{"type": "hello"}]
        await asyncio.sleep(1.5)  # heartbeats keep it alive past the TTL
        assert await p2.online(peer.identity)
        await p1.stop()  # a replica going away takes its users with it
        assert not await p2.online(peer.identity)
        await p1.register(peer)  # registered but nobody refreshes it now (no heartbeat task)
        await asyncio.sleep(1.3)
        assert not await p2.online(peer.identity), "presence must expire after the TTL"
        assert not await p2.deliver(peer.identity, {"type": "lost"})
    finally:
        await p2.stop()
        await one.close()
        await two.close()


async def test_rooms_relay_and_busy_work_across_replicas(
        parley_server: Callable[..., str], redis_url: str, token_secret: str,
        uniq: Callable[[str], str]) -> None:
    env = {"PARLEY_REDIS_URL": redis_url, "PARLEY_TOKEN_SECRET": token_secret}
    one, two = parley_server(env), parley_server(env)
    room = uniq("room")
    alice = await Client.connect(one, uniq("alice"), room=room)
    bob = await Client.connect(two, uniq("bob"), room=room)
    carol = await Client.connect(two, uniq("carol"), room=room)
    assert alice.welcome["instance"] != bob.welcome["instance"]
    await alice.request("join", "joined", room=room)
    joined = await bob.request("join", "joined", room=room)
    assert [p["identity"] for p in joined["participants"]] == [alice.identity]
    assert (await alice.expect("participant.joined"))["participant"]["identity"] == bob.identity
    await bob.send(type="offer", to=alice.identity, sdp=SDP)
    offer = await alice.expect("offer")
    assert offer["from"] == bob.identity
    await alice.send(type="answer", to=bob.identity, sdp=SDP)
    assert (await bob.expect("answer"))["from"] == alice.identity

    ringing = await alice.request("invite", "call.ringing", to=bob.identity)
    assert (await carol.request("invite", "call.ended", to=bob.identity))["reason"] == "busy"
    incoming = await bob.expect("call.incoming")
    assert incoming["callId"] == ringing["callId"]
    await bob.send(type="accept", callId=incoming["callId"])
    assert (await alice.expect("call.accepted"))["callId"] == ringing["callId"]
    await bob.close()
    ended = await alice.expect("call.ended")
    assert ended["reason"] == "disconnected"
    assert (await alice.expect("participant.left"))["identity"] == bob.identity


def pid_listening_on(port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                         text=True, check=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))  # type: ignore[union-attr]


async def test_users_of_a_crashed_replica_go_offline_after_the_ttl(
        parley_server: Callable[..., str], redis_url: str, token_secret: str,
        uniq: Callable[[str], str]) -> None:
    env = {"PARLEY_REDIS_URL": redis_url, "PARLEY_TOKEN_SECRET": token_secret,
           "PARLEY_PRESENCE_TTL_S": "2", "PARLEY_PRESENCE_HEARTBEAT_S": "0.5"}
    one, two = parley_server(env), parley_server(env)
    alice = await Client.connect(one, uniq("alice"))
    bob = await Client.connect(two, uniq("bob"))
    os.kill(pid_listening_on(int(two.rsplit(":", 1)[1])), signal.SIGKILL)  # no clean-up runs
    await asyncio.sleep(2.5)  # > PARLEY_PRESENCE_TTL_S: nobody refreshes bob any more
    started = time.monotonic()
    await alice.send(type="invite", to=bob.identity)
    reply = await alice.expect("call.ended", within=2)
    assert reply["reason"] == "offline"
    assert time.monotonic() - started < 0.5


async def test_a_newer_connection_on_another_replica_replaces_the_old_one(
        parley_server: Callable[..., str], redis_url: str, token_secret: str,
        uniq: Callable[[str], str]) -> None:
    env = {"PARLEY_REDIS_URL": redis_url, "PARLEY_TOKEN_SECRET": token_secret}
    one, two = parley_server(env), parley_server(env)
    who = uniq("alice")
    old = await Client.connect(one, who)
    new = await Client.connect(two, who)
    with pytest.raises(websockets.ConnectionClosed) as info:
        await old.expect("never", within=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4409
    bob = await Client.connect(one, uniq("bob"))
    await bob.request("invite", "call.ringing", to=who)
    assert (await new.expect("call.incoming"))["from"] == bob.identity

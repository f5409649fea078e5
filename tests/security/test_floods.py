"""Attack: flood signaling. Fan-out messages (media/caps) and joins as fast as the socket takes
them, more WebSockets than an address may hold, huge HTTP bodies and frames, a crowd in a room
without a Meeting resource, more tracks than a participant may publish. Each flood is cut with
its documented refusal and nothing else of the session is lost (docs/signaling.md, "Limits")."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import websockets

from tests.security.signaling_attack import alive, refused_with, sdp, ws_url
from tests.signaling.helpers import Client, user_token


async def test_fanout_and_join_floods_are_rate_limited_per_connection(
        parley_server: Callable[..., str]) -> None:
    base = parley_server()  # defaults: fan-out 20 burst + 10/s, joins 5 burst + 1/s
    flooder = await Client.connect(base, "flooder", room="flood")
    other = await Client.connect(base, "other", room="flood")
    await other.request("join", "joined", room="flood")
    await flooder.request("join", "joined", room="flood")
    started = time.monotonic()
    for i in range(200):
        await flooder.send(type="media", video=bool(i % 2), id=f"m{i}")
    await alive(flooder)
    elapsed = time.monotonic() - started
    limited = [m for m in flooder.inbox if m.get("code") == "rate_limited"]
    assert len(limited) >= 200 - 20 - int(10 * elapsed) - 1, (len(limited), elapsed)
    assert all(m["retryAfterMs"] > 0 and m["ref"].startswith("m") for m in limited)
    await alive(other)
    fanned = [m for m in other.inbox if m["type"] == "participant.media"]
    assert len(fanned) <= 20 + int(10 * elapsed) + 1, (len(fanned), elapsed)
    print(f"flood: 200 media in {elapsed:.2f}s, {len(limited)} rate_limited, "
          f"{len(fanned)} fanned out")

    # caps share the fan-out budget; joins have their own
    err = await flooder.request("caps", "error", maxHeight=360)
    assert err["code"] == "rate_limited"
    await flooder.request("leave", "left")
    flooder.inbox.clear()
    codes = []
    for _ in range(8):
        await flooder.send(type="join", room="flood")
        reply = await flooder.expect_any(("joined", "error"))
        codes.append(reply.get("code", "joined"))
        if reply["type"] == "joined":
            await flooder.request("leave", "left")
    # the first join of this test spent one of the 5: four more pass, then the flood is cut
    assert codes[:4] == ["joined"] * 4 and codes[-3:] == ["rate_limited"] * 3, codes
    flooder.inbox.clear()
    await asyncio.sleep(1.1)  # one join's worth of budget refills
    assert (await flooder.request("join", "joined", room="flood"))["room"] == "flood"
    for c in (flooder, other):
        await c.close()


async def test_connections_per_address_are_capped(parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_MAX_CONNECTIONS_PER_IP": "3"})
    held = [await Client.connect(base, f"c{i}") for i in range(3)]
    async with websockets.connect(ws_url(base, user_token(base, "c3"))) as ws:
        said, code = await refused_with(ws)
    assert (said[0]["code"], code) == ("too_many_connections", 4429)
    for c in held:
        await alive(c)
    await held.pop().close()

    async def admitted() -> Client | None:
        try:
            return await Client.connect(base, "c4")
        except (websockets.ConnectionClosed, TimeoutError):
            return None

    deadline = time.monotonic() + 5
    while (fresh := await admitted()) is None:  # the closed one is released at once
        assert time.monotonic() < deadline, "a freed slot was never reused"
    await alive(fresh)
    for c in (*held, fresh):
        await c.close()


async def test_request_bodies_and_frames_are_bounded(parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_MAX_BODY_BYTES": "65536"})
    big = b'{"name": "' + b"x" * 200_000 + b'"}'

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(50):
            yield b" " * 10_000

    async with httpx.AsyncClient(base_url=base) as http:
        for content in (big, chunked()):
            r = await http.post("/api/v1/guest-token", content=content,
                                headers={"content-type": "application/json"})
            assert r.status_code == 413 and r.json()["detail"]["code"] == "body_too_large"
        assert (await http.post("/api/v1/guest-token", json={"room": "r"})).status_code == 200
    bystander = await Client.connect(base, "bystander")
    big_frame = await Client.connect(base, "big")
    await big_frame.ws.send("x" * 70_000)
    _, code = await refused_with(big_frame.ws)
    assert code == 1009
    await alive(bystander)
    await bystander.close()


async def test_rooms_without_a_meeting_have_a_size_limit(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_MAX_ROOM_SIZE": "2"})
    members = [await Client.connect(base, f"m{i}", room="*") for i in range(3)]
    for m in members[:2]:
        await m.request("join", "joined", room="small")
    err = await members[2].request("join", "error", room="small")
    assert err["code"] == "room_full" and "admits 2" in err["message"]
    await alive(members[2])
    assert (await members[2].request("join", "joined", room="another"))["room"] == "another"
    for m in members:
        await m.close()


@pytest.mark.parametrize("mtype", ["offer", "sfu.join"])
async def test_publish_slots_are_bounded_per_participant(
        parley_server: Callable[..., str], mtype: str) -> None:
    base = parley_server()  # default: 4 sending tracks
    a = await Client.connect(base, "a", room="slots")
    b = await Client.connect(base, "b", room="slots")
    await a.request("join", "joined", room="slots")
    await b.request("join", "joined", room="slots")
    fields = {"to": "b"} if mtype == "offer" else {}
    err = await a.request(mtype, "error", sdp=sdp(*["sendrecv"] * 5), **fields)
    assert err["code"] == "too_many_tracks" and "at most 4" in err["message"]
    await alive(a)
    if mtype == "offer":
        await a.send(type="offer", sdp=sdp(*["sendrecv"] * 4, "recvonly", "recvonly"), to="b")
        assert (await b.expect("offer"))["from"] == "a"
    for c in (a, b):
        await c.close()

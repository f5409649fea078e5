"""Client telemetry and lifecycle events against a real `parley up` (issue 13): quality samples
and client info are checked (bad ones refused with ``bad_telemetry``, the session goes on),
throttled per connection, and land in the event file valid against the schema; a socket that
goes away without a leave is ``participant.dropped``, a leave is ``participant.left``; a call
whose room cannot be joined is ``call.failed``; a real Chromium page in a meeting sends samples
with a resolution and a frame rate, which the engine counts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley import tokens
from parley.analytics.model import counts, parse
from parley.events import validate
from tests.conftest import eventually, wait_until
from tests.security.signaling_attack import alive
from tests.signaling.helpers import Client

GOOD = {"intervalMs": 1000, "path": "p2p", "rttMs": 12.5, "loss": 0.01, "tracks": [
    {"kind": "video", "direction": "in", "source": "camera", "width": 1280, "height": 720,
     "fps": 29.5, "bitrateKbps": 1400, "freezes": 1, "freezeMs": 240},
    {"kind": "video", "direction": "out", "source": "camera", "width": 640, "height": 360,
     "fps": 30, "bitrateKbps": 600},
    {"kind": "audio", "direction": "in", "source": "microphone", "bitrateKbps": 32}]}
BAD = {
    "wrong type": {**GOOD, "intervalMs": "1000"},
    "huge array": {**GOOD, "tracks": [{"kind": "audio", "direction": "in"}] * 1000},
    "unknown field (an address)": {**GOOD, "ip": "192.0.2.1"},
    "out of range": {**GOOD, "loss": 3},
    "bad track": {**GOOD, "tracks": [{"kind": "video", "direction": "sideways"}]},
}


def uniq(name: str) -> str:
    """Each `parley up` of these tests has its own store; names only need to be readable."""
    return name


def events_of(base: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The events `parley up` at ``base`` wrote so far (its JSONL sink), each schema-checked."""
    port = base.rsplit(":", 1)[1]
    path = tmp_path / f"parley-{port}" / "events.jsonl"
    out = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for e in out:
        validate(e)
    return out


async def wait_events(base: str, tmp_path: Path, pick: Callable[[dict[str, Any]], bool],
                      n: int = 1, within: float = 5) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]]:
        hits = [e for e in events_of(base, tmp_path) if pick(e)]
        return hits if len(hits) >= n else []

    return await eventually(found, within, f"{n} matching events")


async def test_samples_are_checked_and_a_bad_one_does_not_end_the_session(
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server({"PARLEY_TELEMETRY_INTERVAL_MS": "1000",
                          "PARLEY_RATE_TELEMETRY_BURST": "12"})
    room = uniq("tele")
    alice = await Client.connect(base, uniq("alice"), room)
    assert alice.welcome["telemetryIntervalMs"] == 1000
    await alice.send(type="client.info", id="info",
                     info={"browser": "firefox", "browserVersion": "128", "device": "mobile"})
    early = await alice.request("quality.sample", "error", sample=GOOD, id="early")
    assert early["code"] == "not_joined" and early["ref"] == "early"
    await alice.request("join", "joined", room=room)

    await alice.send(type="quality.sample", sample=GOOD, id="good-1")
    for name, sample in BAD.items():
        err = await alice.request("quality.sample", "error", sample=sample, id=name)
        assert err["code"] == "bad_telemetry" and err["ref"] == name, (name, err)
    for info in ({"device": "toaster"}, {"browser": "x" * 40}, {"userAgent": "Mozilla/5.0"}):
        err = await alice.request("client.info", "error", info=info)
        assert err["code"] == "bad_telemetry", (info, err)
    err = await alice.request("quality.sample", "error", sample=[1, 2])
    assert err["code"] == "bad_message", err  # not even an object: the protocol layer refuses
    await alive(alice)
    await alice.send(type="quality.sample", sample={**GOOD, "path": "turn"}, id="good-2")
    await alive(alice)
    assert not [m for m in alice.inbox if m["type"] == "error"
                and m.get("ref") in ("info", "good-1", "good-2")], alice.inbox

    mine = await wait_events(base, tmp_path, lambda e: e["type"] == "quality.sample"
                             and e["data"]["identity"] == alice.identity, n=2)
    assert len(mine) == 2 and [e["data"]["path"] for e in mine] == ["p2p", "turn"]
    data = mine[0]["data"]
    assert mine[0]["room"] == room and data["device"] == "mobile"
    assert data["browser"] == "firefox" and data["browserVersion"] == "128"
    # the summary analytics counts: best received video, received freezes
    assert (data["height"], data["width"], data["fps"], data["freezes"]) == (720, 1280, 29.5, 1)
    assert data["transcoded"] is False and len(data["tracks"]) == 3
    assert "ip" not in json.dumps(mine)
    info = [e for e in events_of(base, tmp_path) if e["type"] == "client.info"]
    assert [e["data"] for e in info] == [{"identity": alice.identity, "device": "mobile",
                                          "browser": "firefox", "browserVersion": "128"}]
    joined = next(e for e in events_of(base, tmp_path) if e["type"] == "participant.joined")
    assert joined["data"]["device"] == "mobile" and 0 <= joined["data"]["joinMs"] < 2000
    engine = counts(parse(mine[0]))  # what the analytics engine makes of it
    assert engine["media_ms_hd"] == 1000 and engine["freezes"] == 1, engine
    await alice.close()


async def test_a_sample_flood_is_throttled_and_the_meeting_goes_on(
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server()  # defaults: one sample per 10 s, budget 5 burst + 3 per interval
    room = uniq("flood")
    flooder = await Client.connect(base, uniq("flooder"), room)
    other = await Client.connect(base, uniq("other"), room)
    assert flooder.welcome["telemetryIntervalMs"] == 10000
    await other.request("join", "joined", room=room)
    await flooder.request("join", "joined", room=room)
    started = time.monotonic()
    for i in range(1000):
        await flooder.send(type="quality.sample", sample=GOOD, id=f"s{i}")
    await alive(flooder)
    elapsed = time.monotonic() - started
    limited = [m for m in flooder.inbox if m.get("code") == "rate_limited"]
    allowed = 5 + int(0.3 * elapsed) + 1
    assert len(limited) >= 1000 - allowed, (len(limited), elapsed)
    assert all(m["retryAfterMs"] > 0 and m["ref"].startswith("s") for m in limited)
    await alive(other)
    await other.send(type="media", video=False)
    await flooder.expect("participant.media", identity=other.identity)
    samples = [e for e in events_of(base, tmp_path) if e["type"] == "quality.sample"]
    assert 5 <= len(samples) <= allowed, (len(samples), elapsed)
    print(f"telemetry flood: 1000 samples in {elapsed:.2f}s, {len(limited)} rate_limited, "
          f"{len(samples)} events")
    await flooder.close()
    await other.close()


async def test_a_lost_connection_is_dropped_and_a_leave_is_left(
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server()
    room = uniq("drop")
    stayer, leaver, loser = [await Client.connect(base, uniq(n), room)
                             for n in ("stayer", "leaver", "loser")]
    for c in (stayer, leaver, loser):
        await c.request("join", "joined", room=room)
    await leaver.request("leave", "left")
    t0 = time.monotonic()
    loser.ws.transport.abort()  # the page is killed: no leave, no close frame
    await stayer.expect("participant.left", identity=loser.identity, within=20)
    print(f"drop seen after {time.monotonic() - t0:.2f}s")

    gone = await wait_events(base, tmp_path, lambda e: e["type"] in (
        "participant.left", "participant.dropped"), n=2)
    by = {e["data"]["identity"]: e for e in gone}
    assert by[leaver.identity]["type"] == "participant.left"
    assert "reason" not in by[leaver.identity]["data"]
    assert by[loser.identity]["type"] == "participant.dropped"
    assert by[loser.identity]["data"]["reason"] == "connection_lost"
    assert by[loser.identity]["data"]["participants"] == 1
    assert counts(parse(by[loser.identity]))["dropped"] == 1
    await stayer.close()  # a clean close without a leave is a drop too
    last = await wait_events(base, tmp_path, lambda e: e["type"] == "participant.dropped", n=2)
    assert {e["data"]["identity"] for e in last} == {loser.identity, stayer.identity}
    await leaver.close()
    await alive_server(base)


async def alive_server(base: str) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/healthz")).status_code == 200


async def test_a_call_whose_room_cannot_be_joined_failed(
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server({"PARLEY_EMBED_CALL_SERVER": "0"})  # a call-server join is refused
    alice = await Client.connect(base, uniq("alice"))
    bob = await Client.connect(base, uniq("bob"))
    ringing = await alice.request("invite", "call.ringing", to=bob.identity)
    await bob.expect("call.incoming")
    await bob.send(type="accept", callId=ringing["callId"])
    room = (await alice.expect("call.accepted"))["room"]
    err = await alice.request("join", "error", room=room, topology="sfu")
    assert err["code"] == "sfu_unavailable"
    failed = await wait_events(base, tmp_path, lambda e: e["type"] == "call.failed")
    assert failed[0]["callId"] == ringing["callId"] and failed[0]["room"] == room
    assert failed[0]["data"] == {"reason": "sfu_unavailable", "identity": alice.identity}
    assert counts(parse(failed[0]))["outcome.failed"] == 1
    await alive(alice)
    await alice.close()
    await bob.close()


async def test_a_room_moved_to_the_call_server_is_a_topology_switch(
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server()  # `parley up` embeds a call server
    ann = await Client.connect(base, "ann", "big")
    ben = await Client.connect(base, "ben", "big")
    await ann.request("join", "joined", room="big")
    joined = await ben.request("join", "joined", room="big", topology="sfu")
    assert joined["topology"] == "sfu"
    await ann.expect("sfu.start", reason="requested")
    switched = await wait_events(base, tmp_path, lambda e: e["type"] == "topology.switched")
    assert switched[0]["room"] == "big" and switched[0]["data"] == {
        "from": "p2p", "to": "sfu", "reason": "requested", "moved": 1}
    assert counts(parse(switched[0]))["topology_switches"] == 1
    await ann.close()
    await ben.close()


@pytest.mark.browser
def test_a_browser_in_a_meeting_sends_quality_samples(
        browser: Any, parley_server: Callable[..., str], tmp_path: Path) -> None:
    from tests.signaling.browser import close, open_client

    base = parley_server({"PARLEY_TELEMETRY_INTERVAL_MS": "1000"})
    a = open_client(browser, f"{base}/m/tele?name=Alice&user=alice")
    b = open_client(browser, f"{base}/m/tele?name=Bob&user=bob")
    try:
        def seen() -> list[dict[str, Any]]:
            return [e for e in events_of(base, tmp_path) if e["type"] == "quality.sample"
                    and e["data"]["identity"] == "alice" and e["data"].get("height", 0) > 0
                    and e["data"].get("fps", 0) > 0 and any(
                        t["direction"] == "in" and t["kind"] == "video"
                        for t in e["data"]["tracks"])]

        started = time.monotonic()
        sample = wait_until(seen, 15, what="a quality.sample with video from alice")[0]["data"]
        print(f"first video sample {time.monotonic() - started:.1f}s after both pages opened: "
              f"{sample['width']}x{sample['height']} {sample['fps']} fps, "
              f"rtt {sample.get('rttMs')} ms")
        assert sample["path"] == "p2p" and sample["device"] == "desktop"
        assert sample["browser"] == "chrome" and int(sample["browserVersion"]) > 100
        infos = {e["data"]["identity"]: e["data"] for e in events_of(base, tmp_path)
                 if e["type"] == "client.info"}
        assert infos["alice"]["device"] == infos["bob"]["device"] == "desktop"
        assert "userAgent" not in json.dumps(infos)
        a.evaluate("window.parley.leave()")
        wait_until(lambda: [e for e in events_of(base, tmp_path)
                            if e["type"] == "participant.left"], 5, what="alice left")
        b.close()  # the page goes away without leaving
        dropped = wait_until(lambda: [e for e in events_of(base, tmp_path)
                                      if e["type"] == "participant.dropped"], 10,
                             what="bob dropped")
        assert dropped[0]["data"]["identity"] == "bob"
        port = base.rsplit(":", 1)[1]
        secret = (tmp_path / f"parley-{port}" / "token-secret").read_text().strip()
        admin = tokens.mint(secret, identity="ops", room="*", grants=("admin",))

        def reported() -> dict[str, Any] | None:
            rows = httpx.get(f"{base}/analytics/data",
                             headers={"Authorization": f"Bearer {admin}"}).json()["byLabels"]
            row = next((r for r in rows if r["device"] == "desktop"), None)
            return row if row and row["dropped"] == 1 and row["qualitySamples"] > 0 else None

        row = wait_until(reported, 10, what="the report counts the drop and the samples")
        assert row["joined"] == 2 and row["dropRate"] == 0.5 and row["mediaShare"]["sd"] > 0
    finally:
        close(a, b)

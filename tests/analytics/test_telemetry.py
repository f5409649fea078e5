"""Client telemetry and lifecycle events against a real `parley up` (issue 13): quality samples
and client info are checked (bad ones refused with ``bad_telemetry``, the session goes on),
throttled per connection, and land in the event file valid against the schema; a socket that
goes away without a leave is ``participant.dropped``, a leave is ``participant.left``; a call
whose room cannot be joined is ``call.failed``; two real Chromium pages in a 30 s meeting send
samples every 10 s, which the report counts; a closed page is a drop, a leave is not."""

from __future__ import annotations

import datetime as dt
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


MEETING_S = 30  # the meeting: three sample intervals of the web client's default 10 s


def _at(event: dict[str, Any]) -> float:
    """An event's time (its envelope's RFC 3339 stamp) in seconds."""
    return dt.datetime.fromisoformat(event["time"]).timestamp()


def _video_in(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """Received video tracks with decoded frames (the summary then describes the best one)."""
    return [t for t in sample["tracks"]
            if t["kind"] == "video" and t["direction"] == "in" and t.get("height")]


@pytest.mark.browser
def test_two_browsers_in_a_30_s_meeting_are_sampled_reported_and_a_closed_page_is_a_drop(
        browser: Any, parley_server: Callable[..., str], tmp_path: Path) -> None:
    """Two Chromium pages meet for 30 s with the default 10 s interval: each one's samples
    arrive with a plausible resolution, frame rate and bitrate, and `/analytics/data` counts
    exactly those samples; Alice leaves (not a drop), Bob's page is closed (a drop)."""
    from tests.signaling.browser import close, open_client

    base = parley_server()  # the default telemetryIntervalMs: 10 s
    started = time.monotonic()
    a = open_client(browser, f"{base}/m/tele?name=Alice&user=alice")
    b = open_client(browser, f"{base}/m/tele?name=Bob&user=bob")
    try:
        def of(etype: str, who: str | None = None) -> list[dict[str, Any]]:
            return [e for e in events_of(base, tmp_path) if e["type"] == etype
                    and (who is None or e["data"]["identity"] == who)]

        joined = wait_until(lambda: (lambda j: j if len(j) == 2 else None)(
            of("participant.joined")), 20, what="both pages joined")
        meeting_from = max(_at(e) for e in joined)
        print(f"both in the meeting {time.monotonic() - started:.1f}s after opening the pages")

        # The meeting lasts until each page's third sample (10, 20, 30 s after its join):
        # awaited as events, so no sleep; the 30 s are the web client's own timer.
        wait_until(lambda: all(len(of("quality.sample", w)) >= 3 for w in ("alice", "bob")),
                   MEETING_S + 15, 0.5, what="three samples from each page")
        for who, other in (("alice", "bob"), ("bob", "alice")):
            samples = [e["data"] for e in of("quality.sample", who)]
            video = [s for s in samples if _video_in(s)]
            assert len(video) >= 2, (who, samples)  # video from the other page, every 10 s
            for s in samples:
                assert 9_000 <= s["intervalMs"] <= 12_000, s
                assert (s["path"], s["device"], s["browser"]) == ("p2p", "desktop", "chrome")
                assert int(s["browserVersion"]) > 100 and 0 <= s.get("rttMs", 0) < 1000
            for s in video:
                track = max(_video_in(s), key=lambda t: t["bitrateKbps"])
                assert 160 <= s["width"] <= 1920 and 90 <= s["height"] <= 1080, s
                assert s["transcoded"] is False and 3 <= s["fps"] <= 60, s
                assert 30 <= track["bitrateKbps"] <= 8000, s  # a camera, not a trickle
                assert any(t["direction"] == "out" and t["kind"] == "video"
                           and t["bitrateKbps"] > 0 for t in s["tracks"]), s
            print(f"{who}: {len(samples)} samples, receiving {other}: "
                  + ", ".join(f"{s['width']}x{s['height']} {s['fps']} fps "
                              f"{max(t['bitrateKbps'] for t in _video_in(s))} kbps" for s in video)
                  + f"; rtt {[s.get('rttMs') for s in samples]} ms")
        lasted = max(_at(e) for e in of("quality.sample")) - meeting_from
        assert lasted >= MEETING_S - 1, lasted  # the last sample closes 30 s of meeting
        infos = {e["data"]["identity"]: e["data"] for e in of("client.info")}
        assert infos["alice"]["device"] == infos["bob"]["device"] == "desktop"
        assert "userAgent" not in json.dumps(infos)

        a.evaluate("window.parley.leave()")
        wait_until(lambda: of("participant.left", "alice"), 5, what="alice left")
        b.close()  # the page goes away without leaving
        t0 = time.monotonic()
        wait_until(lambda: of("participant.dropped", "bob"), 10, what="bob dropped")
        print(f"bob's closed page a drop after {time.monotonic() - t0:.2f}s; meeting "
              f"{lasted:.1f}s; the test {time.monotonic() - started:.1f}s")
        assert not of("participant.dropped", "alice") and not of("participant.left", "bob")

        # The report counts exactly these samples and their media time (from the engine's model)
        samples = of("quality.sample")
        media = {k: sum(counts(parse(e)).get(f"media_ms_{k}", 0) for e in samples)
                 for k in ("hd", "sd", "transcoded")}
        share = {k: round(v / sum(media.values()), 4) for k, v in media.items()}
        port = base.rsplit(":", 1)[1]
        secret = (tmp_path / f"parley-{port}" / "token-secret").read_text().strip()
        admin = tokens.mint(secret, identity="ops", room="*", grants=("admin",))

        def reported() -> dict[str, Any] | None:
            rows = httpx.get(f"{base}/analytics/data",
                             headers={"Authorization": f"Bearer {admin}"}).json()["byLabels"]
            row = next((r for r in rows if r["device"] == "desktop"), None)
            return row if row and row["dropped"] == 1 and row["qualitySamples"] == len(
                samples) else None

        row = wait_until(reported, 10, what="the report counts the drop and every sample")
        assert (row["joined"], row["dropped"], row["dropRate"]) == (2, 1, 0.5)
        assert row["participantsNow"] == 0 and row["meetingsStarted"] == 1
        assert row["mediaShare"] == share and share["sd"] + share["hd"] > 0, (row, media)
        print(f"report: {row['qualitySamples']} samples, media share {row['mediaShare']} of "
              f"{sum(media.values()) / 1000:.0f} s, drop rate {row['dropRate']}")
    finally:
        close(a, b)

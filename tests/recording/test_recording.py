"""Recording end to end: two aiortc participants through a real call server, signaling's API,
15 s recorded into the local store and into the test bed's S3 server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.media.node import CallServer
from parley.recorder import links, webhook
from parley.recorder.creator import load_tracks
from parley.recorder.store import S3Store, open_store
from tests.media.client import wait_for
from tests.media.conftest import running
from tests.signaling.helpers import Client as WsClient

from .conftest import FixedDirectory, Stack, signaling
from .media import TONES, packets, participant, probe, tone_levels

RECORD_S = 15.0


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        str | None]:
    """None: the embedded default (a directory under the data dir); else a fresh S3 bucket."""
    if request.param == "local":
        yield None
        return
    s3 = request.getfixturevalue("s3")
    for key, env in (("endpoint", "PARLEY_S3_ENDPOINT"), ("access_key", "PARLEY_S3_ACCESS_KEY"),
                     ("secret_key", "PARLEY_S3_SECRET_KEY"), ("region", "PARLEY_S3_REGION")):
        monkeypatch.setenv(env, s3[key])
    bucket = f"parley-rec-{uuid.uuid4().hex[:8]}"
    store = S3Store(bucket, endpoint=s3["endpoint"], access_key=s3["access_key"],
                    secret_key=s3["secret_key"], region=s3["region"])
    store.ensure_bucket()
    yield f"s3://{bucket}/recordings-test"


async def download(stack: Stack, url: str, dest: Path, token: str) -> Path:
    r = await stack.http.get(url if url.startswith("http") else stack.base + url,
                             headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    await asyncio.to_thread(dest.write_bytes, r.content)
    return dest


async def test_two_participants_record_15_seconds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str | None) -> None:
    room = f"rec-{uuid.uuid4().hex[:6]}"
    server = CallServer()
    async with running(server) as url, signaling(
            tmp_path, FixedDirectory(url, server.id), monkeypatch, store_url) as stack:
        a, b = participant("a", room), participant("b", room)
        ws = [await WsClient.connect(stack.base, n, room, token=stack.token(n, room))
              for n in ("a", "b")]
        try:
            for w in ws:
                await w.request("join", "joined", room=room)
            await a.join(url)
            await b.join(url)
            await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 20,
                           "a and b decoding each other")

            # without the record grant: refused, and nothing started
            r = await stack.control(room, "start", stack.token("a", room))
            assert r.status_code == 403, r.text
            assert r.json()["detail"]["code"] == "grant_missing"
            assert "record" in r.json()["detail"]["message"]
            host = stack.token("a", room, ("publish", "subscribe", "record"))
            assert await stack.recordings(room, host) == []

            r = await stack.control(room, "start", host)
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            assert r.json()["state"] == "recording"
            for w in ws:  # everyone in the meeting sees that it is being recorded
                assert (await w.expect("recording.started", 5))["recording"] == rid
            await asyncio.sleep(RECORD_S)
            r = await stack.control(room, "stop", host)
            assert r.status_code == 200 and r.json()["state"] == "processing", r.text
            rec = await stack.wait_ready(room, host)
            assert rec["state"] == "ready", rec
            notes = [await w.expect("recording.ready", 30) for w in ws]
        finally:
            await asyncio.gather(a.close(), b.close(), *(w.close() for w in ws))

        # both participants were notified with a working signed link
        for note in notes:
            assert note["id"] == rid and note["compositeUrl"] and "sig=" in note["compositeUrl"]
        # b has no record grant: the download is allowed because b was in the meeting
        composite = probe(await download(stack, notes[1]["compositeUrl"], tmp_path / "c.mp4",
                                         stack.token("b", room)))
        assert composite["streams"] == ["audio", "video"], composite
        assert abs(composite["duration"] - RECORD_S) <= 0.1 * RECORD_S, composite["duration"]
        assert len(composite["variances"]) >= 5
        assert min(composite["variances"]) > 100, composite["variances"]  # not blank
        assert all(min(t) > 100 for t in composite["tile_variances"]), composite["tile_variances"]
        assert composite["audio_rms"] > 0.05, composite
        levels = tone_levels(tmp_path / "c.mp4", [TONES["a"], TONES["b"]])
        assert min(levels) > 0.2, levels  # both participants' tones are in the mix

        # per-track files: the publisher's frames byte for byte (remuxed, not re-encoded)
        store = open_store(stack.hub.recordings.store.url)  # type: ignore[attr-defined]
        assert store.url.startswith("s3://" if store_url else "file://")
        tapped = {t.name: t for t in load_tracks(store, rid)}
        node = json.loads(store.get(f"recordings/{rid}/nodes/{server.id}.json"))
        tap_frames = {f"{t['participant']}~{t['track']}": t["frames"] for t in node["tracks"]}
        assert {t["track"] for t in rec["tracks"]} == {"a-camera", "a-mic", "b-camera", "b-mic"}
        for t in rec["tracks"]:
            name = f"{t['participant']}~{t['track']}"
            path = await download(stack, t["url"], tmp_path / f"{name}.webm", host)
            got = packets(path)
            assert got == [f[2] for f in tapped[name].frames]
            assert len(got) == tap_frames[name] > (25 * RECORD_S if t["kind"] == "video"
                                                   else 45 * RECORD_S)
            info = probe(path)
            assert info["codecs"] == {t["kind"]: "vp8" if t["kind"] == "video" else "opus"}
            if t["kind"] == "video":
                assert (tapped[name].width, tapped[name].height) == (160, 120)

        # the webhook arrived and its signature verifies (and fails for a tampered body)
        await wait_for(lambda: stack.webhooks.received, 10, "webhook")
        headers, body = stack.webhooks.received[-1]
        assert webhook.verify(stack.webhooks.secret, body, headers["parley-signature"])
        assert not webhook.verify(stack.webhooks.secret, body + b" ",
                                  headers["parley-signature"])
        assert json.loads(body)["id"] == rid and json.loads(body)["type"] == "recording.ready"

        # an expired link and a forged one are refused
        expired, _ = links.link(stack.secret, rid, "composite.mp4", ttl_s=-5)
        r = await stack.http.get(stack.base + expired)
        assert r.status_code == 403 and r.json()["detail"]["code"] == "link_expired", r.text
        forged = notes[0]["compositeUrl"].replace("composite.mp4", "a~a-camera.webm")
        r = await stack.http.get(forged if forged.startswith("http") else stack.base + forged)
        assert r.status_code == 403 and r.json()["detail"]["code"] == "link_invalid", r.text


async def test_recording_api_refuses_bad_tokens(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    room = f"rec-{uuid.uuid4().hex[:6]}"
    async with signaling(tmp_path, FixedDirectory("http://127.0.0.1:9", "none"),
                         monkeypatch) as stack:
        r = await stack.http.post(f"{stack.base}/api/v1/rooms/{room}/recording",
                                  json={"action": "start"})
        assert r.status_code == 401 and r.json()["detail"]["code"] == "token_invalid"
        other = stack.token("a", "another-room", ("record",))
        r = await stack.control(room, "start", other)
        assert r.status_code == 401, r.text
        r = await stack.control(room, "start", stack.token("v", room, ("subscribe",)))
        assert r.status_code == 403 and r.json()["detail"]["code"] == "grant_missing"
        r = await stack.control(room, "stop", stack.token("h", room, ("record",)))
        assert r.status_code == 409 and r.json()["detail"]["code"] == "not_recording"
        # the placed call server does not answer: refused, nothing left "recording"
        r = await stack.control(room, "start", stack.token("h", room, ("record",)))
        assert r.status_code == 502 and r.json()["detail"]["code"] == "call_server_error"
        assert await stack.recordings(room, stack.token("h", room, ("record",))) == []


async def test_recording_stops_by_itself_when_the_meeting_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_RECORDING_WATCH_S", "0.5")
    room = f"rec-{uuid.uuid4().hex[:6]}"
    server = CallServer()
    async with running(server) as url, signaling(
            tmp_path, FixedDirectory(url, server.id), monkeypatch) as stack:
        a, b = participant("a", room), participant("b", room)
        w = await WsClient.connect(stack.base, "a", room, token=stack.token("a", room))
        await w.request("join", "joined", room=room)
        await a.join(url)
        await b.join(url)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 20, "decode")
        host = stack.token("a", room, ("record",))
        rid = (await stack.control(room, "start", host)).json()["id"]
        await asyncio.sleep(4.0)
        assert (await stack.recordings(room, host))[-1]["state"] == "recording"
        await a.close()
        await asyncio.sleep(2.0)  # one participant left: still a meeting, still recording
        assert (await stack.recordings(room, host))[-1]["state"] == "recording"
        await b.close()
        await w.close()
        rec = await stack.wait_ready(room, host, limit=30)
        assert rec["id"] == rid and rec["state"] == "ready", rec
        assert 3.5 <= rec["duration"] <= 8.0, rec["duration"]

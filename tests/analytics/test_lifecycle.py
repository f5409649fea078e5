"""recording.* and broadcast.* events from the real services: a recording through a real call
server and signaling's API, a broadcast through `parley up`'s WHIP ingest. The events match the
schema and the engine counts each once (a recording event emitted again has the same id)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from parley import events, tokens
from parley.analytics.engine import Engine, JsonlSource
from parley.analytics.series import totals
from parley.analytics.state import SqliteState
from parley.media.node import CallServer
from tests.broadcast.clients import Publisher
from tests.conftest import eventually
from tests.media.conftest import running
from tests.recording.conftest import FixedDirectory, signaling
from tests.recording.media import participant
from tests.signaling.helpers import Client as WsClient

SECRET = "analytics-lifecycle-secret-of-at-least-32-bytes"


def read_events(path: Path, prefix: str) -> list[dict]:
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in found if e["type"].startswith(prefix)]


def count(path: Path, tmp: Path) -> dict[str, int]:
    """Run the engine over the JSONL file once; all-time counters summed over the labels."""
    state = SqliteState(tmp / f"count-{uuid.uuid4().hex[:6]}.sqlite")
    Engine(JsonlSource(path, state), state, None).run(until_idle=True)
    out: dict[str, int] = {}
    for (metric, _, _), v in totals(state).items():
        out[metric] = out.get(metric, 0) + v
    return out


async def test_a_recording_emits_started_stopped_ready_once_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    room = f"rec-{uuid.uuid4().hex[:6]}"
    server = CallServer()
    async with running(server) as url, signaling(
            tmp_path, FixedDirectory(url, server.id), monkeypatch) as stack:
        a = participant("a", room)
        ws = await WsClient.connect(stack.base, "a", room, token=stack.token("a", room))
        try:
            await ws.request("join", "joined", room=room)
            await a.join(url)
            host = stack.token("a", room, ("publish", "subscribe", "record"))
            r = await stack.control(room, "start", host)
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            await ws.expect("recording.started", 5)
            await asyncio.sleep(3.0)  # what is recorded: 3 s of real media (2 s tap chunks)
            r = await stack.control(room, "stop", host)
            assert r.status_code == 200, r.text
            rec = await stack.wait_ready(room, host)
            assert rec["state"] == "ready", rec
            await ws.expect("recording.ready", 30)
        finally:
            await a.close()
            await ws.close()
        jsonl = stack.hub.settings.data_dir / "events.jsonl"
        found = read_events(jsonl, "recording.")
        assert [e["type"] for e in found] == ["recording.started", "recording.stopped",
                                             "recording.ready"], found
        for e in found:
            events.validate(e)
            assert e["room"] == room and e["data"]["recording"] == rid
            assert e["id"] == f"{e['type']}:{rid}"
        started, stopped, ready = (e["data"] for e in found)
        assert started["by"] == "a" and started["node"] == server.id
        assert stopped["by"] == "a" and 3000 <= stopped["durationMs"] < 30_000, stopped
        assert ready["tracks"] == 2 and ready["durationMs"] > 1000, ready
        # a takeover that notifies again emits the same event: counted once
        manifest = {"id": rid, "room": room, "files": {"tracks": [1, 2]}, "duration": 3.0}
        stack.hub.recordings._event("recording.ready", manifest, tracks=2, durationMs=3000)
        assert len(read_events(jsonl, "recording.ready")) == 2
    figures = count(jsonl, tmp_path)
    assert figures["recordings_started"] == figures["recordings_stopped"] == 1, figures
    assert figures["recordings_ready"] == 1 and "recordings_failed" not in figures, figures
    assert figures["recording_ms"] == stopped["durationMs"]


async def test_a_broadcast_emits_started_sources_and_ended(
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    jsonl = tmp_path / f"parley-{base.rsplit(':', 1)[1]}" / "events.jsonl"
    name = f"show-{uuid.uuid4().hex[:6]}"

    def key(source: str, *grants: str) -> str:
        return tokens.mint(SECRET, identity=source, room=tokens.broadcast_room(name),
                           grants=grants or ("publish",))

    cams = [Publisher(base, name, key(c), (160, 120)) for c in ("cam1", "cam2")]
    try:
        for cam in cams:
            assert (await cam.publish()).status_code == 201
        again = Publisher(base, name, key("cam1"), (160, 120))  # replaces cam1's session
        cams.append(again)
        assert (await again.publish()).status_code == 201
        for cam in cams[1:]:
            await cam.stop()
    finally:
        for cam in cams:
            await cam.stop(delete=False)

    found = read_events(jsonl, "broadcast.")
    assert [(e["type"], e["data"].get("source")) for e in found] == [
        ("broadcast.started", "cam1"), ("broadcast.source.connected", "cam1"),
        ("broadcast.source.connected", "cam2"), ("broadcast.source.disconnected", "cam1"),
        ("broadcast.source.connected", "cam1"), ("broadcast.source.disconnected", "cam2"),
        ("broadcast.source.disconnected", "cam1"), ("broadcast.ended", None)], found
    for e in found:
        events.validate(e)
        assert e["room"] == f"broadcast:{name}" and e["data"]["broadcast"] == name
    assert found[1]["data"]["kinds"] == ["audio", "video"]
    ended = found[-1]["data"]["durationMs"]

    admin = tokens.mint(SECRET, identity="ops", room="*", grants=("admin",))
    async with httpx.AsyncClient(base_url=base) as http:
        async def counted() -> dict | None:
            data = (await http.get("/analytics/data", params={"token": admin})).json()
            rows = [r for r in data["byLabels"] if r["broadcastsStarted"]]
            return rows[0] if rows and rows[0]["broadcastMs"] else None

        row = await eventually(counted, 10, "the broadcast counted by parley up's engine")
    assert row["broadcastsStarted"] == 1 and row["broadcastSources"] == 3, row
    assert row["broadcastMs"] == ended and row["events"]["broadcast.ended"] == 1, row

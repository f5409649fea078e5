"""Signaling with ``PARLEY_FILE_CREATOR=job``: stopping a recording leaves a pending marker in the
store and compiles nothing; when the Job's command has made the manifest ready, everyone in the
meeting gets ``recording.ready`` and the webhook fires, exactly as on the inline path."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from parley.media.node import CallServer
from parley.operator.recordings import job_command
from parley.recorder import job, state, webhook
from tests.media.client import wait_for
from tests.media.conftest import running
from tests.signaling.helpers import Client as WsClient

from .conftest import FixedDirectory, signaling
from .jobs import new_bucket, record, run_job_command, s3_env


@pytest.mark.s3
async def test_job_mode_leaves_compiling_to_the_job_and_notifies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3: dict[str, str]) -> None:
    store = new_bucket(s3)
    for key, value in s3_env(s3).items():
        monkeypatch.setenv(key, value)
    compiled: list[str] = []

    def tripwire(_store: object, recording: str, **_: object) -> dict[str, object]:
        compiled.append(recording)
        raise AssertionError("signaling compiled a recording in job mode")

    monkeypatch.setattr(job, "compile_recording", tripwire)
    room = f"rec-{uuid.uuid4().hex[:6]}"
    server = CallServer()
    async with running(server) as url, signaling(
            tmp_path, FixedDirectory(url, server.id), monkeypatch, store.url,
            file_creator="job") as stack:
        ws = [await WsClient.connect(stack.base, n, room, token=stack.token(n, room))
              for n in ("a", "b")]
        try:
            for w in ws:
                await w.request("join", "joined", room=room)
            host = stack.token("a", room, ("publish", "subscribe", "record"))
            r = await stack.control(room, "start", host)
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            # the meeting's media, as the tap chunks it (no aiortc: only the file matters here)
            await asyncio.to_thread(record, store, rid)
            r = await stack.control(room, "stop", host)
            assert r.status_code == 200 and r.json()["state"] == "processing", r.text
            assert await asyncio.to_thread(state.pending_ids, store) == [rid]

            await asyncio.sleep(3)  # the inline path would be compiling by now
            manifest = await asyncio.to_thread(state.load, store, rid)
            assert manifest["state"] == "processing" and manifest["progress"] == 0.0
            assert not await asyncio.to_thread(store.list, f"recordings/{rid}/files/")
            assert compiled == []
            with pytest.raises(TimeoutError):  # nothing is ready, so nobody was told so
                await ws[0].expect("recording.ready", 0.5)

            # the operator's Job (its command, run here: kwok runs no containers)
            done = await asyncio.to_thread(run_job_command, job_command(store.url, rid),
                                           s3_env(s3))
            assert done.returncode == 0, done.stderr[-2000:]
            notes = [await w.expect("recording.ready", 15) for w in ws]
        finally:
            await asyncio.gather(*(w.close() for w in ws))

        for note in notes:
            assert note["id"] == rid and note["state"] == "ready"
            assert note["compositeUrl"] and "sig=" in note["compositeUrl"]
            assert len(note["tracks"]) == 4
        r = await stack.http.get(stack.base + notes[0]["compositeUrl"], headers={
            "Authorization": f"Bearer {stack.token('a', room)}"})  # a was in the meeting
        assert r.status_code == 200 and r.content[4:8] == b"ftyp"
        await wait_for(lambda: stack.webhooks.received, 10, "webhook")
        headers, body = stack.webhooks.received[-1]
        assert webhook.verify(stack.webhooks.secret, body, headers["parley-signature"])
        assert json.loads(body)["id"] == rid and json.loads(body)["type"] == "recording.ready"
        assert len(stack.webhooks.received) == 1
        # signaling never clears the marker: the operator owns it
        assert await asyncio.to_thread(state.pending_ids, store) == [rid]
        assert compiled == []

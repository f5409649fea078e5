"""Attacks on issue 9, item 3 (recordings): listing and downloading needs the ``record`` or
``admin`` grant, or having been in the recorded meeting; a broadcast archive's HLS (issue 11)
behind the same checks. Signaling runs on a real port with
its real store; the recordings are written into that store as the file creator leaves them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley import tokens
from parley.recorder import links, state
from tests.recording.conftest import FixedDirectory, Stack, signaling
from tests.signaling.helpers import Client as WsClient

COMPOSITE = b"\x00\x00\x00\x18ftypmp42 not really a movie"


@pytest.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    # listing and downloading never reach a call server: none runs
    async with signaling(tmp_path, FixedDirectory("http://127.0.0.1:9", "none"),
                         monkeypatch) as s:
        yield s


async def _recorded(stack: Stack, room: str, participants: list[str],
                    phase: str = "ready") -> dict[str, Any]:
    """A finished recording of ``room`` with ``participants``, its composite in the store."""
    store = stack.hub.recordings.store  # type: ignore[attr-defined]
    m = {**state.new(room, participants[0]), "state": phase, "participants": participants}
    if phase == "ready":
        m["files"] = {"composite": "composite.mp4", "tracks": []}
        await asyncio.to_thread(store.put, f"recordings/{m['id']}/files/composite.mp4",
                                COMPOSITE)
    await asyncio.to_thread(state.save, store, m)
    return m


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _list(stack: Stack, room: str, token: str | None) -> httpx.Response:
    return await stack.http.get(f"{stack.base}/api/v1/recordings", params={"room": room},
                                headers=_auth(token))


async def _get(stack: Stack, url: str, token: str | None = None,
               query_token: str | None = None) -> httpx.Response:
    if query_token:
        url += f"&token={query_token}"
    return await stack.http.get(stack.base + url, headers=_auth(token))


def _refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert r.json()["detail"]["code"] == code, r.text


async def test_outsiders_cannot_list_or_download_a_meetings_recordings(stack: Stack) -> None:
    room = f"board-{uuid.uuid4().hex[:6]}"
    rec = await _recorded(stack, room, ["alice", "bob"])
    url = stack.hub.recordings.public(rec)["compositeUrl"]  # type: ignore[attr-defined]
    secret = stack.secret
    guest = tokens.mint(secret, identity="guest-5eaf00d", room=room, guest=True)
    no_grant = tokens.mint(secret, identity="mallory", room=room, grants=())
    other_room = tokens.mint(secret, identity="mallory", room="elsewhere", grants=("record",))

    for attacker in (guest, no_grant):
        _refused(await _list(stack, room, attacker), 403, "not_a_participant")
        # the signed link alone is not enough, in the header or in the URL
        _refused(await _get(stack, url, attacker), 403, "not_a_participant")
        _refused(await _get(stack, url, query_token=attacker), 403, "not_a_participant")
    _refused(await _get(stack, url), 401, "token_invalid")
    # a record grant for another room does not open this one
    _refused(await _list(stack, room, other_room), 401, "token_invalid")
    _refused(await _get(stack, url, other_room), 401, "token_invalid")
    # a forged link with a good token
    _refused(await _get(stack, url.replace("sig=", "sig=0"), tokens.mint(
        secret, identity="alice", room=room)), 403, "link_invalid")


async def test_participants_and_record_or_admin_grants_may(stack: Stack) -> None:
    room = f"board-{uuid.uuid4().hex[:6]}"
    theirs = await _recorded(stack, room, ["alice", "bob"])
    later = await _recorded(stack, room, ["carol"])
    url = stack.hub.recordings.public(theirs)["compositeUrl"]  # type: ignore[attr-defined]
    bob = tokens.mint(stack.secret, identity="bob", room=room, grants=())
    r = await _list(stack, room, bob)
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["recordings"]] == [theirs["id"]]  # not carol's
    for token in (bob, tokens.mint(stack.secret, identity="auditor", room=room,
                                   grants=("record",)),
                  tokens.mint(stack.secret, identity="root", room="*", grants=("admin",))):
        got = await _get(stack, url, token)
        assert got.status_code == 200 and got.content == COMPOSITE, got.text
    got = await _get(stack, url, query_token=bob)  # the web client's plain link
    assert got.status_code == 200 and got.content == COMPOSITE
    auditor = tokens.mint(stack.secret, identity="auditor", room=room, grants=("record",))
    r = await _list(stack, room, auditor)
    assert [m["id"] for m in r.json()["recordings"]] == [theirs["id"], later["id"]]


async def test_who_joins_a_running_recording_was_in_the_meeting(stack: Stack) -> None:
    room = f"board-{uuid.uuid4().hex[:6]}"
    running = await _recorded(stack, room, ["alice"], phase="recording")
    dave = tokens.mint(stack.secret, identity="dave", room=room)
    _refused(await _list(stack, room, dave), 403, "not_a_participant")
    ws = await WsClient.connect(stack.base, "dave", room, token=dave)
    try:
        await ws.request("join", "joined", room=room)
        r = await _list(stack, room, dave)
        assert r.status_code == 200 and [m["id"] for m in r.json()["recordings"]] == [
            running["id"]], r.text
    finally:
        await ws.close()


async def test_a_broadcast_archive_is_played_only_by_who_may_see_it(stack: Stack) -> None:
    """A broadcast archive's playlists hand out signed links into the API (each file its own
    signature), and every one still needs a token of someone who may see the recording."""
    store = stack.hub.recordings.store  # type: ignore[attr-defined]
    room = f"broadcast:show-{uuid.uuid4().hex[:6]}"
    m = {**state.new(room, "recorder"), "state": "ready", "kind": "broadcast",
         "files": {"composite": "programme.mp4", "tracks": []}, "hlsIndex": "index.m3u8"}
    seg = "00000000_ab12cd34_7_0_2000000.m4s"
    for name, data in (("index.m3u8", b'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1'
                        b'.42c01e,mp4a.40.2"\n180p/playlist.m3u8\n'),
                       ("180p/playlist.m3u8", f'#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:'
                        f'URI="init-0.mp4"\n#EXTINF:2.0,\n{seg}\n#EXT-X-ENDLIST\n'.encode()),
                       ("180p/init-0.mp4", b"init"), (f"180p/{seg}", b"moof"),
                       ("programme.mp4", COMPOSITE)):
        await asyncio.to_thread(store.put, f"recordings/{m['id']}/files/{name}", data)
    await asyncio.to_thread(state.save, store, m)
    hls = stack.hub.recordings.public(m)["hlsUrl"]  # type: ignore[attr-defined]
    auditor = tokens.mint(stack.secret, identity="auditor", room=room, grants=("record",))
    index = await _get(stack, hls, auditor)
    assert index.status_code == 200, index.text
    [rung] = [line for line in index.text.splitlines() if not line.startswith("#")]
    playlist = await _get(stack, rung, auditor)
    assert playlist.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    init = playlist.text.split('URI="', 1)[1].split('"', 1)[0]
    [segment] = [line for line in playlist.text.splitlines() if not line.startswith("#")]
    got = await _get(stack, segment, auditor)
    assert (got.status_code, got.content, got.headers["content-type"]) == (
        200, b"moof", "video/iso.segment")
    assert (await _get(stack, init, auditor)).content == b"init"

    viewer = tokens.mint(stack.secret, identity="viewer", room=room, grants=("subscribe",))
    for url in (hls, rung, init, segment):
        _refused(await _get(stack, url, viewer), 403, "not_a_participant")
        _refused(await _get(stack, url), 401, "token_invalid")
    # a signature is for its own recording and file
    other = await _recorded(stack, room, ["auditor"])
    _refused(await _get(stack, segment.replace(m["id"], other["id"]), auditor), 403,
             "link_invalid")
    # a name outside a recording's files, even signed with the deployment's secret
    for name in ("180p/x/y.m4s", ".hidden", "180p/../../x"):
        url, _ = links.link(stack.secret, m["id"], name, 60)
        r = await _get(stack, url, auditor)
        assert r.status_code == 404, (name, r.status_code, r.text)

"""Chat (docs/signaling.md, "Chat") against real signaling processes: room messages in order,
history for late joiners, direct messages kept for an offline user across a replica restart
(real Redis streams), limits, metadata-only events, and the web client showing text as text."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.conftest import wait_until
from tests.signaling.helpers import Client, guest_token


def cid() -> str:
    return uuid.uuid4().hex[:12]


async def joined(base: str, identity: str, room: str) -> Client:
    client = await Client.connect(base, identity, room=room)
    await client.request("join", "joined", room=room)
    await client.expect("chat.history")
    return client


async def test_three_clients_exchange_room_messages_in_order(
        parley_server: Callable[..., str], tmp_path: Path, uniq: Callable[[str], str]) -> None:
    base = parley_server()  # the embedded default: the chat log is in memory
    room = uniq("room")
    a, b, c = [await joined(base, uniq(n), room) for n in ("ann", "bob", "cat")]
    sent: list[str] = []
    for i in range(6):
        sender = (a, b, c)[i % 3]
        text = f"message {i} from {sender.identity}"
        ack = await sender.request("chat.send", "chat.sent", room=room, text=text,
                                   clientId=cid(), id=f"m{i}")
        assert ack["ref"] == f"m{i}" and ack["message"]["text"] == text
        assert ack["message"]["from"] == sender.identity and ack["message"]["room"] == room
        sent.append(ack["message"]["id"])
    for me in (a, b, c):
        got = [await me.expect("chat.message") for _ in range(4)]  # the others' 4 of 6
        mine = [i for i in range(6) if (a, b, c)[i % 3] is not me]
        assert [m["id"] for m in got] == [sent[i] for i in mine]
        assert [m["text"] for m in got] == [f"message {i} from {(a, b, c)[i % 3].identity}"
                                            for i in mine]
    # to one participant: only they get it; a resend with the same clientId is shown once
    once = cid()
    first = await a.request("chat.send", "chat.sent", room=room, to=b.identity, text="psst",
                            clientId=once)
    again = await a.request("chat.send", "chat.sent", room=room, to=b.identity, text="psst",
                            clientId=once)
    assert again["duplicate"] and again["message"]["id"] == first["message"]["id"]
    private = await b.expect("chat.message")
    assert (private["text"], private["to"], private["from"]) == ("psst", b.identity, a.identity)
    await c.request("chat.send", "chat.sent", room=room, text="after", clientId=cid())
    assert (await b.expect("chat.message"))["text"] == "after"  # not a second "psst"
    assert (await a.expect("chat.message"))["text"] == "after"  # c never saw "psst"
    assert not [m for m in c.inbox if m["type"] == "chat.message"]
    # events carry metadata only
    log = tmp_path / f"parley-{base.rsplit(':', 1)[1]}" / "events.jsonl"

    def chat_events() -> list[dict[str, Any]]:
        found = [json.loads(line) for line in log.read_text().splitlines()]
        found = [e for e in found if e["type"] == "chat.message" and e["room"] == room]
        return found if len(found) == 8 else []

    events = wait_until(chat_events, 10, what="8 chat.message events")
    assert sorted(e["data"]["toKind"] for e in events) == ["participant"] + ["room"] * 7
    assert all(set(e["data"]) == {"identity", "toKind", "length"} for e in events)
    assert "psst" not in log.read_text() and "message 0" not in log.read_text()
    for client in (a, b, c):
        await client.close()


async def test_a_late_joiner_gets_the_history_on_another_replica(
        parley_server: Callable[..., str], redis_url: str, uniq: Callable[[str], str]) -> None:
    env = {"PARLEY_REDIS_URL": redis_url}
    one, two = parley_server(env), parley_server(env)
    room = uniq("room")
    a = await joined(one, uniq("ann"), room)
    b = await joined(one, uniq("bob"), room)
    for i in range(3):
        await a.request("chat.send", "chat.sent", room=room, text=f"<b>{i}</b>", clientId=cid())
    await a.request("chat.send", "chat.sent", room=room, to=b.identity, text="for bob only",
                    clientId=cid())
    late = await Client.connect(two, uniq("cat"), room=room)
    await late.request("join", "joined", room=room)
    history = await late.expect("chat.history", room=room)
    assert [m["text"] for m in history["messages"]] == ["<b>0</b>", "<b>1</b>", "<b>2</b>"]
    assert all(m["from"] == a.identity for m in history["messages"])
    ids = [m["id"] for m in history["messages"]]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    # the live path crosses replicas too, and bob's rejoin shows him his private message
    await late.request("chat.send", "chat.sent", room=room, text="hi from two", clientId=cid())
    assert (await a.expect("chat.message", text="hi from two"))["from"] == late.identity
    await b.request("leave", "left")
    await b.request("join", "joined", room=room)
    mine = await b.expect("chat.history")
    assert [m["text"] for m in mine["messages"]][-2:] == ["for bob only", "hi from two"]
    for client in (a, b, late):
        await client.close()


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Any:
    c = Cluster(redis_url, tmp_path)
    yield c
    c.stop()


async def test_a_direct_message_to_an_offline_user_arrives_once_after_a_replica_restart(
        cluster: Cluster, uniq: Callable[[str], str]) -> None:
    one, two = cluster.signaling(), cluster.signaling()
    ann, bob = uniq("ann"), uniq("bob")
    a = await Client.connect(one, ann)
    texts = ["first", "second", "third"]
    for text in texts:
        ack = await a.request("chat.send", "chat.sent", to=bob, text=text, clientId=cid())
        assert "room" not in ack["message"] and ack["message"]["to"] == bob
    # the replica bob will use restarts: what waits for him is in Redis, not in a process
    proc = cluster.replicas.pop(two)
    proc.terminate()
    proc.wait(10)
    three = cluster.signaling()
    b = await Client.connect(three, bob)
    got = [await b.expect("chat.message") for _ in texts]
    assert [m["text"] for m in got] == texts and {m["from"] for m in got} == {ann}
    acked = await b.request("chat.ack", "chat.acked", ids=[m["id"] for m in got])
    assert acked["deleted"] == 3
    await b.close()
    again = await Client.connect(three, bob)  # acked: not shown a second time
    await again.request("ping", "pong")
    assert not [m for m in again.inbox if m["type"] == "chat.message"]
    # online now, on another replica than the sender: delivered at once
    await a.request("chat.send", "chat.sent", to=bob, text="live", clientId=cid())
    live = await again.expect("chat.message", text="live", within=3)
    await again.request("chat.ack", "chat.acked", ids=[live["id"]])
    # guests chat in rooms only
    guest = await Client.connect(one, "guest", token=guest_token(one)["token"])
    refused = await guest.request("chat.send", "error", to=bob, text="hi", clientId=cid())
    assert refused["code"] == "chat_not_allowed"
    refused = await a.request("chat.send", "error", to=guest.welcome["identity"], text="hi",
                              clientId=cid())
    assert refused["code"] == "chat_not_allowed"
    for client in (a, again, guest):
        await client.close()


async def test_oversize_and_flood_are_refused_with_codes_and_the_session_goes_on(
        parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server({"PARLEY_RATE_CHAT_BURST": "5", "PARLEY_RATE_CHAT_PER_S": "1"})
    room = uniq("room")
    a, b = await joined(base, uniq("ann"), room), await joined(base, uniq("bob"), room)
    big = await a.request("chat.send", "error", room=room, text="x" * 2001, clientId=cid())
    assert (big["code"], big["maxChars"]) == ("chat_too_long", 2000)
    outside = await a.request("chat.send", "error", room=uniq("other"), text="hi",
                              clientId=cid())
    assert outside["code"] == "not_joined"
    for i in range(20):
        await a.send(type="chat.send", room=room, text=f"flood {i}", clientId=cid(), id=i)
    replies = [await a.expect_any(("chat.sent", "error")) for _ in range(20)]
    accepted = [r for r in replies if r["type"] == "chat.sent"]
    limited = [r for r in replies if r["type"] == "error"]
    assert 3 <= len(accepted) <= 5 and {r["code"] for r in limited} == {"rate_limited"}
    assert all(r["retryAfterMs"] > 0 for r in limited)
    await a.request("ping", "pong")  # the session goes on
    got = [await b.expect("chat.message") for _ in accepted]
    assert [m["text"] for m in got] == [r["message"]["text"] for r in accepted]
    await b.request("ping", "pong")
    assert not [m for m in b.inbox if m["type"] in ("chat.message", "error")]
    for client in (a, b):
        await client.close()


XSS = '<img src=x onerror="window.pwned=1">'


def test_the_web_client_shows_markup_as_text(parley_server: Callable[..., str], browser: Any,
                                             uniq: Callable[[str], str]) -> None:
    """Last in the module: sync Playwright's loop must not run under the asyncio tests."""
    from tests.signaling.browser import close, open_client

    base = parley_server()
    room = uniq("room")
    ann, bob = uniq("ann"), uniq("bob")
    a = open_client(browser, f"{base}/m/{room}?user={ann}&name=Ann&audio=0&video=0")
    b = open_client(browser, f"{base}/m/{room}?user={bob}&name=Bob&audio=0&video=0")
    try:
        a.wait_for_function(f"window.parley.state.participants[{json.dumps(bob)}]",
                            timeout=10000)
        a.click("#chat-toggle")
        a.fill("#chat-input", XSS)
        a.click("#chat-form button")
        b.wait_for_function("window.parley.chat.state.unread === 1", timeout=10000)
        assert b.text_content("#chat-unread") == "1" and b.is_visible("#chat-unread")
        b.click("#chat-toggle")
        assert b.is_hidden("#chat-unread")
        assert b.text_content("#chat-log .chat-text") == XSS
        assert b.text_content("#chat-log .chat-who").startswith("Ann")
        assert a.text_content("#chat-log .chat-text") == XSS  # the sender's own line
        for page in (a, b):
            assert page.locator("#chat-log img").count() == 0
            assert page.evaluate("typeof window.pwned") == "undefined"
        # a late joiner's history is rendered the same way
        c = open_client(browser, f"{base}/m/{room}?user={uniq('cat')}&name=Cat&audio=0&video=0")
        c.wait_for_function("window.parley.chat.state.shown.length === 1", timeout=10000)
        c.click("#chat-toggle")
        assert c.text_content("#chat-log .chat-text") == XSS
        assert c.evaluate("typeof window.pwned") == "undefined"
        close(c)
    finally:
        close(a, b)

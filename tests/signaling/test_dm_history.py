"""Direct-message history kept on the server (docs/signaling.md, "Chat"): a conversation's
messages are in Redis (one stream per pair of users), served page by page to either of the two
from any replica and any device, with the same ids as the live and replayed messages, and to
nobody else; the offline inbox still delivers each message once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import Cluster
from tests.signaling.helpers import Client, guest_token, user_token


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_url, tmp_path)
    yield c
    c.stop()


def cid() -> str:
    return uuid.uuid4().hex[:12]


async def test_either_user_pages_through_the_conversation_from_another_replica(
        cluster: Cluster, uniq: Callable[[str], str]) -> None:
    one, two = cluster.signaling(), cluster.signaling()
    ann, ben = uniq("ann"), uniq("ben")
    a = await Client.connect(one, ann)
    sent = []  # Ben is offline: everything waits in his inbox too
    for i in range(5):
        ack = await a.request("chat.send", "chat.sent", to=ben, text=f"<i>{i}</i>",
                              clientId=cid())
        sent.append(ack["message"])
    b = await Client.connect(two, ben)
    replayed = [await b.expect("chat.message") for _ in sent]
    assert [m["id"] for m in replayed] == [m["id"] for m in sent]
    await b.request("chat.ack", "chat.acked", ids=[m["id"] for m in replayed])
    answer = await b.request("chat.send", "chat.sent", to=ann, text="back", clientId=cid())
    live = await a.expect("chat.message", text="back")
    assert live["id"] == answer["message"]["id"]
    await a.request("chat.ack", "chat.acked", ids=[live["id"]])
    await b.close()
    # Ben's other device, on the other replica: the inbox is empty (acked), the history is not
    b2 = await Client.connect(one, ben)
    page = await b2.request("chat.history", "chat.history", **{"with": ann}, limit=4,
                            id="h1")
    assert (page["with"], page["ref"], page["more"]) == (ann, "h1", True)
    everything = [*sent, answer["message"]]
    assert page["messages"] == everything[-4:]  # the same messages, ids and all
    older = await b2.request("chat.history", "chat.history", **{"with": ann},
                             before=page["messages"][0]["id"], limit=4)
    assert older["messages"] == everything[:2] and older["more"] is False
    mine = await a.request("chat.history", "chat.history", **{"with": ben})
    assert [m["text"] for m in mine["messages"]] == [f"<i>{i}</i>" for i in range(5)] + ["back"]
    await b2.request("ping", "pong")
    assert not [m for m in b2.inbox if m["type"] == "chat.message"]
    for client in (a, b2):
        await client.close()


async def test_nobody_else_reads_a_conversation(parley_server: Callable[..., str],
                                                uniq: Callable[[str], str]) -> None:
    one = two = parley_server()  # in memory: the policy below would change a shared Redis's
    ann, ben, cy = uniq("ann"), uniq("ben"), uniq("cy")
    admin = user_token(one, "ops", "*", grants=("admin",))
    async with httpx.AsyncClient(base_url=one,
                                 headers={"Authorization": f"Bearer {admin}"}) as http:
        (await http.put("/api/v1/users-policy", json={"policy": "contacts"})).raise_for_status()
        (await http.put(f"/api/v1/users/{ann}", json={"contacts": [ben]})).raise_for_status()
        (await http.put(f"/api/v1/users/{cy}", json={"contacts": [ben]})).raise_for_status()
    a = await Client.connect(one, ann)
    await a.request("chat.send", "chat.sent", to=ben, text="only for Ben", clientId=cid())
    c = await Client.connect(two, cy)
    # Cy may not message Ann: her conversations are refused by the server
    refused = await c.request("chat.history", "error", **{"with": ann}, id="x")
    assert (refused["code"], refused["ref"]) == ("chat_not_allowed", "x")
    # Cy may message Ben: what she gets is her own conversation with him, empty
    own = await c.request("chat.history", "chat.history", **{"with": ben})
    assert own["messages"] == [] and own["more"] is False
    guest = await Client.connect(two, "guest", token=guest_token(two)["token"])
    assert (await guest.request("chat.history", "error", **{"with": ann}))["code"] == \
        "chat_not_allowed"
    assert (await c.request("chat.history", "error", **{"with": cy}))["code"] == \
        "chat_not_allowed"
    bad = await c.request("chat.history", "error", **{"with": ben}, before="x")
    assert bad["code"] == "bad_message"
    for client in (a, c, guest):
        await client.close()

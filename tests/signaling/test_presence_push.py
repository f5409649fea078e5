"""Presence pushed to people panels (docs/signaling.md, "Presence for the people panel"): a user
subscribes to the presence of whom they may see, and every change comes as a `presence` push,
across two signaling replicas over the test bed's Redis: a connect on the other replica, a
replacement by a newer connection (no offline in between), a close, a crashed replica."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.cluster import Cluster
from tests.signaling.helpers import Client, guest_token, user_token


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_url, tmp_path)
    yield c
    c.stop()


def pushes(client: Client) -> list[dict[str, bool]]:
    """The `presence` pushes (no ref) the client holds unread."""
    return [m["online"] for m in client.inbox if m["type"] == "presence" and "ref" not in m]


async def test_presence_is_pushed_across_replicas_and_a_replacement_is_no_change(
        cluster: Cluster, uniq: Callable[[str], str]) -> None:
    one, two = cluster.signaling(), cluster.signaling()
    ann, ben = uniq("ann"), uniq("ben")
    b = await Client.connect(one, ben)
    now = await b.request("presence.subscribe", "presence", ids=[ann], id="s")
    assert now == {"type": "presence", "online": {ann: False}, "ref": "s"}
    a = await Client.connect(two, ann)  # on the other replica
    assert await b.expect("presence") == {"type": "presence", "online": {ann: True}}
    # Ann opens another tab on replica one: it replaces the first (4409), she stays online
    a2 = await Client.connect(one, ann)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await a.expect("never")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
    await b.request("ping", "pong")
    assert (await b.request("presence", "presence", ids=[ann]))["online"] == {ann: True}
    await a2.close()  # her last tab: offline, pushed
    assert await b.expect("presence") == {"type": "presence", "online": {ann: False}}
    await b.request("ping", "pong")
    assert pushes(b) == []  # nothing else: no offline/online flap around the replacement
    await b.close()


async def test_the_users_of_a_crashed_replica_are_pushed_offline(
        cluster: Cluster, uniq: Callable[[str], str]) -> None:
    env = {"PARLEY_PRESENCE_TTL_S": "2", "PARLEY_PRESENCE_HEARTBEAT_S": "0.5"}
    one, two = cluster.signaling(env), cluster.signaling(env)
    ann, ben = uniq("ann"), uniq("ben")
    b = await Client.connect(one, ben)
    await b.request("presence.subscribe", "presence", ids=[ann])
    await Client.connect(two, ann)
    assert (await b.expect("presence"))["online"] == {ann: True}
    cluster.replicas.pop(two).kill()  # nobody announces anything: her key expires
    assert (await b.expect("presence", within=10))["online"] == {ann: False}
    await b.close()


async def test_only_whom_one_may_see_is_watched(parley_server: Callable[..., str],
                                                uniq: Callable[[str], str]) -> None:
    one = parley_server()  # in memory: the policy below would change a shared Redis's
    ann, ben, cy = uniq("ann"), uniq("ben"), uniq("cy")
    admin = user_token(one, "ops", "*", grants=("admin",))
    async with httpx.AsyncClient(base_url=one,
                                 headers={"Authorization": f"Bearer {admin}"}) as http:
        (await http.put("/api/v1/users-policy", json={"policy": "contacts"})).raise_for_status()
        (await http.put(f"/api/v1/users/{ben}", json={"contacts": [ann]})).raise_for_status()
    b = await Client.connect(one, ben)
    now = await b.request("presence.subscribe", "presence", ids=[ann, cy, ben])
    assert now["online"] == {ann: False}  # not Cy (a stranger), not himself
    await (await Client.connect(one, cy)).close()  # a stranger comes and goes: no push
    a = await Client.connect(one, ann)
    assert (await b.expect("presence"))["online"] == {ann: True}
    await b.request("ping", "pong")
    assert pushes(b) == []
    guest = await Client.connect(one, "guest", token=guest_token(one)["token"])
    refused = await guest.request("presence.subscribe", "error", ids=[ann])
    assert refused["code"] == "presence_not_allowed"
    too_many = await b.request("presence.subscribe", "error", ids=[f"u{i}" for i in range(101)])
    assert too_many["code"] == "bad_message"
    # a new list replaces the old one: Ann is no longer watched
    await b.request("presence.subscribe", "presence", ids=[cy])
    await a.close()
    await b.request("ping", "pong")
    assert pushes(b) == []
    for client in (b, guest):
        await client.close()

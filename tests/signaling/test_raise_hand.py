"""Raise hand: the `hand` field of the `media` message (docs/signaling.md), validated by the
server, told to the others in the room and remembered for a late joiner."""

from __future__ import annotations

from collections.abc import Callable

from tests.signaling.helpers import Client


async def test_a_raised_hand_reaches_the_room_and_a_late_joiner(
        parley_server: Callable[..., str]) -> None:
    base = parley_server()
    ann = await Client.connect(base, "ann", room="hands")
    ben = await Client.connect(base, "ben", room="hands")
    try:
        await ann.request("join", "joined", room="hands")
        await ben.request("join", "joined", room="hands")
        await ann.send(type="media", hand=True)
        got = await ben.expect("participant.media", identity="ann")
        assert got["hand"] is True and got["audio"] is True and got["video"] is True

        # anything but a boolean is refused with a clear code, and nothing fans out
        err = await ann.request("media", "error", hand="yes", id="h1")
        assert err["code"] == "bad_message" and err["ref"] == "h1", err
        await ann.request("ping", "pong")
        assert not [m for m in ben.inbox if m["type"] == "participant.media"]

        cat = await Client.connect(base, "cat", room="hands")
        joined = await cat.request("join", "joined", room="hands")
        hands = {p["identity"]: p["hand"] for p in joined["participants"]}
        assert hands == {"ann": True, "ben": False}, joined["participants"]

        await ann.send(type="media", hand=False)
        assert (await cat.expect("participant.media", identity="ann"))["hand"] is False
        await cat.close()
    finally:
        await ann.close()
        await ben.close()

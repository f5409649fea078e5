"""Standing offers (docs/signaling.md, "Standing offers"), at the protocol level against a real
`parley up`: a mesh member's offer to whoever joins next goes to exactly one newcomer, in its
`joined`, and the member is told so; it is gone with the member; it is refused outside a mesh.
The browsers' side (the newcomer answers, the member restands) runs in every mesh browser test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.signaling.helpers import Client

SDP = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
       "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n")


@pytest.fixture
def server(parley_server: Callable[..., str], token_secret: str) -> str:
    return parley_server({"PARLEY_TOKEN_SECRET": token_secret})


async def test_a_standing_offer_goes_to_exactly_one_newcomer(server: str) -> None:
    room = "standing"
    ann, ben, cat, dan = [await Client.connect(server, n, room=room)
                          for n in ("ann", "ben", "cat", "dan")]
    await ann.request("join", "joined", room=room, topology="p2p")
    await ann.send(type="offer.standing", sdp=SDP, sources={"s1": "camera"})
    await ann.request("ping", "pong")  # stored once the server answered what came after it
    joined = await ben.request("join", "joined", room=room, topology="p2p")
    assert joined["participants"][0]["identity"] == "ann"
    assert joined["participants"][0]["offer"] == {"sdp": SDP, "sources": {"s1": "camera"}}
    told = await ann.expect("participant.joined")
    assert (told["participant"]["identity"], told.get("standing")) == ("ben", True)
    # taken: the next newcomer gets no offer from ann (none from ben either: he stood none)
    joined = await cat.request("join", "joined", room=room, topology="p2p")
    assert [p.get("offer") for p in joined["participants"]] == [None, None]
    told = await ann.expect("participant.joined")
    assert told["participant"]["identity"] == "cat" and "standing" not in told
    # one that leaves takes its standing offer with it
    await ben.send(type="offer.standing", sdp=SDP)
    await ben.request("leave", "left")
    joined = await dan.request("join", "joined", room=room, topology="p2p")
    assert {p["identity"]: p.get("offer") for p in joined["participants"]} == {
        "ann": None, "cat": None}
    for c in (ann, ben, cat, dan):
        await c.close()


async def test_a_standing_offer_is_refused_outside_a_mesh_room(server: str) -> None:
    eve = await Client.connect(server, "eve", room="sfu-room")
    err = await eve.request("offer.standing", "error", sdp=SDP)
    assert err["code"] == "not_joined"
    await eve.request("join", "joined", room="sfu-room", topology="sfu")
    assert (await eve.request("offer.standing", "error", sdp=SDP))["code"] == "not_mesh"
    assert (await eve.request("offer.standing", "error", sdp="hello"))["code"] == "bad_sdp"
    assert (await eve.request("ping", "pong"))["type"] == "pong"  # the connection lives on
    await eve.close()

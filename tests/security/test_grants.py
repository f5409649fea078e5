"""Attack: send media without the publish grant. A subscribe-only token offers sendrecv to a
peer, joins the call server with a sending offer and asks it for publish slots; each is refused
with grant_missing and the session (and its room) stays up; a recvonly offer still goes through
(docs/signaling.md, "Grants")."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from aiortc import RTCPeerConnection

from parley import tokens
from tests.security.signaling_attack import alive, sdp
from tests.signaling.helpers import Client


async def test_sending_without_the_publish_grant_is_refused_and_the_call_stays_up(
        parley_server: Callable[..., str]) -> None:
    secret = secrets.token_urlsafe(24)
    base = parley_server({"PARLEY_TOKEN_SECRET": secret})
    room = f"grants-{secrets.token_hex(3)}"
    speaker = await Client.connect(base, "speaker", token=tokens.mint(
        secret, identity="speaker", room=room))
    viewer = await Client.connect(base, "viewer", token=tokens.mint(
        secret, identity="viewer", room=room, grants=("subscribe",)))
    assert viewer.welcome["grants"] == ["subscribe"]
    await speaker.request("join", "joined", room=room)
    await viewer.request("join", "joined", room=room)

    for direction in ("sendrecv", "sendonly"):
        for mtype in ("offer", "answer"):
            err = await viewer.request(mtype, "error", to="speaker",
                                       sdp=sdp("recvonly", direction))
            assert (err["code"], err["grant"]) == ("grant_missing", "publish"), err
    # nothing reached the peer, and the viewer's call is still up: a recvonly offer goes through
    await viewer.send(type="offer", to="speaker", sdp=sdp("recvonly", "recvonly"))
    got = await speaker.expect("offer")
    assert got["from"] == "viewer" and "a=sendrecv" not in got["sdp"]
    assert not [m for m in speaker.inbox if m["type"] in ("offer", "answer")]

    # the call server: no publish slots, no sending join
    err = await viewer.request("sfu.publish", "error", kinds=["video"])
    assert err["code"] == "grant_missing"
    err = await viewer.request("sfu.join", "error", sdp=sdp("sendrecv", "sendrecv"))
    assert err["code"] == "grant_missing"
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        joined = await viewer.request("sfu.join", "sfu.joined", within=15,
                                      sdp=pc.localDescription.sdp)
        assert joined["room"] == room  # a subscribe-only participant is admitted, recvonly
    finally:
        await pc.close()
    await alive(viewer)
    # the publisher is unaffected: its sending offer is relayed
    await speaker.send(type="offer", to="viewer", sdp=sdp("sendrecv", "sendrecv"))
    assert (await viewer.expect("offer"))["from"] == "speaker"
    for c in (speaker, viewer):
        await c.close()

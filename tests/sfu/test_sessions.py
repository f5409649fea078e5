"""A client's successive call-server sessions never mix (the churn of docs/call-server.md,
"Known defects"): protocol-level client against `parley up`, real aiortc connections."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription

from parley import tokens
from tests.media.client import PatternVideo
from tests.signaling.helpers import Client as WsClient

SECRET = "sfu-sessions-test-secret-0123456789abcdef"


async def _session(ws: WsClient) -> tuple[RTCPeerConnection, dict]:
    pc = RTCPeerConnection()
    pc.addTransceiver(PatternVideo("me-camera"), "sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    joined = await ws.request("sfu.join", "sfu.joined", within=15, sdp=pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(joined["sdp"], "answer"))
    return pc, joined


async def test_an_answer_of_a_replaced_connection_never_reaches_the_new_one(
        parley_server: Callable[..., str]) -> None:
    """The client starts a second session (a restart) while an answer of the first is still
    on its way: signaling drops that answer (sfu_stale) instead of handing it to the new
    connection, and the node has one participant for the client, with a new id."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    ws = await WsClient.connect(base, "me", token=tokens.mint(SECRET, identity="me", room="s"))
    first = second = None
    try:
        await ws.request("join", "joined", room="s", topology="sfu")
        first, _ = await _session(ws)
        second, _ = await _session(ws)  # the restart
        # the first connection's late answer (its ICE ufrag), after the second joined
        late = first.localDescription.sdp.replace("a=setup:actpass", "a=setup:active")
        err = await ws.request("sfu.answer", "error", sdp=late)
        assert err["code"] == "sfu_stale", err
        async with httpx.AsyncClient(headers=tokens.control_headers(SECRET)) as http:
            st = (await http.get(f"{base}/media/v1/status")).json()
        assert st["participant_ids"] == {"s": ["me"]}
        assert (await ws.request("ping", "pong"))["type"] == "pong"
    finally:
        for pc in (first, second):
            if pc is not None:
                await pc.close()
        await ws.close()


async def test_a_browser_gets_the_others_tracks_offered_with_its_join(
        parley_server: Callable[..., str]) -> None:
    """``early`` in sfu.join (the web client's): the call server offers the tracks already
    published right after its answer, before this connection is up, so that offer is
    negotiated while ICE and DTLS connect. This subscriber never even applies the answer: the
    offer still comes, and names the publisher. A bad ``early`` is a clear error."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    pub = await WsClient.connect(base, "pub", token=tokens.mint(SECRET, identity="pub", room="e"))
    sub = await WsClient.connect(base, "sub", token=tokens.mint(SECRET, identity="sub", room="e"))
    pcs: list[RTCPeerConnection] = []
    try:
        await pub.request("join", "joined", room="e", topology="sfu")
        pcs.append((await _session(pub))[0])
        await sub.request("join", "joined", room="e", topology="sfu")
        pc = RTCPeerConnection()
        pcs.append(pc)
        pc.addTransceiver("audio", "recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        err = await sub.request("sfu.join", "error", sdp=pc.localDescription.sdp, early="yes")
        assert err["code"] == "bad_message" and "sfu.join.early" in err["message"], err
        await sub.request("sfu.join", "sfu.joined", within=15, sdp=pc.localDescription.sdp,
                          early=True)
        offer = await sub.expect("sfu.offer", within=15)
        assert "a=msid:pub " in offer["sdp"] and "a=sendonly" in offer["sdp"], offer["sdp"]
        assert pc.connectionState == "new"  # offered before any connection
    finally:
        for pc in pcs:
            await pc.close()
        await pub.close()
        await sub.close()

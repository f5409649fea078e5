"""A client's successive call-server sessions never mix (the churn of docs/call-server.md,
"Known defects"): protocol-level client against `parley up`, real aiortc connections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

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


async def test_a_join_answer_carries_the_others_tracks_on_its_recvonly_m_lines(
        parley_server: Callable[..., str]) -> None:
    """A browser's join offer has a recvonly m-line per track it expects from those already in
    the room: the call server's answer puts their tracks there (a=msid names the publisher,
    sfu.joined the sources), so they flow at "connected" with no server offer in between, and a
    frame arrives. An m-line no track fits is answered inactive; one that lists H.264 only gets
    the camera transcoded, in H.264."""
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    pub = await WsClient.connect(base, "pub", token=tokens.mint(SECRET, identity="pub", room="a"))
    sub = await WsClient.connect(base, "sub", token=tokens.mint(SECRET, identity="sub", room="a"))
    h264 = await WsClient.connect(base, "h264",
                                  token=tokens.mint(SECRET, identity="h264", room="a"))
    pcs: list[RTCPeerConnection] = []
    try:
        await pub.request("join", "joined", room="a", topology="sfu")
        pcs.append((await _session(pub))[0])
        await sub.request("join", "joined", room="a", topology="sfu")
        pc = RTCPeerConnection()
        pcs.append(pc)
        pc.addTransceiver("video", "recvonly")
        pc.addTransceiver("audio", "recvonly")  # pub sends no audio: stays empty
        tracks: asyncio.Queue = asyncio.Queue()
        pc.on("track", tracks.put_nowait)
        await pc.setLocalDescription(await pc.createOffer())
        joined = await sub.request("sfu.join", "sfu.joined", within=15,
                                   sdp=pc.localDescription.sdp, early=True)
        video, audio = joined["sdp"].split("\r\nm=")[1:3]
        assert video.startswith("video") and "a=msid:pub " in video, joined["sdp"]
        assert "a=sendonly" in video and "VP8/90000" in video, video
        assert audio.startswith("audio") and "a=inactive" in audio, audio
        assert "sources" in joined, joined
        await pc.setRemoteDescription(RTCSessionDescription(joined["sdp"], "answer"))
        track = await asyncio.wait_for(tracks.get(), 15)
        frame = await asyncio.wait_for(track.recv(), 15)  # flows with no sfu.offer before it
        assert frame.width > 0

        await h264.request("join", "joined", room="a", topology="sfu")
        only = RTCPeerConnection()
        pcs.append(only)
        t = only.addTransceiver("video", "recvonly")
        t.setCodecPreferences([c for c in RTCRtpReceiver.getCapabilities("video").codecs
                               if c.mimeType.lower() in ("video/h264", "video/rtx")])
        await only.setLocalDescription(await only.createOffer())
        joined = await h264.request("sfu.join", "sfu.joined", within=15,
                                    sdp=only.localDescription.sdp, early=True)
        video = joined["sdp"].split("\r\nm=")[1]
        assert "a=msid:pub " in video and "H264/90000" in video, video
        assert "VP8" not in video, video
    finally:
        for pc in pcs:
            await pc.close()
        for ws in (pub, sub, h264):
            await ws.close()

"""A client that numbers RTP header extensions like Chrome keeps its connection across the call
server's offers (the auto-meeting flake, docs/call-server.md "A fresh session's connection
sometimes closes"): aiortc's createOffer renumbered every m-line to its own ids, a sender that
started right after an answer wrote those into the transport's one id map, and the node then
parsed Chrome's 3-byte abs-send-time as a 1-byte audio level and closed the DTLS transport."""

from __future__ import annotations

import re
from typing import Any

import httpx
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from parley.media.node import CallServer

from .client import CONTROL, Client, PatternVideo, ToneAudio, wait_for

# Chrome's numbering (aiortc's own: mid=1, audio level=2, abs-send-time=3)
CHROME_IDS = {"urn:ietf:params:rtp-hdrext:ssrc-audio-level": 1,
              "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 2,
              "urn:ietf:params:rtp-hdrext:sdes:mid": 4,
              "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 10,
              "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id": 11}
_EXTMAP = re.compile(r"^a=extmap:\d+(/\w+)? (\S+)([^\r\n]*\r?\n)", re.MULTILINE)


def chrome_ids(sdp: str) -> str:
    """A description with Chrome's extension ids: what the browser sends, and what parley-sfu.js
    turns a call-server offer into before applying it (sameExtensionIds)."""
    def renumber(m: re.Match[str]) -> str:
        return f"a=extmap:{CHROME_IDS[m[2]]}{m[1] or ''} {m[2]}{m[3]}" if m[2] in CHROME_IDS else ""

    return _EXTMAP.sub(renumber, sdp)


def node_ids(server: CallServer, pid: str) -> dict[str, Any]:
    """The id map the node parses this participant's packets with (one per bundled transport)."""
    pc = server.participants[pid].pc
    (dtls,) = pc._RTCPeerConnection__dtlsTransports  # type: ignore[attr-defined]
    ids = dtls._rtp_header_extensions_map._HeaderExtensionsMap__ids
    return {"audio_level": ids.audio_level, "abs_send_time": ids.abs_send_time, "mid": ids.mid}


async def test_an_offer_right_after_an_answer_keeps_the_clients_extension_ids(
        call_server: tuple[CallServer, str]) -> None:
    server, url = call_server
    meeting = "extids"
    http = httpx.AsyncClient(timeout=30, headers=CONTROL)
    pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    b, c = Client("b", meeting), Client("c", meeting)
    try:
        pc.addTransceiver(PatternVideo("a-camera"), "sendonly")
        pc.addTransceiver(ToneAudio("a-mic"), "sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        r = await http.post(f"{url}/v1/meetings/{meeting}/participants",
                            json={"type": "offer", "participant": "a",
                                  "sdp": chrome_ids(pc.localDescription.sdp)})
        r.raise_for_status()
        pid = r.json()["participant"]
        me = f"{url}/v1/meetings/{meeting}/participants/{pid}"
        await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
        await wait_for(lambda: pc.connectionState == "connected", 10, "a connected")

        async def answer(after: int) -> int:
            """Answer the node's next offer as the browser would; returns its event seq."""
            while True:
                events = (await http.get(f"{me}/events", params={"after": after, "wait": 10})
                          ).json()["events"]
                offer = next((e for e in events if e["type"] == "offer"), None)
                if offer is not None:
                    break
                after = events[-1]["seq"] if events else after
            await pc.setRemoteDescription(RTCSessionDescription(chrome_ids(offer["sdp"]),
                                                                "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            r = await http.post(f"{me}/sdp", json={"type": "answer",
                                                   "sdp": pc.localDescription.sdp})
            r.raise_for_status()
            return int(offer["seq"])

        await b.join(url)  # the node offers a b's tracks ...
        await wait_for(lambda: server.participants[pid].pc.signalingState == "have-local-offer",
                       10, "the node's offer of b's tracks")
        await c.join(url)  # ... and c's wait for that answer, so the node offers them at once
        seq = await answer(0)  # after it: the senders of b's tracks start after this offer
        await answer(seq)
        await wait_for(lambda: c.decoding_from(["a"], minimum=30), 20, "c decoding a")
        assert node_ids(server, pid) == {"audio_level": 1, "abs_send_time": 2, "mid": 4}
        assert server.participants[pid].pc.connectionState == "connected"
        assert b.decoding_from(["a"], minimum=30)
        assert sum(t.currentDirection == "recvonly" for t in pc.getTransceivers()) == 4
    finally:
        await b.close()
        await c.close()
        await pc.close()
        await http.aclose()


"""RTP header-extension ids of a participant's connection: the client's numbering, always.

aiortc parses every packet a bundled transport receives with one id -> extension map, which
each sender and receiver overwrites with its m-line's ids when it starts. ``createOffer``
resets the ids of *every* m-line to aiortc's own numbering (mid=1, audio level=2,
abs-send-time=3), already negotiated ones included, until the answer comes back. A sender or
receiver that starts in that window (the start runs in a task that ``setRemoteDescription``
schedules, so an offer made right after an answer is enough) writes aiortc's ids into the map.
Chrome numbers them otherwise (audio level=1, abs-send-time=2, mid=4): the node then reads
Chrome's 3-byte abs-send-time as a 1-byte audio level, ``struct.error`` escapes aiortc's
receive loop, and the DTLS transport closes ("connection closed, removed" seconds after a
join; docs/call-server.md, "A fresh session's connection sometimes closes").

``createOffer`` likewise re-lists aiortc's whole codec table, in its own order (VP8 first), on
every m-line without codec preferences: a publisher's m-line negotiated in VP9 was re-offered
VP8 first, the browser's answer switched its camera to VP8, and the node, forwarding the VP9
payload type it had learnt, dropped every packet. Negotiated m-lines keep their codec.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import is_rtx
from aiortc.rtcpeerconnection import is_codec_compatible


def _keep_codec(transceiver: Any) -> None:
    """Pin a negotiated m-line without preferences to its codec (and RTX when it has one)."""
    codecs = transceiver._codecs
    if transceiver._preferred_codecs or not codecs:
        return
    caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    main = next((c for c in caps if is_codec_compatible(c, codecs[0])), None)
    if main is not None:
        rtx = [c for c in caps if is_rtx(c)] if any(is_rtx(c) for c in codecs) else []
        transceiver.setCodecPreferences([main, *rtx])


async def create_offer(pc: RTCPeerConnection) -> RTCSessionDescription:
    """``pc.createOffer()``, but m-lines already negotiated keep the ids they were negotiated
    with (the client rewrites the offer's ids to its own anyway, parley-sfu.js) and their
    codec."""
    negotiated = [(t, t._headerExtensions) for t in pc.getTransceivers()
                  if t.currentDirection is not None]
    for transceiver, _ in negotiated:
        _keep_codec(transceiver)
    offer = await pc.createOffer()
    for transceiver, extensions in negotiated:
        transceiver._headerExtensions = extensions
    return offer

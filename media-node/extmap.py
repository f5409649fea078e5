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
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCSessionDescription


async def create_offer(pc: RTCPeerConnection) -> RTCSessionDescription:
    """``pc.createOffer()``, but m-lines already negotiated keep the ids they were negotiated
    with (the client rewrites the offer's ids to its own anyway, parley-sfu.js)."""
    negotiated = [(t, t._headerExtensions) for t in pc.getTransceivers()
                  if t.currentDirection is not None]
    offer = await pc.createOffer()
    for transceiver, extensions in negotiated:
        transceiver._headerExtensions = extensions
    return offer

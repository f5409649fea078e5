"""The send side of one participant's connection, resolved once per connection.

aiortc's send path is three awaited coroutines per packet (DTLS transport, ICE transport, aioice
connection) and asyncio's datagram transport, which queues without bound when the socket is full.
The call server resolves them once, when the connection comes up, to the SRTP session's ``protect``
and the nominated pair's non-blocking socket ``sendto``, and calls those two synchronously per
packet. A full socket buffer raises ``BlockingIOError``: the subscriber's queue is bounded by the
kernel's, and the forwarding leg drops (see DownTrack.forward) instead of queueing.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection


class Link:
    """SRTP protect + UDP sendto of one peer connection (RFC 3711 over the ICE-selected pair)."""

    __slots__ = ("addr", "protect", "ready", "sendto")

    def __init__(self) -> None:
        self.ready = False
        self.protect: Any = None
        self.sendto: Any = None
        self.addr: Any = None

    def resolve(self, pc: RTCPeerConnection) -> bool:
        """Point at the connection's current DTLS/SRTP session and nominated UDP pair."""
        self.ready = False
        for t in pc.getTransceivers():
            dtls = t.sender.transport
            srtp = getattr(dtls, "_tx_srtp", None)
            conn = getattr(dtls.transport, "_connection", None)
            pair = conn._nominated.get(1) if conn is not None else None
            udp = getattr(getattr(pair, "protocol", None), "transport", None)
            if srtp is None or udp is None:
                continue
            self.protect = srtp.protect
            sock = getattr(udp, "_sock", None)  # the raw socket under asyncio's transport
            self.sendto = sock.sendto if sock is not None else udp.sendto
            self.addr = pair.remote_addr
            self.ready = True
            return True
        return False

    def close(self) -> None:
        self.ready = False

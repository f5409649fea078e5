"""The send side of one participant's connection, resolved once per connection.

aiortc's send path is three awaited coroutines per packet (DTLS transport, ICE transport, aioice
connection). The call server resolves them once, when the connection comes up, to the SRTP session's
``protect`` and the nominated pair's UDP ``sendto``, and calls those two synchronously per packet.
"""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection

WRITE_BUFFER_LIMIT = 256 * 1024
"""Bytes queued in user space on one UDP socket before forwarding to it drops instead."""


class Link:
    """SRTP protect + UDP sendto of one peer connection (RFC 3711 over the ICE-selected pair)."""

    __slots__ = ("addr", "buffered", "protect", "ready", "sendto")

    def __init__(self) -> None:
        self.ready = False
        self.protect: Any = None
        self.sendto: Any = None
        self.addr: Any = None
        self.buffered: Any = None

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
            self.sendto = udp.sendto
            self.addr = pair.remote_addr
            self.buffered = udp.get_write_buffer_size
            self.ready = True
            return True
        return False

    def send_rtcp(self, pc: RTCPeerConnection, data: bytes) -> None:
        """Protect and send one RTCP compound packet on this link (RFC 3711 section 3.4)."""
        if not self.ready:
            return
        for t in pc.getTransceivers():
            srtp = getattr(t.sender.transport, "_tx_srtp", None)
            if srtp is not None:
                self.sendto(srtp.protect_rtcp(data), self.addr)
                return

    def close(self) -> None:
        self.ready = False

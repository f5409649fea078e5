"""All participants of a call server on one UDP port (ICE-TCP-free "single port" mode).

aioice binds a UDP socket per connection on an ephemeral port, which forces a port range (or
hostNetwork) on Kubernetes. ``UdpMux`` owns one socket; every participant's ICE connection gets a
host candidate on it, and datagrams are routed to the right connection: STUN requests by the
USERNAME attribute (RFC 8445 section 7.2.2: "<our ufrag>:<their ufrag>"), STUN responses by
transaction id, everything else (DTLS, SRTP) by the source address a check already came from.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol


class _MuxTransport(asyncio.DatagramTransport):
    """What a connection's StunProtocol sees: sends go out of the shared socket."""

    def __init__(self, mux: UdpMux, protocol: StunProtocol) -> None:
        super().__init__()
        self._mux = mux
        self._protocol = protocol
        self._sock = mux.sock  # the raw socket: the forwarding fast path sends on it directly

    def sendto(self, data: Any, addr: Any = None) -> None:
        self._mux.transport.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._mux.transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._mux.transport.get_write_buffer_size()

    def close(self) -> None:
        self._mux.unregister(self._protocol)
        self._protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self._protocol not in self._mux.protocols


class UdpMux(asyncio.DatagramProtocol):
    """One UDP socket shared by every ICE connection of the call server."""

    def __init__(self, advertise: list[str]) -> None:
        self.advertise = advertise  # addresses put in the host candidates
        self.transport: asyncio.DatagramTransport = None  # type: ignore[assignment]
        self.sock: socket.socket = None  # type: ignore[assignment]
        self.port = 0
        self.protocols: dict[StunProtocol, str] = {}
        self.by_ufrag: dict[str, StunProtocol] = {}
        self.by_addr: dict[tuple[str, int], StunProtocol] = {}

    @classmethod
    async def open(cls, host: str, port: int, advertise: list[str]) -> UdpMux:
        mux = cls(advertise)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: mux, local_addr=(host, port))
        return mux

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sock = transport.get_extra_info("socket")._sock  # type: ignore[union-attr]
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        addr = (addr[0], addr[1])
        p = self.by_addr.get(addr)
        if data and data[0] < 2 and len(data) >= 20:  # STUN (RFC 5389 section 6)
            try:
                msg = stun.parse_message(data)
            except ValueError:
                msg = None
            if msg is not None:
                if msg.message_class == stun.Class.REQUEST:
                    user = msg.attributes.get("USERNAME", "")
                    q = self.by_ufrag.get(str(user).split(":", 1)[0])
                    if q is not None:
                        p = q
                        self.by_addr[addr] = q
                else:
                    p = next((q for q in self.protocols
                              if msg.transaction_id in q.transactions), p)
        if p is not None:
            p.datagram_received(data, addr)

    def register(self, protocol: StunProtocol, ufrag: str) -> None:
        self.protocols[protocol] = ufrag
        self.by_ufrag[ufrag] = protocol

    def unregister(self, protocol: StunProtocol) -> None:
        ufrag = self.protocols.pop(protocol, None)
        if ufrag is not None and self.by_ufrag.get(ufrag) is protocol:
            del self.by_ufrag[ufrag]
        for addr in [a for a, q in self.by_addr.items() if q is protocol]:
            del self.by_addr[addr]

    def attach(self, conn: Connection) -> None:
        """Make ``conn`` gather one host candidate per advertised address, on this socket."""

        async def gather(component: int, addresses: list[str], **_: Any) -> list[Candidate]:
            protocol = StunProtocol(conn)
            protocol.connection_made(_MuxTransport(self, protocol))
            self.register(protocol, conn.local_username)
            conn._protocols.append(protocol)
            candidates = []
            for host in self.advertise or addresses:
                candidates.append(Candidate(
                    foundation=candidate_foundation("host", "udp", host), component=component,
                    transport="udp", priority=candidate_priority(component, "host"),
                    host=host, port=self.port, type="host"))
            protocol.local_candidate = candidates[0]
            return candidates

        conn.get_component_candidates = gather  # type: ignore[method-assign]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

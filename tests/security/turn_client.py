"""A minimal TURN client (RFC 8656) over UDP, just enough to attack a relay: Allocate (with the
long-term credential dance), CreatePermission, Send indications.

Requests are encoded here (aioice's encoder knows no REQUESTED-ADDRESS-FAMILY, needed for IPv6
relays); responses are decoded with aioice.stun.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable

from aioice import stun

MAGIC = 0x2112A442
ALLOCATE, CREATE_PERMISSION, SEND_INDICATION, DATA_INDICATION = 0x0003, 0x0008, 0x0016, 0x0017
USERNAME, MESSAGE_INTEGRITY, LIFETIME, XOR_PEER_ADDRESS, DATA = 0x6, 0x8, 0xD, 0x12, 0x13
REALM, NONCE, REQUESTED_ADDRESS_FAMILY, REQUESTED_TRANSPORT = 0x14, 0x15, 0x17, 0x19
UDP = 17


def rest_credential(secret: str, identity: str, ttl_s: int = 600) -> tuple[str, str]:
    """coturn's use-auth-secret credential (what signaling hands out): user and password."""
    user = f"{int(time.time()) + ttl_s}:{identity}"
    return user, base64.b64encode(hmac.new(secret.encode(), user.encode(),
                                           hashlib.sha1).digest()).decode()


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _xor_address(ip: str, port: int, tid: bytes) -> bytes:
    addr = ipaddress.ip_address(ip)
    mask = struct.pack("!I", MAGIC) + (tid if addr.version == 6 else b"")
    packed = bytes(a ^ b for a, b in zip(addr.packed, mask, strict=False))
    family = 1 if addr.version == 4 else 2
    return struct.pack("!BBH", 0, family, port ^ (MAGIC >> 16)) + packed


def _encode(kind: int, tid: bytes, attrs: bytes, key: bytes | None = None) -> bytes:
    if key is not None:  # MESSAGE-INTEGRITY covers the header with the length including it
        header = struct.pack("!HHI12s", kind, len(attrs) + 24, MAGIC, tid)
        attrs += _attr(MESSAGE_INTEGRITY, hmac.new(key, header + attrs, hashlib.sha1).digest())
    return struct.pack("!HHI12s", kind, len(attrs), MAGIC, tid) + attrs


class TurnError(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(f"{code} {reason}")
        self.code = code


class TurnClient:
    """One allocation on one UDP socket (a 5-tuple), blocking with a timeout per answer."""

    def __init__(self, server: tuple[str, int], user: str, password: str, timeout: float = 2):
        self.server, self.user, self.password = server, user, password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.realm = self.nonce = b""
        self.relayed: tuple[str, int] | None = None

    def close(self) -> None:
        self.sock.close()

    def _key(self) -> bytes:
        return hashlib.md5(f"{self.user}:{self.realm.decode()}:{self.password}".encode()).digest()

    def _transact(self, method: int, build: Callable[[bytes], bytes]) -> stun.Message:
        """A request whose attributes ``build(transaction id)`` makes (XOR-PEER-ADDRESS depends
        on it), authenticated once the realm and nonce are known; a 401 or 438 (stale nonce)
        is answered once with the new nonce."""
        for _ in range(2):
            tid = os.urandom(12)
            attrs = build(tid)
            if self.nonce:
                attrs += (_attr(USERNAME, self.user.encode()) + _attr(REALM, self.realm)
                          + _attr(NONCE, self.nonce))
            reply = self._exchange(_encode(method, tid, attrs,
                                           self._key() if self.nonce else None), tid)
            if reply.message_class == stun.Class.ERROR and reply.error_code in (401, 438):
                self.realm = reply.attributes["REALM"].encode()
                self.nonce = reply.attributes["NONCE"]
                continue
            return reply
        return reply

    def _exchange(self, data: bytes, tid: bytes) -> stun.Message:
        for _ in range(4):
            self.sock.sendto(data, self.server)
            try:
                while True:
                    raw, _ = self.sock.recvfrom(65536)
                    msg = stun.parse_message(raw)
                    if msg.transaction_id == tid:
                        return msg
            except TimeoutError:
                continue
        raise TimeoutError(f"no answer from TURN server {self.server}")

    @staticmethod
    def _check(reply: stun.Message) -> stun.Message:
        if reply.message_class == stun.Class.ERROR:
            code, reason = reply.attributes["ERROR-CODE"]
            raise TurnError(code, reason)
        return reply

    def allocate(self, family: int = 4) -> tuple[str, int]:
        """An allocation (IPv4 relay, or IPv6 with ``family=6``); its relayed address."""
        attrs = _attr(REQUESTED_TRANSPORT, bytes([UDP, 0, 0, 0])) + _attr(
            LIFETIME, struct.pack("!I", 300))
        if family == 6:
            attrs += _attr(REQUESTED_ADDRESS_FAMILY, bytes([2, 0, 0, 0]))
        reply = self._check(self._transact(ALLOCATE, lambda _tid: attrs))
        self.relayed = reply.attributes["XOR-RELAYED-ADDRESS"]
        return self.relayed

    def permit(self, peer: str) -> None:
        """CreatePermission for ``peer``; raises TurnError (403 for a forbidden address)."""
        self._check(self._transact(CREATE_PERMISSION, lambda tid: _attr(
            XOR_PEER_ADDRESS, _xor_address(peer, 0, tid))))

    def send(self, peer: tuple[str, int], data: bytes) -> None:
        """A Send indication: ``data`` goes out of the relay to ``peer`` if permitted."""
        tid = os.urandom(12)
        attrs = _attr(XOR_PEER_ADDRESS, _xor_address(*peer, tid)) + _attr(DATA, data)
        self.sock.sendto(_encode(SEND_INDICATION, tid, attrs), self.server)

"""Guest identities: a server-made ``guest-<8 hex>`` identity and its token, minted either by
``POST /api/v1/guest-token`` or by the WebSocket itself (``/ws?guest=1&room=&name=``), which
saves a meeting link that joins at once one HTTP round trip before its socket opens
(docs/benchmarks.md, "Join time"). Both ways check the same fields and give the same grants and
lifetime, so neither admits more than the other."""

from __future__ import annotations

import re
import secrets

from parley import tokens
from parley.config import Settings
from parley.signaling.users import UserDirectory

NAME_RE = re.compile(r"^[^\x00-\x1f]{1,64}$")
ID_RE = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,64}$")


class GuestRefused(Exception):
    """Why no guest token is made: an HTTP status for the endpoint, a code and a plain message
    for both ways (the socket sends them as an ``error`` and closes)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check(settings: Settings, room: object, name: object) -> None:
    """The fields a new guest may ask for, and whether guests are admitted at all."""
    if not settings.allow_guests:
        raise GuestRefused(403, "guests_disabled", "this deployment does not admit guests")
    if not (isinstance(room, str) and ID_RE.match(room) and isinstance(name, str)
            and NAME_RE.match(name)):
        raise GuestRefused(400, "bad_request", "room: 1-64 of [A-Za-z0-9_.:@+-]; "
                                               "name: 1-64 printable characters")
    if room.startswith("broadcast:"):  # a broadcast token is a stream key (docs/broadcast.md)
        raise GuestRefused(403, "broadcast_room", "guests get no broadcast tokens: "
                                                  "parley token --broadcast B --source S")


async def new_identity(users: UserDirectory) -> str:
    """``guest-<8 hex>``, never a registered user's identity."""
    while True:
        identity = f"{tokens.GUEST_PREFIX}{secrets.token_hex(4)}"
        if not await users.registered(identity):
            return identity


def mint(settings: Settings, identity: str, room: str, name: str,
         since: int | None = None) -> str:
    """A guest token with the deployment's guest grants and lifetime."""
    return tokens.mint(settings.token_secret, identity=identity, room=room, name=name,
                       grants=settings.guest_grants, ttl_s=settings.guest_ttl_s, guest=True,
                       since=since)


async def new_guest(settings: Settings, users: UserDirectory, room: object, name: object) -> str:
    """A token for a new guest in ``room`` named ``name`` (checked; GuestRefused if not)."""
    check(settings, room, name)
    return mint(settings, await new_identity(users), str(room), str(name))

"""Time-limited TURN credentials in coturn's shared-secret scheme ("TURN REST API").

username = "<expiry unix time>:<identity>", credential = base64(HMAC-SHA1(secret, username)),
as in draft-uberti-behave-turn-rest-00, which coturn implements with ``use-auth-secret``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str
    expires_at: int


def credential_for(secret: str, identity: str, ttl_s: int = 3600,
                   now: float | None = None) -> TurnCredential:
    expires = int(now if now is not None else time.time()) + ttl_s
    username = f"{expires}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode(), expires)


def ice_servers(stun_uris: tuple[str, ...], turn_uris: tuple[str, ...], secret: str | None,
                identity: str, ttl_s: int = 3600) -> list[dict]:
    """The ``iceServers`` list a client gets, in the W3C RTCIceServer shape."""
    servers: list[dict] = [{"urls": list(stun_uris)}] if stun_uris else []
    if turn_uris and secret:
        cred = credential_for(secret, identity, ttl_s)
        servers.append({"urls": list(turn_uris), "username": cred.username,
                        "credential": cred.credential})
    return servers

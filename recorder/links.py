"""Signed, expiring download links: the link itself is the credential, so a participant can open
it in a player or hand it to a colleague until it expires, without a Parley token.

``sig = base64url(HMAC-SHA256(key, "<recording>/<file>\\n<expires>"))`` (RFC 2104), where the key
is derived from the deployment's token secret so links and tokens never share a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import quote


class LinkError(ValueError):
    """``code`` is ``link_expired`` or ``link_invalid``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"parley-recording-links\0" + secret.encode()).digest()


def signature(secret: str, recording: str, name: str, expires: int) -> str:
    mac = hmac.new(_key(secret), f"{recording}/{name}\n{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def link(secret: str, recording: str, name: str, ttl_s: int, *, base: str = "",
         now: float | None = None) -> tuple[str, int]:
    """(URL, expiry unix time); relative unless ``base`` (the public URL) is given."""
    expires = int(now if now is not None else time.time()) + ttl_s
    sig = signature(secret, recording, name, expires)
    path = f"/api/v1/recordings/{quote(recording)}/files/{quote(name)}"
    return f"{base.rstrip('/')}{path}?expires={expires}&sig={sig}", expires


def check(secret: str, recording: str, name: str, expires: int, sig: str,
          now: float | None = None) -> None:
    """Raise ``LinkError`` unless the signature matches and the link has not expired."""
    good = signature(secret, recording, name, expires)
    if not hmac.compare_digest(good, sig or ""):
        raise LinkError("link_invalid", "the download link's signature does not match")
    if (now if now is not None else time.time()) > expires:
        raise LinkError("link_expired", "the download link has expired; list the recordings "
                        "again for a fresh one")

"""Access tokens: signed JWTs (HS256) carrying identity, room, grants and an expiry.

Every component that admits a client verifies the same token, so the format lives in the core.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import sys
import time
from dataclasses import dataclass
from typing import Any

import jwt

GRANTS = frozenset({"publish", "subscribe", "record", "admin"})
DEFAULT_GRANTS = ("publish", "subscribe")
ISSUER = "parley"
LEEWAY_S = 5


def control_key(secret: str) -> str:
    """The bearer key of call servers' control API: derived from the token secret, so the
    deployment has one secret, and a client's access token never opens the control API."""
    mac = hmac.new(secret.encode(), b"parley-call-server-control", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def control_headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {control_key(secret)}"}


class TokenError(ValueError):
    """A token was missing, malformed, badly signed, expired or lacked a grant.

    ``code`` is a stable machine-readable reason (``token_expired``, ``token_invalid``,
    ``grant_missing``) that signaling puts into its error messages.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AccessToken:
    """The verified claims of a token."""

    identity: str
    room: str
    grants: frozenset[str]
    name: str
    expires_at: int

    def require(self, grant: str) -> None:
        if grant not in self.grants and "admin" not in self.grants:
            raise TokenError("grant_missing", f"token lacks the '{grant}' grant")


def mint(secret: str, *, identity: str, room: str, grants: tuple[str, ...] = DEFAULT_GRANTS,
         name: str | None = None, ttl_s: int = 3600, now: float | None = None) -> str:
    """Sign a token for ``identity`` in ``room``; ``room='*'`` admits any room."""
    unknown = set(grants) - GRANTS
    if unknown:
        raise ValueError(f"unknown grants: {sorted(unknown)}")
    if not identity or not room:
        raise ValueError("identity and room are required")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER, "sub": identity, "room": room, "grants": sorted(set(grants)),
        "name": name or identity, "iat": issued, "exp": issued + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str, *, room: str | None = None) -> AccessToken:
    """Check signature, expiry and (when given) that the token admits ``room``."""
    if not token:
        raise TokenError("token_invalid", "no token given")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER, leeway=LEEWAY_S,
                            options={"require": ["exp", "sub", "iss"]})
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token_expired", "token has expired") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("token_invalid", f"token rejected: {exc}") from exc
    granted = frozenset(g for g in claims.get("grants", []) if g in GRANTS)
    token_room = str(claims.get("room", ""))
    if room is not None and token_room not in ("*", room):
        raise TokenError("token_invalid", f"token is for room '{token_room}', not '{room}'")
    return AccessToken(identity=str(claims["sub"]), room=token_room, grants=granted,
                       name=str(claims.get("name") or claims["sub"]),
                       expires_at=int(claims["exp"]))


def broadcast_room(broadcast: str) -> str:
    """The room claim of a broadcast's tokens: a stream key (``publish``, identity = source
    name), a director's (``admin``: sets the programme) or a viewer's (``subscribe``)."""
    return f"broadcast:{broadcast}"


def cli(args: argparse.Namespace) -> int:
    """`parley token`: print only the token, so it can be captured by a shell."""
    from parley.config import Settings

    settings = Settings.from_env()
    broadcast = getattr(args, "broadcast", None)  # a stream key: --broadcast B --source cam1
    identity = args.identity or getattr(args, "source", None)
    if not identity:
        print("parley token: --identity is required (with --broadcast: --source)",
              file=sys.stderr)
        return 2
    room = broadcast_room(broadcast) if broadcast else args.room
    print(mint(settings.token_secret, identity=identity, room=room,
               grants=tuple(args.grant or DEFAULT_GRANTS), name=args.name, ttl_s=args.ttl))
    return 0

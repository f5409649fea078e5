"""Access tokens: signed JWTs (HS256) carrying identity, room, grants, audience and a bounded
lifetime.

Every component that admits a client verifies the same token, so the format lives in the core.
A guest token (``guest: true``) is minted by signaling itself for a server-made ``guest-<hex>``
identity; everything else comes from the deployment (its login, or `parley token`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import jwt

GRANTS = frozenset({"publish", "subscribe", "record", "admin"})
DEFAULT_GRANTS = ("publish", "subscribe")
ISSUER = "parley"
AUDIENCE = "parley"  # tokens of another system signed with a shared secret are refused
LEEWAY_S = 5
MAX_TTL_S = 24 * 3600  # no token lives longer than a day
GUEST_PREFIX = "guest-"


def control_key(secret: str) -> str:
    """The bearer key of call servers' control API: derived from the token secret, so the
    deployment has one secret, and a client's access token never opens the control API."""
    # A one-way hash the chart computes too (Helm's sha256sum in secrets.yaml): call servers and
    # the operator get this key, never the secret it comes from.
    return hashlib.sha256(f"parley-call-server-control:{secret}".encode()).hexdigest()


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
    guest: bool = False
    since: int = 0  # when this guest's first token was issued (``since``; else ``iat``)

    def allows(self, grant: str) -> bool:
        return grant in self.grants or "admin" in self.grants

    def require(self, grant: str) -> None:
        if not self.allows(grant):
            raise TokenError("grant_missing", f"token lacks the '{grant}' grant")


def mint(secret: str, *, identity: str, room: str, grants: tuple[str, ...] = DEFAULT_GRANTS,
         name: str | None = None, ttl_s: int = 3600, now: float | None = None,
         guest: bool = False, audience: str = AUDIENCE, since: int | None = None) -> str:
    """Sign a token for ``identity`` in ``room``; ``room='*'`` admits any room.
    ``ttl_s`` is capped: 1 s to :data:`MAX_TTL_S`. A guest token carries ``since``, when that
    guest's first token was issued (a refresh passes it on), which bounds its total life."""
    unknown = set(grants) - GRANTS
    if unknown:
        raise ValueError(f"unknown grants: {sorted(unknown)}")
    if not identity or not room:
        raise ValueError("identity and room are required")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be 1..{MAX_TTL_S} seconds, not {ttl_s}")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": audience, "sub": identity, "room": room,
        "grants": sorted(set(grants)), "name": name or identity, "iat": issued, "nbf": issued,
        "exp": issued + int(ttl_s),
    }
    if guest:
        claims["guest"] = True
        claims["since"] = int(since if since is not None else issued)
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str, *, room: str | None = None,
           audience: str = AUDIENCE) -> AccessToken:
    """Check signature, issuer, audience, not-before, expiry, the lifetime cap and (when given)
    that the token admits ``room``."""
    if not token:
        raise TokenError("token_invalid", "no token given")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER,
                            audience=audience, leeway=LEEWAY_S,
                            options={"require": ["exp", "nbf", "iat", "sub", "iss", "aud"]})
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token_expired", "token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenError("token_invalid", "token is not valid yet (nbf)") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("token_invalid", f"token rejected: {exc}") from exc
    if int(claims["exp"]) - int(claims["iat"]) > MAX_TTL_S:
        raise TokenError("token_invalid", f"token lifetime exceeds {MAX_TTL_S} s")
    granted = frozenset(g for g in claims.get("grants", []) if g in GRANTS)
    token_room = str(claims.get("room", ""))
    if room is not None and token_room not in ("*", room):
        raise TokenError("token_invalid", f"token is for room '{token_room}', not '{room}'")
    return AccessToken(identity=str(claims["sub"]), room=token_room, grants=granted,
                       name=str(claims.get("name") or claims["sub"]),
                       expires_at=int(claims["exp"]), guest=claims.get("guest") is True,
                       since=_since(claims))


def _since(claims: dict[str, Any]) -> int:
    """A guest's first issue time; ``iat`` when absent or not an integer."""
    since = claims.get("since")
    return since if isinstance(since, int) and not isinstance(since, bool) else int(claims["iat"])


def broadcast_room(broadcast: str) -> str:
    """The room claim of a broadcast's tokens: a stream key (``publish``, identity = source
    name), a director's (``admin``: sets the programme) or a viewer's (``subscribe``)."""
    return f"broadcast:{broadcast}"


def cli(args: argparse.Namespace) -> int:
    """`parley token`: print only the token, so it can be captured by a shell."""
    from parley.config import Settings

    if not 0 < args.ttl <= MAX_TTL_S:
        print(f"parley token: --ttl must be 1..{MAX_TTL_S} seconds (24 h)", file=sys.stderr)
        return 2
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

"""Who may do what with recordings (issue 9, item 3): starting and stopping needs the
``record`` grant; listing and downloading needs ``record`` or ``admin``, or having been in the
meeting that was recorded (the manifest's ``participants``: everyone in the room when it
started, who joined while it ran, and who was there when it stopped)."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from parley import tokens

VIEW_GRANT = "record"  # AccessToken.allows: ``admin`` includes it


def bearer(authorization: str | None, token: str | None = None) -> str:
    """The token from ``Authorization: Bearer`` or, for a plain link a browser opens, the
    ``token`` query parameter (as ``/ws?token=`` does)."""
    return (authorization or "").removeprefix("Bearer ").strip() or (token or "")


def authorize(secret: str, raw_token: str, room: str, grant: str | None) -> tokens.AccessToken:
    """A token valid for ``room`` (and holding ``grant``), else 401/403 with a JSON body."""
    try:
        access = tokens.verify(secret, raw_token, room=room)
        if grant:
            access.require(grant)
    except tokens.TokenError as exc:
        status = 403 if exc.code == "grant_missing" else 401
        message = str(exc) + (" (ask the meeting host for a token with the record grant)"
                              if exc.code == "grant_missing" else "")
        raise HTTPException(status, {"code": exc.code, "message": message}) from None
    return access


def may_view(access: tokens.AccessToken, manifest: dict[str, Any]) -> bool:
    return access.allows(VIEW_GRANT) or access.identity in manifest.get("participants", ())


def not_a_participant(room: str) -> HTTPException:
    return HTTPException(403, {
        "code": "not_a_participant",
        "message": f"only people who were in the recorded meeting of '{room}', or a token "
                   f"with the record or admin grant, may see its recordings"})

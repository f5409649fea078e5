"""What WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) sessions share: the HTTP shape (201 +
Location + SDP answer, DELETE, 405 for PATCH, CORS), offer checks and codec restriction.

Parley carries H.264 (packetization-mode 1, constrained baseline: what browsers send over WebRTC
and what HLS needs in part 2) and Opus end to end; offers without them are refused with 400
``codec_unsupported`` instead of being answered with a codec the path cannot carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc import sdp as aiosdp
from fastapi import Request
from fastapi.responses import JSONResponse, Response

SDP = "application/sdp"
MAX_OFFER = 64 * 1024
CONNECT_TIMEOUT = 30.0  # a session whose ICE/DTLS never completes is dropped
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, Accept-Patch",
    "Access-Control-Max-Age": "86400",
}
WANTED = {"video": "video/h264", "audio": "audio/opus"}


class SessionError(Exception):
    """A client error: HTTP status, stable code, message (the JSON body)."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": {"code": self.code, "message": self.message}},
                            status_code=self.status, headers={**CORS, **self.headers})


def bearer(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


async def read_offer(request: Request) -> str:
    """The request's SDP offer, or a SessionError that says what is wrong with it."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != SDP:
        raise SessionError(415, "content_type", f"send the offer as {SDP}, not "
                           f"{ctype or 'nothing'}", {"Accept-Post": SDP})
    body = await request.body()
    if len(body) > MAX_OFFER:
        raise SessionError(413, "offer_too_large", f"an offer is at most {MAX_OFFER} bytes")
    try:
        text = body.decode()
        parsed = aiosdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises anything on garbage
        raise SessionError(400, "sdp_invalid", f"the body is not an SDP offer: {exc}") from exc
    if not text.startswith("v=0") or not parsed.media:
        raise SessionError(400, "sdp_invalid", "the offer has no media sections")
    return text


def ice_config(ice_servers: list[RTCIceServer] | None = None) -> RTCConfiguration:
    return RTCConfiguration(iceServers=ice_servers or [],
                            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def restrict_codecs(transceiver: Any) -> None:
    """Keep H.264 (packetization-mode 1) or Opus and its RTX; refuse an m-line without it."""
    codecs = transceiver._codecs
    want = WANTED.get(transceiver.kind, "")
    main = next((c for c in codecs if c.mimeType.lower() == want and (
        want != "video/h264" or str(c.parameters.get("packetization-mode", "0")) == "1")), None)
    if main is None:
        offered = sorted({c.mimeType for c in codecs}) or ["nothing Parley can carry"]
        raise SessionError(400, "codec_unsupported",
                           f"{transceiver.kind}: Parley carries {want} only"
                           + (" (packetization-mode=1, constrained baseline)"
                              if transceiver.kind == "video" else "")
                           + f"; the offer has {', '.join(offered)}")
    rtx = [c for c in codecs
           if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == main.payloadType]
    transceiver._codecs = [main, *rtx]


async def answer(pc: RTCPeerConnection, offer: str, sends: bool) -> None:
    """Apply the offer; every m-line must send (WHIP, ``sends``) or receive (WHEP) and carry
    our codecs."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    except Exception as exc:
        raise SessionError(400, "sdp_invalid", f"the offer was refused: {exc}") from exc
    transceivers = pc.getTransceivers()
    if not transceivers:
        raise SessionError(400, "sdp_invalid", "the offer has no audio or video")
    for t in transceivers:
        if t.kind not in WANTED:
            raise SessionError(400, "sdp_invalid", f"unsupported media {t.kind}")
        restrict_codecs(t)
    # aiortc keeps the offer's direction from our side: a sendonly offer is recvonly for us
    want, role = ("recv", "a WHIP offer publishes (sendonly)") if sends else (
        "send", "a WHEP offer receives (recvonly)")
    for t in transceivers:
        if want not in (getattr(t, "_offerDirection", None) or ""):
            raise SessionError(400, "direction", f"{role}; the {t.kind} m-line is not")


def new_id() -> str:
    return secrets.token_urlsafe(12)


async def close_quietly(pc: RTCPeerConnection) -> None:
    with contextlib.suppress(Exception):
        await pc.close()


def sdp_response(answer_sdp: str, location: str, etag: str,
                 extra: dict[str, str] | None = None) -> Response:
    return Response(answer_sdp, status_code=201, media_type=SDP, headers={
        **CORS, "Location": location, "ETag": f'"{etag}"', **(extra or {})})


def options_response() -> Response:
    return Response(status_code=204, headers={**CORS, "Accept-Post": SDP})


def patch_response() -> Response:
    """RFC 9725 section 4.3.1: trickle and ICE restart are optional; without them, 405."""
    return JSONResponse({"detail": {"code": "patch_unsupported", "message":
                         "trickle ICE and ICE restart are not supported: put candidates in the "
                         "offer, or DELETE and POST again"}}, status_code=405,
                        headers={**CORS, "Allow": "DELETE, OPTIONS"})


async def watch_connection(pc: RTCPeerConnection, on_gone: Any) -> None:
    """Call ``on_gone`` when the connection fails, closes, or never connects."""
    up, done = asyncio.Event(), asyncio.Event()

    @pc.on("connectionstatechange")
    def changed() -> None:
        if pc.connectionState == "connected":
            up.set()
        elif pc.connectionState in ("failed", "closed"):
            up.set()
            done.set()

    changed()  # the state may have moved before this task ran
    try:
        await asyncio.wait_for(up.wait(), CONNECT_TIMEOUT)
    except TimeoutError:
        done.set()
    await done.wait()
    await on_gone()

"""The client <-> signaling JSON message protocol: message types, field validation, error and
close codes. Every inbound frame passes through :func:`parse`, so nothing a client sends reaches
the room or call logic without having the documented shape (docs/signaling.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_FRAME_BYTES = 65536  # also uvicorn's ws_max_size: larger frames close with 1009
MAX_SDP_BYTES = 60000
MAX_ID_LEN = 128

# WebSocket close codes (4xxx are private-use codes, RFC 6455 section 7.4.2).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TOKEN_INVALID = 4401
CLOSE_TOKEN_EXPIRED = 4402
CLOSE_IDENTITY_IN_USE = 4403  # a guest token cannot take over a connected identity
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_REPLACED = 4409
CLOSE_SLOW_CONSUMER = 4413
CLOSE_TOO_MANY_CONNECTIONS = 4429  # the per-address WebSocket cap

# Error codes carried by {"type": "error", "code": ...}.
ERROR_CODES = {
    "bad_json": "the frame is not a JSON object",
    "bad_message": "a field is missing, has the wrong type or is out of range",
    "unknown_type": "the message type is not part of the protocol",
    "too_large": "the frame exceeds the size limit",
    "bad_sdp": "the sdp field does not look like a session description",
    "not_authenticated": "a message other than auth arrived before authentication",
    "already_authenticated": "auth was sent twice",
    "token_invalid": "the token is malformed, badly signed or for another room",
    "token_expired": "the token has expired",
    "grant_missing": "the token lacks a grant the action needs (e.g. 'publish' for an SDP "
                     "that sends or for sfu.publish)",
    "identity_mismatch": "token.refresh carried a token for another identity",
    "guest_session_limit": "token.refresh of a guest past PARLEY_GUEST_MAX_SESSION_S since its "
                           "first guest token; the session ends at its token's expiry",
    "identity_in_use": "a guest token's identity is already connected; only a token minted by "
                       "the deployment takes over a session",
    "rate_limited": "too many messages of this kind (caps/media, join, sfu.join, "
                    "sfu.answer/sfu.publish, sfu.view, invite, chat.send, chat.history, "
                    "presence, telemetry); "
                    "dropped, retry after retryAfterMs",
    "chat_too_long": "a chat message's text exceeds the size limit (maxChars); not sent",
    "chat_not_allowed": "this direct message or conversation is not allowed (guests chat in "
                        "their room only; users message whom they may call)",
    "too_many_tracks": "the SDP sends more tracks than a participant may publish",
    "too_many_connections": "this address has too many WebSocket connections (close 4429)",
    "not_joined": "the action needs a joined room",
    "already_joined": "join was sent while already in a room",
    "peer_not_in_room": "the target of an offer/answer/ice is not in the sender's room",
    "not_mesh": "offer.standing in a room whose media goes through a call server",
    "room_full_p2p": "the room is at its peer-to-peer limit and p2p was requested",
    "room_full": "the room already has the participants it admits (its Meeting resource's "
                 "maxParticipants, else PARLEY_MAX_ROOM_SIZE)",
    "sfu_unavailable": "the room needs a call server and none is available",
    "sfu_session": "the call server refused or lost the session (signaling re-places it)",
    "not_sfu": "the action needs a call-server session (sfu.join first)",
    "sfu_stale": "an sfu.answer of a call-server connection the client already replaced "
                 "(its ICE ufrag is not the current one's); dropped",
    "presence_not_allowed": "presence is for signed-in users (guests get none)",
    "call_not_allowed": "the user service does not allow this caller to call that user",
    "unknown_call": "no such call, or the sender is not a party to it",
    "call_state": "the call is not in a state that allows this action",
    "already_in_call": "the caller is already in a call or ringing",
    "self_call": "a user cannot call themselves",
    "bad_telemetry": "a quality.sample or client.info field is missing, unknown, of the wrong "
                     "type or out of range (signaling/telemetry.py); dropped, the session stays",
    "internal": "the server failed handling the message; the connection stays up",
}

_ID_RE = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,128}$")
_SDP_M_LINE = re.compile(r"^m=(audio|video|application) \d+ ", re.MULTILINE)


class ProtocolError(Exception):
    """A client message was refused; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, message: str, ref: Any = None, **extra: Any):
        super().__init__(message)
        assert code in ERROR_CODES, code
        self.code = code
        self.ref = ref
        self.extra = extra  # more fields of the error message (e.g. retryAfterMs)


def _ident(value: Any) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError("must be 1-128 characters of letters, digits and _.:@+-")
    return value


def _idents(value: Any) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= 100:
        raise ValueError("must be a list of 1-100 identities")
    return [_ident(v) for v in value]


def _text(limit: int) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or len(value) > limit:
            raise ValueError(f"must be a string of at most {limit} characters")
        return value

    return check


def _int(lo: int, hi: int) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"must be an integer in [{lo}, {hi}]")
        return value

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _codecs(value: Any) -> list[str]:
    if (not isinstance(value, list) or not 1 <= len(value) <= 16
            or not all(isinstance(c, str) and 0 < len(c) <= 32 for c in value)):
        raise ValueError("must be a list of 1-16 codec names")
    return value


def sdp(value: Any) -> str:
    """A session description must at least look like one: ``v=0`` first and an ``m=`` line."""
    if not isinstance(value, str) or len(value) > MAX_SDP_BYTES:
        raise ProtocolError("bad_sdp", f"sdp must be a string of at most {MAX_SDP_BYTES} bytes")
    if not value.startswith("v=0") or not _SDP_M_LINE.search(value):
        raise ProtocolError("bad_sdp", "sdp must start with v=0 and contain an m= line")
    return value


_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def sending_tracks(value: str) -> int:
    """How many audio/video m-sections of a (validated) SDP send media: direction sendrecv or
    sendonly (media-level, else session-level, default sendrecv) and a port other than 0."""
    session_dir = "sendrecv"
    count = 0
    section: tuple[bool, str | None] | None = None  # (is audio/video with a port, direction)

    def close(sec: tuple[bool, str | None] | None) -> int:
        if sec is None or not sec[0]:
            return 0
        return 1 if (sec[1] or session_dir) in ("sendrecv", "sendonly") else 0

    for line in value.splitlines():
        line = line.strip()
        if line.startswith("m="):
            count += close(section)
            parts = line[2:].split()
            section = (len(parts) > 1 and parts[0] in ("audio", "video") and parts[1] != "0",
                       None)
        elif line.startswith("a=") and line[2:] in _DIRECTIONS:
            if section is None:
                session_dir = line[2:]
            else:
                section = (section[0], line[2:])
    return count + close(section)


def _candidate(value: Any) -> dict | None:
    """A trickled RTCIceCandidateInit, or null for end-of-candidates."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("must be an RTCIceCandidateInit object or null")
    cand = value.get("candidate")
    if not isinstance(cand, str) or len(cand) > 1024 or (cand and not cand.startswith(
            ("candidate:", "a=candidate:"))):
        raise ValueError("candidate must be a string starting with 'candidate:' (or empty)")
    out: dict[str, Any] = {"candidate": cand}
    mid = value.get("sdpMid")
    if mid is not None:
        out["sdpMid"] = _text(32)(mid)
    idx = value.get("sdpMLineIndex")
    if idx is not None:
        out["sdpMLineIndex"] = _int(0, 64)(idx)
    return out


def _sources(value: Any) -> dict[str, str]:
    """Which of the sender's MediaStream ids carry the camera and which the screen."""
    if not isinstance(value, dict) or len(value) > 8:
        raise ValueError("must be an object of at most 8 stream ids")
    for k, v in value.items():
        if not isinstance(k, str) or len(k) > 64 or v not in ("camera", "screen"):
            raise ValueError("maps stream ids to 'camera' or 'screen'")
    return value


def _path(value: Any) -> str:
    """The media path the sender wants for this peer pair (docs/signaling.md, "P2P fallback")."""
    if value not in ("direct", "relay"):
        raise ValueError("must be 'direct' or 'relay'")
    return value


def _string(value: Any) -> str:
    """Any string (the frame limit bounds it); its own module checks its length."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def _chat_ids(value: Any) -> list[str]:
    if (not isinstance(value, list) or not 1 <= len(value) <= 100
            or not all(isinstance(i, str) and _STREAM_ID.match(i) for i in value)):
        raise ValueError("must be a list of 1-100 chat message ids")
    return value


def _chat_id(value: Any) -> str:
    if not isinstance(value, str) or not _STREAM_ID.match(value):
        raise ValueError("must be a chat message id (<ms>-<seq>)")
    return value


def _object(value: Any) -> dict[str, Any]:
    """A JSON object whose fields another module checks (telemetry: ``bad_telemetry``)."""
    if not isinstance(value, dict):
        raise ValueError("must be an object")
    return value


def _kinds(value: Any) -> list[str]:
    if (not isinstance(value, list) or not 1 <= len(value) <= 4
            or not all(k in ("audio", "video") for k in value)):
        raise ValueError("must be a list of 1-4 of 'audio', 'video'")
    return value


def _max_bitrate(value: Any) -> int:
    """The most a client wants to receive from the call server, bits/s; 0 lifts its cap."""
    if (not isinstance(value, int) or isinstance(value, bool)
            or not (value == 0 or 30_000 <= value <= 100_000_000)):
        raise ValueError("must be 0 (no cap) or 30000-100000000 bits/s")
    return value


def _views(value: Any) -> dict[str, int]:
    """Rendered tile height per remote track id (sfu.view)."""
    if (not isinstance(value, dict) or len(value) > 32
            or not all(isinstance(k, str) and 0 < len(k) <= 64 and isinstance(v, int)
                       and not isinstance(v, bool) and 0 <= v <= 4320
                       for k, v in value.items())):
        raise ValueError("must map at most 32 track ids to tile heights 0-4320")
    return value


CAPS_FIELDS = {"maxHeight": _int(90, 4320), "maxFps": _int(1, 120),
               "bandwidthKbps": _int(50, 100000), "codecs": _codecs, "region": _text(64)}

# type -> {field: (validator, required)}. "id" (any client-chosen string <= 64) is allowed on
# every message and echoed as "ref" in errors.
CLIENT_MESSAGES: dict[str, dict[str, tuple[Any, bool]]] = {
    "auth": {"token": (_text(4096), True)},
    # a fresh token for the same identity before the current one expires (docs/signaling.md)
    "token.refresh": {"token": (_text(4096), True)},
    "ping": {},
    "join": {"room": (_ident, True), "topology": (_text(8), False), **{
        k: (v, False) for k, v in CAPS_FIELDS.items()}},
    "leave": {},
    "caps": {k: (v, False) for k, v in CAPS_FIELDS.items()},
    # what the sender is sending now (camera/microphone toggles) and a raised hand, shown to
    # everyone in the room
    "media": {"audio": (_bool, False), "video": (_bool, False), "hand": (_bool, False)},
    "offer": {"to": (_ident, True), "sdp": (sdp, True), "sources": (_sources, False),
              "path": (_path, False)},
    "answer": {"to": (_ident, True), "sdp": (sdp, True), "sources": (_sources, False),
               "path": (_path, False)},
    "ice": {"to": (_ident, True), "candidate": (_candidate, True)},
    # a mesh member's offer to whoever joins next (docs/signaling.md, "Standing offers")
    "offer.standing": {"sdp": (sdp, True), "sources": (_sources, False)},
    "invite": {"to": (_ident, True)},
    "accept": {"callId": (_ident, True)},
    "reject": {"callId": (_ident, True)},
    "cancel": {"callId": (_ident, True)},
    "hangup": {"callId": (_ident, True)},
    # call-server session (docs/signaling.md, "Call server"): relayed to the placed node
    # "pair": the P2P-fallback session for that one peer of a mesh room (its own meeting)
    # "early": the client takes the call server's offer of the others' tracks before its
    # connection is up (browsers do; an aiortc client does not), one round trip less to video
    "sfu.join": {"sdp": (sdp, True), "sources": (_sources, False), "pair": (_ident, False),
                 "early": (_bool, False)},
    "sfu.answer": {"sdp": (sdp, True), "sources": (_sources, False), "pair": (_ident, False)},
    "sfu.publish": {"kinds": (_kinds, True), "pair": (_ident, False)},
    # a track the client stopped (a screen share ended): the others' copies end
    "sfu.unpublish": {"track": (_text(64), True), "pair": (_ident, False)},
    # the height each remote video renders at: the call server sends no bigger layer
    "sfu.view": {"views": (_views, True), "maxBitrate": (_max_bitrate, False),
                 "pair": (_ident, False)},
    # client telemetry (docs/signaling.md, "Telemetry"), checked by signaling/telemetry.py
    "quality.sample": {"sample": (_object, True)},
    "client.info": {"info": (_object, True)},
    # chat (docs/signaling.md, "Chat"), handled by signaling/chat.py
    "chat.send": {"room": (_ident, False), "to": (_ident, False), "text": (_string, True),
                  "clientId": (_ident, True)},
    "chat.ack": {"ids": (_chat_ids, True)},
    # a page of the sender's direct-message conversation with one user, before an id
    "chat.history": {"with": (_ident, True), "before": (_chat_id, False),
                     "limit": (_int(1, 100), False)},
    # who of these users is online, for the front page's people panel (signaling/presence.py):
    # once, or now and then every change (the list replaces the previous one)
    "presence": {"ids": (_idents, True)},
    "presence.subscribe": {"ids": (_idents, True)},
}
TOPOLOGIES = ("auto", "p2p", "sfu")


@dataclass(frozen=True)
class Message:
    type: str
    fields: dict[str, Any]
    id: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def parse(raw: str | bytes) -> Message:
    """Decode and validate one client frame or raise :class:`ProtocolError`."""
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", f"frame exceeds {MAX_FRAME_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "a message must be a JSON object")
    ref = data.get("id")
    if ref is not None and not (isinstance(ref, str | int) and not isinstance(ref, bool)
                                and len(str(ref)) <= 64):
        raise ProtocolError("bad_message", "id must be a string or number of <= 64 chars")
    mtype = data.get("type")
    if not isinstance(mtype, str):
        raise ProtocolError("bad_message", "type must be a string", ref)
    spec = CLIENT_MESSAGES.get(mtype)
    if spec is None:
        raise ProtocolError("unknown_type", f"unknown message type {mtype[:40]!r}", ref)
    fields: dict[str, Any] = {}
    for name, (check, required) in spec.items():
        if name not in data or (data[name] is None and name != "candidate"):
            if required:
                raise ProtocolError("bad_message", f"{mtype}: '{name}' is required", ref)
            continue
        try:
            fields[name] = check(data[name])
        except ProtocolError as exc:
            exc.ref = ref
            raise
        except (ValueError, TypeError) as exc:
            raise ProtocolError("bad_message", f"{mtype}.{name} {exc}", ref) from None
    if mtype == "join" and fields.get("topology", "auto") not in TOPOLOGIES:
        raise ProtocolError("bad_message", f"join.topology must be one of {TOPOLOGIES}", ref)
    return Message(mtype, fields, None if ref is None else str(ref))


def error(code: str, message: str, ref: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        out["ref"] = ref
    out.update(extra)
    return out

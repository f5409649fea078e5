"""Trickle ICE for WHIP (RFC 9725 section 4.3.1): the ``application/trickle-ice-sdpfrag`` body
(RFC 8840) of a PATCH on a WHIP session, parsed into what aiortc can add.

Supported: candidates the publisher found after its offer (and ``a=end-of-candidates``), added to
the session's one ICE transport (max-bundle). Not supported: ICE restart (a fragment with a new
``ice-ufrag``/``ice-pwd``, or ``If-Match: *``): aiortc/aioice cannot restart ICE on a live
transport, so the answer is ``422`` (RFC 9725: a session that supports only one of trickle and
restart answers 422 to the other) and the publisher DELETEs and POSTs again (the programme feed
re-bases timestamps, viewers keep playing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from .sessions import SessionError

TRICKLE = "application/trickle-ice-sdpfrag"
MAX_FRAGMENT = 16 * 1024
MAX_CANDIDATES = 32  # per session: each one is a path aioice checks (and sends STUN to)


@dataclass
class Fragment:
    """What one PATCH body says."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[RTCIceCandidate] = field(default_factory=list)
    end: bool = False


def invalid(message: str) -> SessionError:
    return SessionError(400, "sdpfrag_invalid", message)


def parse(body: bytes, mids: list[str]) -> Fragment:
    """The fragment's ICE lines; ``mids`` are the session's m-line ids (a candidate for another
    m-line, or a line that is not SDP, is a 400)."""
    if len(body) > MAX_FRAGMENT:
        raise SessionError(413, "sdpfrag_too_large", f"a fragment is at most {MAX_FRAGMENT} bytes")
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise invalid("the fragment is not UTF-8 text") from exc
    frag = Fragment()
    mid = mids[0] if mids else None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise invalid(f"not an SDP line: {line[:60]!r}")
        if line.startswith("a=ice-ufrag:"):
            frag.ufrag = line[12:]
        elif line.startswith("a=ice-pwd:"):
            frag.pwd = line[10:]
        elif line.startswith("a=mid:"):
            mid = line[6:]
            if mid not in mids:
                raise invalid(f"a=mid:{mid} is not an m-line of this session ({', '.join(mids)})")
        elif line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line[12:])
            except Exception as exc:  # aiortc asserts or fails to convert on garbage
                raise invalid(f"a bad candidate line: {line[:80]!r}") from exc
            candidate.sdpMid = mid
            frag.candidates.append(candidate)
        elif line == "a=end-of-candidates":
            frag.end = True
    if not frag.candidates and not frag.end and frag.ufrag is None:
        raise invalid("the fragment has no a=candidate, a=end-of-candidates or a=ice-ufrag")
    return frag

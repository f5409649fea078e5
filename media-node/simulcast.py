"""Simulcast negotiation with browsers (RFC 8853 with RID, RFC 8851), on top of aiortc.

A browser that publishes with ``sendEncodings`` offers ``a=rid:<id> send`` per layer and
``a=simulcast:send q;h;f``, signals no SSRCs for them, and tags each layer's packets with the
MID, RID and repaired-RID header extensions (RFC 8843 section 15, RFC 8852) until they are
acknowledged. aiortc parses neither attribute and routes unsignalled SSRCs by payload type only, so
the call server:

- negotiates the RID extensions (added to aiortc's video header-extension list at import),
- answers (and, in its later offers, keeps) ``a=rid:<id> recv`` + ``a=simulcast:recv`` for each
  such m-line; without them the browser falls back to one layer,
- routes a packet of an unknown SSRC by its MID extension, before aiortc's payload-type guess.
"""

from __future__ import annotations

import re
from typing import Any

from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MAX_LAYERS = 3

_video = HEADER_EXTENSIONS["video"]
for _id, _uri in ((10, RID), (11, REPAIRED_RID)):
    if not any(e.uri == _uri for e in _video):
        _video.append(RTCRtpHeaderExtensionParameters(id=_id, uri=_uri))

_SIMULCAST = re.compile(r"^a=simulcast:\s*send\s+(\S+)", re.MULTILINE)
_MID = re.compile(r"^a=mid:(\S+)", re.MULTILINE)


def offered_layers(sdp: str) -> dict[str, list[str]]:
    """mid -> the rids a client offers to send on it, in its order (lowest first by our clients'
    convention), for m-lines with ``a=simulcast:send``. Paused (``~``) and alternative
    (``,``) entries count by their first name; more than ``MAX_LAYERS`` are cut."""
    out: dict[str, list[str]] = {}
    for section in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        sim, mid = _SIMULCAST.search(section), _MID.search(section)
        if sim is None or mid is None:
            continue
        rids = [alt.split(",")[0].lstrip("~") for alt in sim.group(1).split(";")]
        rids = [r for r in rids if re.fullmatch(r"[A-Za-z0-9_-]{1,16}", r)]
        if len(rids) > 1:
            out[mid.group(1)] = rids[:MAX_LAYERS]
    return out


def describe(sdp: str, layers: dict[str, list[str]]) -> str:
    """``sdp`` (an aiortc description) with the receive side of each simulcast m-line stated."""
    if not layers:
        return sdp
    sections = sdp.split("\r\nm=")
    for i, section in enumerate(sections[1:], 1):
        mid = _MID.search(section.replace("\r\n", "\n"))
        rids = layers.get(mid.group(1)) if mid else None
        if not rids or "a=simulcast:" in section:
            continue
        lines = section.rstrip("\r\n").split("\r\n")
        extra = [f"a=rid:{r} recv" for r in rids] + [f"a=simulcast:recv {';'.join(rids)}"]
        tail = "\r\n" if section.endswith("\r\n") else ""
        sections[i] = "\r\n".join(lines + extra) + tail
    return "\r\nm=".join(sections)


def route_by_mid(pc: Any) -> None:
    """Teach the connection's RTP router to place unsignalled SSRCs by their MID extension."""
    for t in pc.getTransceivers():
        router = getattr(t.receiver.transport, "_rtp_router", None)
        if router is None or getattr(router, "_parley_mid", False):
            continue
        original = router.route_rtp
        ssrc_table, mid_table = router.ssrc_table, router.mid_table

        def route_rtp(packet: Any, original: Any = original, ssrc_table: Any = ssrc_table,
                      mid_table: Any = mid_table) -> Any:
            receiver = ssrc_table.get(packet.ssrc)
            if receiver is not None:
                return receiver
            mid = packet.extensions.mid
            receiver = mid_table.get(mid) if mid is not None else None
            if receiver is not None:
                ssrc_table[packet.ssrc] = receiver
                return receiver
            return original(packet)

        router.route_rtp = route_rtp
        router._parley_mid = True

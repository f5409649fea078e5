"""What the call server and a meeting's transcoder send each other: plain RTP and small JSON
datagrams on one UDP socket each side (docs/call-server.md, "Transcoding for one receiver").

Why plain RTP over UDP (pod network, loopback in `parley up`) and not WebRTC as between the
broadcast tiers (broadcast/pull.py pulls over WHEP): the call server already holds the source's
RTP payloads and sends them on with one ``sendto`` per packet and source (not per subscriber),
and the transcoder's packets come back ready to forward, so a route costs no ICE/DTLS session,
no jitter buffer and no SDP; a transcoder that restarts needs no renegotiation (the call server
sends its next ``want`` and the source's keyframe); and both ends stay in one cluster, inside
the NetworkPolicy of the meeting's namespace, where the tiers' WHEP crosses regions and serves
browsers too. What WebRTC would add (NACK, congestion control) is of little use on a pod network
or loopback: a lost packet costs one frame, the transcoder asks for a keyframe (``key``) and
the subscriber's own NACKs are answered from the rung's history on the call server.

Media: RTP (RFC 3550 header, no extensions). Towards the transcoder the SSRC names the *source*
(one track layer), towards the call server the *output* (one encoder): VP8 (RFC 7741) or VP9
(RFC 9628, non-flexible mode) with a 15-bit PictureID, or H.264 (RFC 6184). Control: a
datagram whose first byte is ``{`` holds one JSON object with ``t``:

- call server -> transcoder: ``want`` (a source, its ``codec``: ``video/vp8`` when absent, or
  ``video/vp9`` or ``video/av1``, and the outputs it needs, repeated every
  allocation, 4 per second: the lease; a source not wanted for ``STALE_S`` is dropped),
  ``drop`` (a source nobody needs), ``key`` (an output's next frame must be a keyframe),
  ``hello`` (is anyone there; sent when no source is routed).
- transcoder -> call server: ``alive`` (the reply to every ``want``/``hello``, with the status of
  that call server's sources), ``key`` (a source keyframe is needed: decoding starts or broke).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PT_SOURCE = 96  # the payload type carried towards the transcoder (the call server ignores it)
PT_VP8, PT_H264, PT_VP9 = 96, 97, 98
# what the transcoder decodes (FFmpeg's vp8 and vp9, libdav1d), by the decoder's name
DECODERS = {"video/vp8": "vp8", "video/vp9": "vp9", "video/av1": "libdav1d"}
SOURCE_CODECS = tuple(DECODERS)
# what it encodes: a budget rung in its source's codec (a leg keeps the payload type it
# negotiated), H.264 for a subscriber that decodes neither source codec
OUTPUT_CODECS = ("video/vp8", "video/vp9", "video/h264")
STALE_S = 2.0  # the transcoder drops a source not wanted for this long
DEAD_AFTER_S = 1.0  # the call server gives up on a transcoder silent this long
MAX_DATAGRAM = 1500
# where the operator's transcoder of a meeting announces its address (room = namespace.name)
REGISTRY_KEY = "parley:media:transcoder:{room}"


@dataclass(frozen=True)
class OutputSpec:
    """One distinct output of a source: codec (``OUTPUT_CODECS``), height (never above the
    source's: the encoder scales down only) and bitrate."""

    id: int  # the output's SSRC
    codec: str
    height: int
    kbps: int

    def as_list(self) -> list[Any]:
        return [self.id, self.codec, self.height, self.kbps]

    @classmethod
    def from_list(cls, raw: Any) -> OutputSpec:
        oid, codec, height, kbps = raw
        if codec not in OUTPUT_CODECS:
            raise ValueError(f"unknown output codec {codec!r}")
        if not (0 < int(height) <= 4320 and 0 < int(kbps) <= 20_000):
            raise ValueError("output height or bitrate out of range")
        return cls(int(oid) & 0xFFFFFFFF, str(codec), int(height), int(kbps))


def source_codec(message: dict[str, Any]) -> str:
    """The codec of a ``want``'s source; ValueError for one the transcoder cannot decode."""
    codec = str(message.get("codec", "video/vp8")).lower()
    if codec not in SOURCE_CODECS:
        raise ValueError(f"cannot decode source codec {codec!r}")
    return codec


def control(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def is_control(data: bytes) -> bool:
    return data[:1] == b"{"


def parse_control(data: bytes) -> dict[str, Any]:
    """A control datagram's object; ValueError for anything else (a stray or damaged datagram
    is dropped, never fatal)."""
    message = json.loads(data)
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ValueError("not a control message")
    return message


def parse_rtp(data: bytes) -> tuple[int, int, int, int, bytes] | None:
    """(SSRC, sequence, timestamp, marker, payload) of a plain RTP datagram, or None."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    head = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:  # an extension: skip it (neither side sends one)
        if len(data) < head + 4:
            return None
        head += 4 + 4 * int.from_bytes(data[head + 2:head + 4], "big")
    if len(data) <= head:
        return None
    return (int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big"),
            int.from_bytes(data[4:8], "big"), data[1] >> 7, data[head:])

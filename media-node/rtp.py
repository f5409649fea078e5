"""RTP helpers for the forwarding hot path: header rewrite and keyframe detection.

The call server forwards RTP (RFC 3550) packets, not frames: it rewrites SSRC, payload type and
sequence number and keeps the payload bytes as they arrived, so no depacketizing, no jitter buffer
and no decoder sit between a publisher and its subscribers.
"""

from __future__ import annotations

import struct

from parley.recorder.depacketize import vp9_descriptor

from .av1 import av1_height, av1_keyframe

_HEADER = struct.Struct("!BBHII")
pack_header = _HEADER.pack
"""(0x80, marker << 7 | payload type, sequence, timestamp, SSRC) -> 12 header bytes.

Forwarded packets carry none of the publisher's header extensions (its ids need not match the
subscriber's, and every receiver demultiplexes by the SSRC signalled in SDP); a leg that
negotiated abs-send-time gets the node's own send time, for the receiver's REMB estimate."""
_pack_u32 = struct.Struct("!I").pack


def abs_send_time(now: float) -> bytes:
    """The 3 data bytes of an abs-send-time header extension for ``now`` (seconds on
    ``time.perf_counter``'s clock): 6.18 fixed point, 24 bits, wrapping every 64 s
    (webrtc.org/experiments/rtp-hdrext/abs-send-time); receivers use only differences."""
    return _pack_u32(int(now * 262144) & 0xFFFFFF)[1:]



def _vp8_descriptor(payload: bytes) -> int:
    """Length of the VP8 payload descriptor (RFC 7741 section 4.2) of a packet that starts a
    partition 0 (S=1, PID=0), else -1."""
    n = len(payload)
    if n < 2:
        return -1
    b0 = payload[0]
    if not (b0 & 0x10) or (b0 & 0x07):
        return -1
    i = 1
    if b0 & 0x80:  # X: extension octet
        x = payload[1]
        i = 2
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if i >= n:
                return -1
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K
            i += 1
    return i if i < n else -1


def vp8_keyframe(payload: bytes) -> bool:
    """True when ``payload`` starts a VP8 keyframe (RFC 7741 section 4.2 and 4.3).

    A keyframe starts in a packet whose descriptor has S=1 and PID=0 and whose VP8 payload header
    has the inverse keyframe bit P cleared."""
    i = _vp8_descriptor(payload)
    return i >= 0 and not (payload[i] & 0x01)


def vp8_height(payload: bytes) -> int:
    """The frame height of the VP8 keyframe ``payload`` starts (RFC 6386 section 9.1), or 0."""
    i = _vp8_descriptor(payload)
    if i < 0 or len(payload) < i + 10 or payload[i + 3:i + 6] != b"\x9d\x01\x2a":
        return 0
    return (payload[i + 8] | (payload[i + 9] << 8)) & 0x3FFF


def vp8_ids(payload: bytes) -> tuple[int, int]:
    """(15-bit PictureID, TL0PICIDX) of a VP8 payload descriptor (RFC 7741 section 4.2), -1 for
    a field that is absent (or a 7-bit PictureID, which is left as it is)."""
    n = len(payload)
    if n < 4 or not payload[0] & 0x80:
        return -1, -1
    x = payload[1]
    i = 2
    pid = -1
    if x & 0x80:
        if payload[2] & 0x80:
            pid = ((payload[2] & 0x7F) << 8) | payload[3]
            i = 4
        else:
            i = 3
    tl0 = payload[i] if x & 0x40 and i < n else -1
    return pid, tl0


def vp8_rewrite(payload: bytes, pid: int, tl0: int) -> bytes:
    """``payload`` with its 15-bit PictureID and (when ``tl0`` >= 0) TL0PICIDX replaced: a
    forwarder that switches simulcast layers keeps them continuous, or the receiver takes the new
    layer's frames for old ones and drops them (what mediasoup and LiveKit rewrite too)."""
    b = bytearray(payload)
    b[2] = 0x80 | (pid >> 8)
    b[3] = pid & 0xFF
    if tl0 >= 0 and b[1] & 0x40:
        b[4] = tl0
    return bytes(b)


def vp9_keyframe(payload: bytes) -> bool:
    """True when ``payload`` starts a VP9 keyframe (RFC 9628 section 4.2): B=1 (a frame starts),
    P=0 (no inter-picture reference) and, when layer indices are present, spatial layer 0."""
    if not payload or (payload[0] & 0x48) != 0x08:
        return False
    b0 = payload[0]
    if not b0 & 0x20:  # L
        return True
    i = (3 if payload[1] & 0x80 else 2) if b0 & 0x80 and len(payload) > 1 else 1
    return i < len(payload) and not payload[i] & 0x0E  # SID


def vp9_height(payload: bytes) -> int:
    """The top spatial layer's height from the scalability structure (RFC 9628 section 4.2.1:
    a sender puts it on keyframes), or 0 when the packet has none."""
    ss = vp9_descriptor(payload)[1]
    if ss < 0 or not payload[ss] & 0x10:  # no SS, or no sizes in it (Y=0)
        return 0
    top = ss + 1 + 4 * (payload[ss] >> 5)
    return (payload[top + 2] << 8) | payload[top + 3]


def vp9_ids(payload: bytes) -> tuple[int, int]:
    """(15-bit PictureID, TL0PICIDX) of a VP9 payload descriptor (RFC 9628 section 4.2), -1 for
    a field that is absent (or a 7-bit PictureID, which is left as it is). TL0PICIDX exists in
    non-flexible mode only (F=0, L=1)."""
    if len(payload) < 3 or not payload[0] & 0x80 or not payload[1] & 0x80:
        return -1, -1
    pid = ((payload[1] & 0x7F) << 8) | payload[2]
    tl0 = payload[4] if (payload[0] & 0x30) == 0x20 and len(payload) > 4 else -1
    return pid, tl0


def vp9_rewrite(payload: bytes, pid: int, tl0: int) -> bytes:
    """``payload`` with its 15-bit PictureID and (when ``tl0`` >= 0) TL0PICIDX replaced, for the
    same reason as ``vp8_rewrite``: RFC 9628 receivers order frames by PictureID."""
    b = bytearray(payload)
    b[1] = 0x80 | (pid >> 8)
    b[2] = pid & 0xFF
    if tl0 >= 0 and (b[0] & 0x30) == 0x20:
        b[4] = tl0
    return bytes(b)


def h264_keyframe(payload: bytes) -> bool:
    """True when ``payload`` carries an IDR slice or SPS (RFC 6184 sections 5.6-5.8)."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:  # STAP-A: 16-bit sizes then NAL units
        i = 1
        while i + 2 < len(payload):
            size = (payload[i] << 8) | payload[i + 1]
            if payload[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + size
        return False
    if nal == 28 and len(payload) > 1:  # FU-A: start bit and original type
        return bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return False


def always_keyframe(payload: bytes) -> bool:
    """Audio has no inter-frame dependency: any packet is a valid starting point."""
    return True


def no_height(payload: bytes) -> int:
    """A codec whose frame size the call server does not read (H.264: it sits in the SPS)."""
    return 0


KEYFRAME_DETECTORS = {"video/vp8": vp8_keyframe, "video/vp9": vp9_keyframe,
                      "video/av1": av1_keyframe, "video/h264": h264_keyframe}
HEIGHT_READERS = {"video/vp8": vp8_height, "video/vp9": vp9_height, "video/av1": av1_height}
# codecs whose PictureID / TL0PICIDX a leg continues across layer switches: (read, rewrite)
PICTURE_IDS = {"video/vp8": (vp8_ids, vp8_rewrite), "video/vp9": (vp9_ids, vp9_rewrite)}


def keyframe_detector(mime_type: str):  # type: ignore[no-untyped-def]
    return KEYFRAME_DETECTORS.get(mime_type.lower(), always_keyframe)


def height_reader(mime_type: str):  # type: ignore[no-untyped-def]
    """The function that reads a keyframe packet's frame height for ``mime_type`` (0: unknown)."""
    return HEIGHT_READERS.get(mime_type.lower(), no_height)


def seq_add(a: int, b: int) -> int:
    return (a + b) & 0xFFFF

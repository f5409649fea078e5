"""RTP payloads back into codec frames, without decoding (RFC 7741 for VP8, RFC 9628 for VP9,
RFC 7587 for Opus).

The tap sees the packets the call server forwards, and the meeting transcoder the ones routed to
it; both need whole frames. VP8 and VP9 frames span packets (the payload descriptor says where
one starts, the marker bit where it ends); an Opus
RTP payload is exactly one Opus packet. A frame with a sequence gap is dropped, and video then
waits for the next keyframe (asking for one), because later frames reference the broken one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Frame:
    rtp_ts: int  # unwrapped (64-bit) RTP timestamp, RFC 3550 section 5.1
    data: bytes
    keyframe: bool


def vp8_descriptor_size(payload: bytes) -> int:
    """Length of the VP8 payload descriptor (RFC 7741 section 4.2); -1 if malformed."""
    n = len(payload)
    if n < 1:
        return -1
    i = 1
    if payload[0] & 0x80:  # X
        if n < 2:
            return -1
        x = payload[1]
        i = 2
        if x & 0x80:  # I: PictureID, M bit selects 15 bits
            if i >= n:
                return -1
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            i += 1
    return i if i <= n else -1


def vp9_descriptor(payload: bytes) -> tuple[int, int]:
    """(length of the VP9 payload descriptor, offset of its scalability structure or -1), RFC
    9628 section 4.2: ``|I|P|L|F|B|E|V|Z|``, then PictureID (I; 15 bits when M), layer indices
    (L) and TL0PICIDX (L in non-flexible mode), reference indices (P in flexible mode, at most 3)
    and the scalability structure (V). (-1, -1) when the payload is shorter than its fields."""
    n = len(payload)
    if n < 1:
        return -1, -1
    b0 = payload[0]
    i = 1
    if b0 & 0x80:  # I: PictureID, M bit selects 15 bits
        if i >= n:
            return -1, -1
        i += 2 if payload[i] & 0x80 else 1
    flexible = b0 & 0x10
    if b0 & 0x20:  # L: TID/U/SID/D, and TL0PICIDX in non-flexible mode
        i += 1 if flexible else 2
    if flexible and b0 & 0x40:  # P_DIFF octets, N set while one more follows
        for _ in range(3):
            if i >= n:
                return -1, -1
            i += 1
            if not payload[i - 1] & 0x01:
                break
        else:
            return -1, -1
    ss = -1
    if b0 & 0x02:  # V: N_S|Y|G, then sizes per spatial layer and the picture group
        if i >= n:
            return -1, -1
        ss = i
        v = payload[i]
        i += 1
        if v & 0x10:
            i += 4 * ((v >> 5) + 1)
        if v & 0x08:
            if i >= n:
                return -1, -1
            groups = payload[i]
            i += 1
            for _ in range(groups):
                if i >= n:
                    return -1, -1
                i += 1 + ((payload[i] >> 2) & 0x03)
    return (i, ss) if i <= n else (-1, -1)


def vp8_size(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386 section 9.1)."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    w, h = struct.unpack_from("<HH", frame, 6)
    return w & 0x3FFF, h & 0x3FFF


class Depacketizer:
    """Feeds on (sequence, timestamp, marker, payload); calls ``on_frame`` per complete frame.
    AV1 has its own (parley.media.av1.Av1Depacketizer), on this one's numbering."""

    CODECS: tuple[str, ...] = ("video/vp8", "video/vp9", "audio/opus")

    def __init__(self, codec: str, on_frame: Callable[[Frame], None],
                 want_keyframe: Callable[[], None] = lambda: None) -> None:
        self.codec = codec.lower()
        self.video = self.codec.startswith("video/")
        if self.codec not in self.CODECS:
            raise ValueError(f"cannot depacketize {codec}: {', '.join(self.CODECS)} only")
        self.vp9 = self.codec == "video/vp9"
        self.on_frame = on_frame
        self.want_keyframe = want_keyframe
        self.last_seq: int | None = None
        self._ts_high = 0
        self._last_ts32: int | None = None
        self._parts: list[bytes] = []
        self._frame_ts: int | None = None
        self._broken = False
        self._key = False  # VP9: the frame being assembled is a keyframe (its descriptor's P)
        self.need_keyframe = self.video
        self.frames = 0
        self.dropped = 0

    def _unwrap(self, ts: int) -> int:
        if self._last_ts32 is not None:
            if ts < self._last_ts32 and self._last_ts32 - ts > 0x80000000:
                self._ts_high += 1 << 32
            elif ts > self._last_ts32 and ts - self._last_ts32 > 0x80000000:
                return self._ts_high - (1 << 32) + ts  # a late packet from before a wrap
        self._last_ts32 = ts
        return self._ts_high + ts

    def push(self, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        gap = self.last_seq is not None and seq != (self.last_seq + 1) & 0xFFFF
        if self.last_seq is not None and ((seq - self.last_seq) & 0xFFFF) > 0x8000:
            return  # late or duplicate packet: the frame it belonged to is already gone
        self.last_seq = seq
        uts = self._unwrap(ts)
        if not self.video:
            if payload:
                self.frames += 1
                self.on_frame(Frame(uts, bytes(payload), True))
            return
        if gap:
            self._broken = True
        if self.vp9:  # B: the packet starts a frame; P clear on it: a keyframe
            d = vp9_descriptor(payload)[0]
            start = d >= 0 and bool(payload[0] & 0x08)
        else:
            d = vp8_descriptor_size(payload)
            start = d >= 0 and bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0
        if d < 0:  # malformed: the frame it belongs to is broken (and ends here on a marker)
            self._broken = True
            if marker:
                self._parts = []
                self._drop()
            return
        if start:
            self._key = not (payload[0] & 0x40) if self.vp9 else False
            self._parts = []
            self._frame_ts = uts
            self._broken = False
        elif self._frame_ts != uts:
            self._broken = True
        self._parts.append(payload[d:])
        if not marker:
            return
        data = b"".join(self._parts)
        self._parts = []
        if self._broken or self._frame_ts is None or not data:
            self._drop()
            return
        key = self._key if self.vp9 else not (data[0] & 0x01)  # RFC 6386 9.1: inverse flag
        if self.need_keyframe and not key:
            self.dropped += 1
            return
        self.need_keyframe = False
        self.frames += 1
        self.on_frame(Frame(self._frame_ts, data, key))
        self._frame_ts = None

    def _drop(self) -> None:
        self.dropped += 1
        self._broken = False
        self._frame_ts = None
        if not self.need_keyframe:
            self.need_keyframe = True
            self.want_keyframe()

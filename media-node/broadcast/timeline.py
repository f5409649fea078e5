"""The programme's timeline, carried inside each video frame to the transcoders.

Keyframes of separate transcoder processes (the operator's one Deployment per rendition) must fall
on the same source frames, so each process needs the same timestamp for the same frame. RTP cannot
carry it: aiortc's sender adds a random origin per session (RFC 3550), so two pulls of one
programme see unrelated timestamps, and each puller's feed re-bases them again. So the ingest
writes the programme timestamp (90 kHz, the ingest's programme feed timeline) into every video
frame it serves over WHEP as an H.264 SEI ``user_data_unregistered`` message with Parley's UUID,
placed before the first slice. Decoders and browsers skip unregistered SEI. The payload is the
timestamp in decimal digits and the UUID has no zero byte, so the NAL never needs emulation
prevention and is found with one ``bytes.find``.
"""

from __future__ import annotations

from .frames import Frame

UUID = bytes.fromhex("9a7e1c3b5d2f4e6a8b1c9d7e5f3a2b4c")  # no 0x00 byte: no emulation prevention
_START = b"\x00\x00\x01"
_WRAP = 1 << 32


def sei(ts: int) -> bytes:
    """An Annex-B SEI NAL (type 6) with one user_data_unregistered (payload type 5) message."""
    digits = str(ts % _WRAP).encode()
    return b"\x00\x00\x00\x01\x06\x05" + bytes([len(UUID) + len(digits)]) + UUID + digits + b"\x80"


def stamp(frame: Frame) -> bytes:
    """``frame``'s access unit with its timestamp as an SEI before the first slice (NAL 1-5)."""
    data = frame.data
    i = data.find(_START)
    while 0 <= i < len(data) - 3:
        if 1 <= data[i + 3] & 0x1F <= 5:
            at = i - 1 if i > 0 and data[i - 1] == 0 else i  # keep a 4-byte start code whole
            return data[:at] + sei(frame.ts) + data[at:]
        i = data.find(_START, i + 3)
    return data


def read(data: bytes) -> int | None:
    """The programme timestamp an ingest stamped into this access unit, or None."""
    i = data.find(UUID)
    if i < 3 or data[i - 3] & 0x1F != 6 or data[i - 2] != 5:
        return None
    end = i + data[i - 1]
    digits = data[i + len(UUID):end]
    return int(digits) if digits.isdigit() and data[end:end + 1] == b"\x80" else None

"""Fragmented MP4 (CMAF) boxes for LL-HLS, written by hand: an init segment and one fragment
(moof + mdat) per part, for one H.264 video track and one AAC audio track muxed together.

Why by hand: the packager must cut a fragment exactly where a part ends (a few hundred ms, on a
frame boundary it chooses) and hand its bytes out at once; the boxes needed are few and fixed
(ISO/IEC 14496-12), so writing them is simpler and more predictable than steering a muxer.

Layout (ISO BMFF): init = ftyp + moov(mvhd, trak video, trak audio, mvex(trex, trex));
fragment = moof(mfhd, traf video, traf audio) + mdat. Each traf has tfhd (default-base-is-moof),
tfdt (version 1: 64-bit decode time) and trun (data offset, per-sample duration, size, flags).
Video samples are AVCC (4-byte NAL lengths); SPS and PPS live in the init's avcC, not in samples.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VIDEO_TRACK, AUDIO_TRACK = 1, 2
VIDEO_TIMESCALE, AUDIO_TIMESCALE = 90000, 48000
AAC_SAMPLES = 1024  # one AAC-LC frame
_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
SYNC = 0x02000000  # sample_depends_on = 2 (an I / key sample)
NON_SYNC = 0x01010000  # depends on others, sample_is_non_sync_sample


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", version << 24 | flags), *payload)


def nal_units(annexb: bytes) -> list[bytes]:
    """Split an Annex-B access unit at its start codes (3 or 4 bytes)."""
    out, i, n = [], annexb.find(b"\x00\x00\x01"), len(annexb)
    while 0 <= i < n:
        start = i + 3
        j = annexb.find(b"\x00\x00\x01", start)
        end = n if j < 0 else (j - 1 if annexb[j - 1] == 0 else j)
        if end > start:
            out.append(annexb[start:end])
        i = j
    return out


@dataclass
class AccessUnit:
    """One video frame in AVCC form, with the parameter sets it carried (on keyframes)."""

    sample: bytes
    sps: bytes | None
    pps: bytes | None


def to_avcc(annexb: bytes) -> AccessUnit:
    """Annex B -> 4-byte length-prefixed NALs; SPS (7), PPS (8) taken out, AUD (9) dropped."""
    sps = pps = None
    parts = []
    for nal in nal_units(annexb):
        t = nal[0] & 0x1F
        if t == 7:
            sps = nal
        elif t == 8:
            pps = nal
        elif t != 9:
            parts.append(struct.pack(">I", len(nal)) + nal)
    return AccessUnit(b"".join(parts), sps, pps)


def avc_codec(sps: bytes) -> str:
    """RFC 6381 codec string from an SPS: avc1.PPCCLL (profile, constraints, level)."""
    return f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"


def _avc1(width: int, height: int, sps: bytes, pps: bytes) -> bytes:
    avcc = box(b"avcC", bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),
               struct.pack(">H", len(sps)), sps, b"\x01", struct.pack(">H", len(pps)), pps)
    return box(b"avc1", b"\x00" * 6, struct.pack(">H", 1), b"\x00" * 16,
               struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1),
               b"\x00" * 32, struct.pack(">Hh", 0x18, -1), avcc)


def _descriptor(tag: int, body: bytes) -> bytes:
    return bytes([tag, len(body)]) + body  # every descriptor here is under 128 bytes


def _mp4a(asc: bytes, channels: int, rate: int, bitrate: int) -> bytes:
    dcd = _descriptor(4, bytes([0x40, 0x15]) + b"\x00\x00\x00" + struct.pack(">II", bitrate,
                                                                         bitrate)
                      + _descriptor(5, asc))
    es = _descriptor(3, struct.pack(">HB", AUDIO_TRACK, 0) + dcd + _descriptor(6, b"\x02"))
    return box(b"mp4a", b"\x00" * 6, struct.pack(">H", 1), b"\x00" * 8,
               struct.pack(">HHHHI", channels, 16, 0, 0, rate << 16), full(b"esds", 0, 0, es))


def _trak(track: int, timescale: int, handler: bytes, media_header: bytes, entry: bytes,
          width: int = 0, height: int = 0) -> bytes:
    volume = 0x0100 if handler == b"soun" else 0
    tkhd = full(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, track, 0, 0), b"\x00" * 8,
                struct.pack(">hhhH", 0, 0, volume, 0), _MATRIX,
                struct.pack(">II", width << 16, height << 16))
    mdhd = full(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    hdlr = full(b"hdlr", 0, 0, b"\x00" * 4, handler, b"\x00" * 12, b"Parley\x00")
    dinf = box(b"dinf", full(b"dref", 0, 0, struct.pack(">I", 1), full(b"url ", 0, 1)))
    stbl = box(b"stbl", full(b"stsd", 0, 0, struct.pack(">I", 1), entry),
               full(b"stts", 0, 0, b"\x00" * 4), full(b"stsc", 0, 0, b"\x00" * 4),
               full(b"stsz", 0, 0, b"\x00" * 8), full(b"stco", 0, 0, b"\x00" * 4))
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def init_segment(width: int, height: int, sps: bytes, pps: bytes, asc: bytes,
                 channels: int = 2, rate: int = AUDIO_TIMESCALE,
                 audio_bitrate: int = 96000) -> bytes:
    """init.mp4: ftyp + moov describing the video (avcC from ``sps``/``pps``) and audio
    (AudioSpecificConfig ``asc``) tracks; no samples (they are all in fragments)."""
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcisomavc1mp41")
    mvhd = full(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x100),
                b"\x00" * 10, _MATRIX, b"\x00" * 24, struct.pack(">I", 3))
    video = _trak(VIDEO_TRACK, VIDEO_TIMESCALE, b"vide", full(b"vmhd", 0, 1, b"\x00" * 8),
                  _avc1(width, height, sps, pps), width, height)
    audio = _trak(AUDIO_TRACK, rate, b"soun", full(b"smhd", 0, 0, b"\x00" * 4),
                  _mp4a(asc, channels, rate, audio_bitrate))
    mvex = box(b"mvex", *(full(b"trex", 0, 0, struct.pack(">IIIII", t, 1, 0, 0, 0))
                          for t in (VIDEO_TRACK, AUDIO_TRACK)))
    return ftyp + box(b"moov", mvhd, video, audio, mvex)


@dataclass
class Sample:
    """One sample of a fragment: its bytes, duration (track timescale) and whether it is sync."""

    data: bytes
    duration: int
    sync: bool = True


def _traf(track: int, base_time: int, samples: list[Sample], data_offset: int) -> bytes:
    tfhd = full(b"tfhd", 0, 0x020000, struct.pack(">I", track))  # default-base-is-moof
    tfdt = full(b"tfdt", 1, 0, struct.pack(">Q", base_time))
    rows = b"".join(struct.pack(">III", s.duration, len(s.data), SYNC if s.sync else NON_SYNC)
                    for s in samples)
    trun = full(b"trun", 0, 0x000701, struct.pack(">Ii", len(samples), data_offset), rows)
    return box(b"traf", tfhd, tfdt, trun)


def fragment(sequence: int, tracks: list[tuple[int, int, list[Sample]]]) -> bytes:
    """moof + mdat for ``tracks`` [(track id, base decode time, samples)]; a track without
    samples is left out. The data offsets (from the moof's first byte) are computed after the
    moof's size is known, which does not depend on them."""
    tracks = [t for t in tracks if t[2]]

    def moof(offsets: list[int]) -> bytes:
        return box(b"moof", full(b"mfhd", 0, 0, struct.pack(">I", sequence)),
                   *(_traf(tid, base, samples, off)
                     for (tid, base, samples), off in zip(tracks, offsets, strict=True)))

    size = len(moof([0] * len(tracks)))
    offsets, at = [], size + 8
    for _, _, samples in tracks:
        offsets.append(at)
        at += sum(len(s.data) for s in samples)
    payload = b"".join(s.data for _, _, samples in tracks for s in samples)
    return moof(offsets) + box(b"mdat", payload)


def describe_init(init: bytes) -> tuple[str, int, int]:
    """(RFC 6381 video codec, width, height) of an init segment written by
    :func:`init_segment`: what a multivariant playlist's CODECS and RESOLUTION say about it."""
    at = init.find(b"avc1", init.find(b"stsd"))  # the sample entry, not the ftyp brand
    avcc = init.find(b"avcC")
    if init.find(b"stsd") < 0 or at < 0 or avcc < 0:
        raise ValueError("not an H.264 init segment")
    width, height = struct.unpack_from(">HH", init, at + 4 + 24)
    profile, compat, level = init[avcc + 5:avcc + 8]
    return f"avc1.{profile:02x}{compat:02x}{level:02x}", width, height

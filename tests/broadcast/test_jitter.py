"""The broadcast receivers' jitter buffers: video hands a frame on at its marker packet (aiortc's
waits for the next frame's first packet), a hole keeps aiortc's rule, and no frame is handed on
twice or out of order, across a sequence-number wrap; audio hands each packet on as it comes."""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from parley.media.broadcast.jitter import VIDEO_CAPACITY, AudioOnArrival, MarkerJitterBuffer

# (sequence number, timestamp, marker): frame 1 in order across the wrap, frame 2 one packet,
# frame 3 with two packets swapped, frames 4 and 5 in order
PACKETS = [(65530, 1, 0), (65531, 1, 0), (65532, 1, 1), (65533, 2, 1), (65535, 3, 0),
           (65534, 3, 0), (0, 3, 1), (1, 4, 0), (2, 4, 1), (3, 5, 1)]


def _feed(buffer: JitterBuffer, packets: list[tuple[int, int, int]]) -> list[tuple[int, int, str]]:
    """(index of the packet that completed it, timestamp, payload) per frame handed on."""
    out = []
    for i, (seq, ts, marker) in enumerate(packets):
        p = RtpPacket(sequence_number=seq, timestamp=ts, marker=bool(marker))
        p._data = bytes([seq % 256])  # type: ignore[attr-defined]
        _, frame = buffer.add(p)
        if frame is not None:
            out.append((i, frame.timestamp, frame.data.hex()))
    return out


def test_a_frame_is_handed_on_at_its_marker_packet() -> None:
    frames = _feed(MarkerJitterBuffer(VIDEO_CAPACITY, is_video=True), PACKETS)
    assert frames == [(2, 1, "fafbfc"), (3, 2, "fd"), (6, 3, "feff00"), (8, 4, "0102"),
                      (9, 5, "03")]
    # aiortc's own buffer: the same frames, each one packet of the next frame later
    assert _feed(JitterBuffer(VIDEO_CAPACITY, is_video=True), PACKETS) == [
        (3, 1, "fafbfc"), (5, 2, "fd"), (7, 3, "feff00"), (9, 4, "0102")]


def test_a_hole_waits_for_the_next_frame_as_before() -> None:
    # frame 1's middle packet comes late (a retransmission) after its marker
    packets = [(10, 1, 0), (12, 1, 1), (11, 1, 0), (13, 2, 0), (14, 2, 1)]
    frames = _feed(MarkerJitterBuffer(VIDEO_CAPACITY, is_video=True), packets)
    assert frames == [(3, 1, "0a0b0c"), (4, 2, "0d0e")]


def test_an_audio_packet_is_handed_on_as_it_comes() -> None:
    """Opus: each packet at once, across the wrap; a duplicate or a packet later than a newer
    one is dropped; a far jump back is a restarted sender, taken. aiortc's audio buffer hands
    the first packet on only at the fifth."""
    # in order across the wrap, one lost (1), one late (0 after 2), a duplicate (3), a restart
    packets = [(65534, 0, 0), (65535, 960, 0), (0, 1920, 0), (2, 3840, 0), (1, 2880, 0),
               (3, 4800, 0), (3, 4800, 0), (4, 5760, 0), (30000, 0, 0), (30001, 960, 0)]
    frames = _feed(AudioOnArrival(), packets)
    assert [(i, ts) for i, ts, _ in frames] == [
        (0, 0), (1, 960), (2, 1920), (3, 3840), (5, 4800), (7, 5760), (8, 0), (9, 960)]
    assert [(i, ts) for i, ts, _ in _feed(JitterBuffer(16, prefetch=4), packets[:6])] == [
        (4, 0), (5, 960)]

"""AV1 over RTP (AOM's "RTP Payload Format for AV1", aomediacodec.github.io/av1-rtp-spec): what
the call server reads of a packet (a keyframe, the frame height) and how the meeting transcoder
rebuilds the temporal units a decoder takes.

An AV1 RTP payload is a one-byte aggregation header ``|Z|Y|W W|N|-|-|-|`` and OBU elements
(section 4.4): Z, the first element continues an OBU cut at the end of the previous packet; Y, the
last one goes on in the next; W, how many elements (1-3, the last without a length) or 0 (each
with a LEB128 length); N, the packet starts a coded video sequence (a keyframe, its sequence
header first). OBUs travel without ``obu_size`` and without temporal delimiters; the packets of
one temporal unit share a timestamp and the last has the marker bit (section 4.3). A decoder
(libdav1d) takes the low-overhead bitstream format (AV1 spec section 5.2): a temporal delimiter,
then each OBU with ``obu_has_size_field`` set and its size.

Everything here reads client bytes: a malformed packet reads as "no keyframe, height 0" or breaks
the temporal unit it belongs to (dropped, the next keyframe asked for), never an exception.
"""

from __future__ import annotations

from collections.abc import Callable

from parley.recorder.depacketize import Depacketizer, Frame

OBU_SEQUENCE_HEADER, OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST, OBU_PADDING = 1, 2, 8, 15
TEMPORAL_DELIMITER = b"\x12\x00"  # type 2, obu_has_size_field, obu_size 0


def read_leb128(data: bytes, i: int) -> tuple[int, int]:
    """(value, next offset) of the LEB128 number at ``i`` (AV1 spec 4.10.5: at most 8 bytes),
    (-1, -1) when it is cut short or longer."""
    value = 0
    for k in range(8):
        if i + k >= len(data):
            return -1, -1
        b = data[i + k]
        value |= (b & 0x7F) << (7 * k)
        if not b & 0x80:
            return value, i + k + 1
    return -1, -1


def leb128(n: int) -> bytes:
    """``n`` as LEB128 (AV1 spec 4.10.5)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def obu_elements(payload: bytes) -> list[bytes] | None:
    """The OBU elements of an RTP payload (section 4.4), None when the lengths or the W count do
    not fit the payload."""
    if not payload:
        return None
    w = (payload[0] >> 4) & 0x03
    out: list[bytes] = []
    i, n = 1, len(payload)
    while i < n:
        if w == 0 or len(out) < w - 1:
            size, i = read_leb128(payload, i)
            if size < 0 or i + size > n:
                return None
        else:
            size = n - i
        out.append(payload[i:i + size])
        i += size
    if w and len(out) != w:
        return None
    return out


def av1_keyframe(payload: bytes) -> bool:
    """True when ``payload`` starts a coded video sequence, where a receiver can start decoding:
    the aggregation header's N bit set (section 4.4: on the first packet of a keyframe that
    opens a sequence) and Z clear (the packet starts an OBU)."""
    return bool(payload) and (payload[0] & 0x88) == 0x08


def av1_height(payload: bytes) -> int:
    """The maximum frame height in the sequence header that opens the keyframe ``payload``
    starts (its first OBU element), or 0 when there is none or it cannot be read."""
    elements = obu_elements(payload) if av1_keyframe(payload) else None
    return sequence_header_height(elements[0]) if elements else 0


def sequence_header_height(obu: bytes) -> int:
    """``max_frame_height_minus_1 + 1`` of a sequence header OBU (AV1 spec 5.5.1), with or
    without ``obu_size``; 0 for any other OBU or one cut short. Timing info, the decoder model
    and each operating point are walked bit by bit, bounds-checked (at most 64 bytes read)."""
    if not obu or (obu[0] >> 3) & 0x0F != OBU_SEQUENCE_HEADER or obu[0] & 0x80:
        return 0
    i = 2 if obu[0] & 0x04 else 1  # the extension byte
    if obu[0] & 0x02:
        _, i = read_leb128(obu, i)
        if i < 0:
            return 0
    head = obu[i:i + 64]
    bits, total, pos = int.from_bytes(head, "big"), 8 * len(head), 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > total:
            raise ValueError
        pos += n
        return (bits >> (total - pos)) & ((1 << n) - 1)

    try:
        read(4)  # seq_profile, still_picture
        if read(1):  # reduced_still_picture_header
            read(5)  # seq_level_idx[0]
        else:
            decoder_model = False
            delay_bits = 0
            if read(1):  # timing_info_present_flag
                read(64)  # num_units_in_display_tick, time_scale
                if read(1):  # equal_picture_interval: num_ticks_per_picture_minus_1, uvlc()
                    zeros = 0
                    while not read(1):
                        zeros += 1
                        if zeros >= 32:
                            return 0
                    read(zeros)
                decoder_model = bool(read(1))
                if decoder_model:
                    delay_bits = read(5) + 1  # buffer_delay_length_minus_1
                    read(42)  # num_units_in_decoding_tick, two more lengths
            display_delay = read(1)  # initial_display_delay_present_flag
            for _ in range(read(5) + 1):  # operating points
                read(12)  # operating_point_idc
                if read(5) > 7:  # seq_level_idx, then seq_tier
                    read(1)
                if decoder_model and read(1):  # decoder_model_present_for_this_op
                    read(2 * delay_bits + 1)
                if display_delay and read(1):
                    read(4)
        width_bits = read(4) + 1
        height_bits = read(4) + 1
        read(width_bits)
        return read(height_bits) + 1
    except ValueError:
        return 0


def low_overhead(obus: list[bytes]) -> bytes | None:
    """One temporal unit in the low-overhead bitstream format (AV1 spec 5.2, what libdav1d
    reads) from the OBUs RTP carried: a temporal delimiter first, each OBU with its size; the
    ones a receiver ignores (section 5: temporal delimiters, tile lists, padding) left out.
    None for an OBU whose forbidden bit is set or that is shorter than its header."""
    out = [TEMPORAL_DELIMITER]
    for obu in obus:
        h = obu[0] if obu else 0x80
        head = 2 if h & 0x04 else 1
        if h & 0x80 or len(obu) < head:
            return None
        if (h >> 3) & 0x0F in (OBU_TEMPORAL_DELIMITER, OBU_TILE_LIST, OBU_PADDING):
            continue
        if h & 0x02:  # it has its obu_size already
            out.append(obu)
        else:
            out += (bytes([h | 0x02]), obu[1:head], leb128(len(obu) - head), obu[head:])
    return b"".join(out) if len(out) > 1 else None


def rtp_obus(unit: bytes) -> list[bytes]:
    """The OBUs of a low-overhead temporal unit as RTP carries them (section 5): without
    ``obu_size``, temporal delimiters left out; an OBU cut short ends the list."""
    out, i = [], 0
    while i < len(unit):
        head = unit[i]
        ext = 1 if head & 0x04 else 0
        if head & 0x02:
            size, j = read_leb128(unit, i + 1 + ext)
            if size < 0:
                break
        else:  # no size: the OBU runs to the end of the unit
            size, j = len(unit) - i - 1 - ext, i + 1 + ext
        if (head >> 3) & 0x0F != OBU_TEMPORAL_DELIMITER:
            out.append(bytes([head & ~0x02]) + unit[i + 1:i + 1 + ext] + unit[j:j + size])
        i = j + size
    return out


def packetize(unit: bytes, key: bool, mtu: int = 1200) -> list[bytes]:
    """RTP payloads of one temporal unit the way libwebrtc's AV1 packetizer writes them (what
    Chromium sends; the benchmark's and tests' camera): OBUs packed into payloads of at most
    ``mtu`` bytes, an OBU cut where a payload is full (Y on it, Z on the next), W = the element
    count when at most 3 (the last element without a length) else 0 (each with one), N on a
    keyframe's first payload."""
    packets: list[list[bytes]] = [[]]
    flags = [0]
    room = mtu - 1
    for obu in rtp_obus(unit):
        rest = obu
        while rest:
            take = rest[:max(1, room - 2)]
            rest = rest[len(take):]
            packets[-1].append(take)
            room -= len(take) + len(leb128(len(take)))
            if rest or room < 3:
                if rest:
                    flags[-1] |= 0x40  # Y
                packets.append([])
                flags.append(0x80 if rest else 0)  # Z
                room = mtu - 1
    if not packets[-1]:
        packets.pop()
        flags.pop()
    out = []
    for k, (elements, flag) in enumerate(zip(packets, flags, strict=True)):
        w = len(elements) if len(elements) <= 3 else 0
        body = b"".join((leb128(len(e)) if w == 0 or i < w - 1 else b"") + e
                        for i, e in enumerate(elements))
        out.append(bytes([flag | (w << 4) | (0x08 if key and k == 0 else 0)]) + body)
    return out


class Av1Depacketizer(Depacketizer):
    """RTP payloads back into temporal units (low-overhead format), one ``Frame`` per RTP
    timestamp ended by the marker bit: OBU elements joined across packets (Z / Y), each OBU
    given its ``obu_size``. A gap, a malformed payload or a missing start breaks the unit: it
    is dropped and decoding waits for the next keyframe (N), asking for one."""

    CODECS = ("video/av1",)

    def __init__(self, codec: str, on_frame: Callable[[Frame], None],
                 want_keyframe: Callable[[], None] = lambda: None) -> None:
        super().__init__(codec, on_frame, want_keyframe)
        self._obus: list[bytes] = []
        self._part: bytes | None = None  # an OBU cut at the end of the last packet (Y)

    def push(self, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        if self.last_seq is not None and ((seq - self.last_seq) & 0xFFFF) > 0x8000:
            return  # late or duplicate packet: the unit it belonged to is already gone
        gap = self.last_seq is not None and seq != (self.last_seq + 1) & 0xFFFF
        self.last_seq = seq
        if not payload and not marker:  # padding (a sender probing without RTX): no OBU lost
            self._broken = self._broken or gap
            return
        uts = self._unwrap(ts)
        elements = obu_elements(payload)
        if self._frame_ts != uts:  # a new temporal unit (the last one lost its marker packet)
            if self._frame_ts is not None:
                self._drop()
            self._frame_ts, self._obus, self._part = uts, [], None
            # a gap before it may have taken its first packets
            self._broken = gap or elements is None or bool(payload[0] & 0x80)
            self._key = av1_keyframe(payload)
        elif gap or elements is None:
            self._broken = True
        if not self._broken and elements:
            z, last = payload[0] & 0x80, len(elements) - 1
            for k, element in enumerate(elements):
                if k == 0 and (z or self._part is not None):
                    if not z or self._part is None:  # a cut OBU never finished, or never begun
                        self._broken = True
                        break
                    element, self._part = self._part + element, None
                if k == last and payload[0] & 0x40:
                    self._part = element
                elif element:
                    self._obus.append(element)
        if not marker:
            return
        data = None if self._broken or self._part is not None else low_overhead(self._obus)
        self._obus, self._part = [], None
        if data is None:
            self._drop()
            return
        self._frame_ts = None
        if self.need_keyframe and not self._key:
            self.dropped += 1
            return
        self.need_keyframe = False
        self.frames += 1
        self.on_frame(Frame(uts, data, self._key))

"""The video codecs the call server negotiates beyond aiortc's own (VP8, H.264): VP9, AV1.

aiortc (1.16) offers and answers only the codecs in its table, ``aiortc.codecs.CODECS``, so a
browser whose camera sends VP9 alone found no common codec and its join failed. The call server
never decodes nor encodes a forwarded track (publisher.py intercepts RTP before aiortc's jitter
buffer and decoder; subscriber legs write RTP themselves), so VP9 needs only a table entry: a
payload type, its RTX (RFC 4588) and the feedback the legs use (NACK, PLI, REMB). Its RTP is read
where the node must (rtp.py: keyframes, the frame height, PictureID continuity, RFC 9628), and
the meeting transcoder decodes it with FFmpeg's vp9 decoder for subscribers that cannot.

Appended after aiortc's own codecs, so an aiortc peer in the same process (a test client) still
offers VP8 first; profile 0 only (8-bit 4:2:0, what Chromium encodes a camera in).

AV1 (AOM's "RTP Payload Format for AV1") the same way (profile 0, Main): av1.py finds its
keyframes (the aggregation header's N bit) and reads the frame height from the sequence header;
it has no PictureID to continue (a leg switches layers on a keyframe, which opens a new coded
video sequence), and the Dependency Descriptor extension a browser may send is not negotiated
(a one-layer L1T1 stream per simulcast layer needs none). The meeting transcoder decodes it with
libdav1d for subscribers that cannot.

An answer keeps the offer's payload type for a codec only when aiortc deems it dynamic, 96-127;
Chromium numbers codecs beyond those 32 in 35-63 too (AV1 is 45 in Chromium 156, some H.264
profiles as well), which RFC 5761 section 4 leaves free beside RTCP. aiortc answered such a
codec with its own number (105), the browser sent that until the call server's next offer, which
the client maps back to the browser's own numbers: the browser then sent 45, which the
publisher's layers do not take (and the RTX whose ``apt`` named 45 was never accepted). So
35-63 count as dynamic here too.
"""

from __future__ import annotations

from aiortc import rtp
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

VP9_PT = 103  # after aiortc's 97-102 (VP8, two H.264 profiles, each with its RTX)


def _register(mime: str, parameters: dict[str, str | int]) -> None:
    video = CODECS["video"]
    if any(c.mimeType.lower() == mime.lower() for c in video):
        return
    used = {c.payloadType for c in video}
    pt = next(p for p in range(VP9_PT, 128, 2) if p not in used and p + 1 not in used)
    video += [
        RTCRtpCodecParameters(
            mimeType=mime, clockRate=90000, payloadType=pt,
            rtcpFeedback=[RTCRtcpFeedback(type="nack"),
                          RTCRtcpFeedback(type="nack", parameter="pli"),
                          RTCRtcpFeedback(type="goog-remb")],
            parameters=parameters),
        RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=pt + 1,
                              parameters={"apt": pt}),
    ]


_register("video/VP9", {"profile-id": "0"})
_register("video/AV1", {"profile": "0"})
rtp.DYNAMIC_PAYLOAD_TYPES = frozenset(range(35, 64)) | frozenset(range(96, 128))  # type: ignore[assignment]

"""A feed: one stream viewers (or a downstream tier) play, fanned out as encoded frames.

The programme is a feed, and so is each rendition a transcoder makes and each stream an edge
relays. Frames come from changing origins (a camera cut, an upstream reconnect); the feed keeps one
continuous timeline per kind, so the viewer's RTP timestamps never jump: when the origin changes,
the new origin's clock is offset to continue from the last frame sent, advanced by the wall-clock
time in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..keyframes import KeyframeRequests
from .frames import CLOCK, Frame, FrameTrack

_MASK = 0xFFFFFFFF


class Feed:
    """Fan-out of one video and one audio stream of encoded frames to its viewers' tracks."""

    def __init__(self, name: str, request_keyframe: Callable[[], None]) -> None:
        self.name = name
        self.tracks: dict[str, list[FrameTrack]] = {"video": [], "audio": []}
        self.keyframes = KeyframeRequests(request_keyframe, min_interval=0.3)
        self._origin: dict[str, object] = {}
        self._offset: dict[str, int] = {"video": 0, "audio": 0}
        self._last: dict[str, tuple[int, float]] = {}
        self.frames = {"video": 0, "audio": 0}
        self.keyframes_seen = 0
        self.last_frame_at = 0.0

    def push(self, frame: Frame, origin: object) -> None:
        """Send ``frame`` (from ``origin``) to every viewer on the feed's own timeline."""
        kind = frame.kind
        now = time.monotonic()
        if self._origin.get(kind) is not origin:
            self._origin[kind] = origin
            last = self._last.get(kind)
            if last is None:
                self._offset[kind] = -frame.ts
            else:
                out, at = last
                self._offset[kind] = out + max(1, int((now - at) * CLOCK[kind])) - frame.ts
        out = (frame.ts + self._offset[kind]) & _MASK
        self._last[kind] = (out, now)
        sent = Frame(kind, frame.data, out, frame.key)
        self.frames[kind] += 1
        self.last_frame_at = now
        if frame.key and kind == "video":
            self.keyframes_seen += 1
        for track in self.tracks[kind]:
            track.push(sent)

    def track(self, kind: str) -> FrameTrack:
        """A new viewer's track; a video track waits for the next keyframe, which is asked for."""
        track = FrameTrack(kind, self.request_keyframe)
        self.tracks[kind] = [*self.tracks[kind], track]
        if kind == "video":
            self.request_keyframe()
        return track

    def remove(self, track: FrameTrack) -> None:
        self.tracks[track.kind] = [t for t in self.tracks[track.kind] if t is not track]
        track.stop()

    def request_keyframe(self) -> None:
        self.keyframes.request()

    def viewers(self) -> int:
        return max(len(self.tracks["video"]), len(self.tracks["audio"]))

    def close(self) -> None:
        self.keyframes.close()
        for tracks in self.tracks.values():
            for t in tracks:
                t.stop()

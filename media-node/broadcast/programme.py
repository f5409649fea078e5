"""The input manager: which connected source's video and audio form the programme.

``program.video`` names a source; until it is connected (or when none is named) the first
connected source is on air, so a single publisher just works. A cut waits for the new source's
next keyframe (asked for with a PLI at once) and keeps sending the old camera until then, so the
viewers' video never stops. Audio: the sources ``program.audio`` names that are connected are
mixed (mixer.py: decoded, summed, encoded once, in a thread of its own); when only one of them is
connected it is passed through undecoded; with none named, the video source's audio is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .feed import Feed
from .frames import Frame
from .mixer import AudioMixer


class Source:
    """One connected publisher; ``request_keyframe`` reaches the encoder (PLI)."""

    def __init__(self, name: str, kinds: set[str], request_keyframe: Callable[[], None]) -> None:
        self.name = name
        self.kinds = kinds
        self.request_keyframe = request_keyframe
        self.connected_at = time.monotonic()
        self.frames = {"video": 0, "audio": 0}
        self.trickled = 0  # ICE candidates its publisher sent by PATCH (whip.py)


class Programme:
    """Sources of one broadcast and the feed they make (the programme viewers play)."""

    def __init__(self, broadcast: str) -> None:
        self.broadcast = broadcast
        self.sources: dict[str, Source] = {}
        self.video_wanted: str | None = None
        self.audio_wanted: list[str] = []
        self.on_air: Source | None = None
        self.pending: Source | None = None
        self.cuts = 0
        self.spec_version: str | None = None  # the Broadcast's resourceVersion last seen
        self.feed = Feed(broadcast, self._keyframe_for_viewers)
        self.mixer: AudioMixer | None = None  # while two or more program.audio sources are on

    # -- sources ---------------------------------------------------------------------------
    def add(self, source: Source) -> None:
        old = self.sources.get(source.name)
        if old is not None:
            self.remove(old)
        self.sources[source.name] = source
        self._choose()

    def remove(self, source: Source) -> None:
        if self.sources.get(source.name) is not source:
            return
        del self.sources[source.name]
        if self.on_air is source:
            self.on_air = None
        if self.pending is source:
            self.pending = None
        self._choose()

    # -- the programme ---------------------------------------------------------------------
    def set_program(self, video: str | None, audio: list[str] | None = None) -> None:
        self.video_wanted = video
        self.audio_wanted = list(audio or [])
        self._choose()

    def _choose(self) -> None:
        self._choose_audio()
        with_video = [s for s in self.sources.values() if "video" in s.kinds]
        desired = self.sources.get(self.video_wanted or "")
        if desired is None or "video" not in desired.kinds:
            desired = self.on_air or (with_video[0] if with_video else None)
        if desired is self.on_air:
            self.pending = None
            return
        if desired is not self.pending:
            self.pending = desired
            if desired is not None:
                desired.request_keyframe()

    def _choose_audio(self) -> None:
        """Mix when two or more of ``program.audio`` are connected; else pass one through."""
        names = [n for n in dict.fromkeys(self.audio_wanted)
                 if n in self.sources and "audio" in self.sources[n].kinds]
        if len(names) >= 2:
            if self.mixer is None:
                mixer = AudioMixer(self.broadcast, lambda f: self._mixed(mixer, f))
                mixer.start()
                self.mixer = mixer
            self.mixer.set_sources(names)
        elif self.mixer is not None:
            self.mixer.stop()
            self.mixer = None

    def _mixed(self, mixer: AudioMixer, frame: Frame) -> None:
        if mixer is self.mixer:  # a stopped mixer's last frames are dropped
            self.feed.push(frame, mixer)

    def audio_source(self) -> Source | None:
        for name in self.audio_wanted:
            s = self.sources.get(name)
            if s is not None and "audio" in s.kinds:
                return s
        if self.on_air is not None and "audio" in self.on_air.kinds:
            return self.on_air
        return next((s for s in self.sources.values() if "audio" in s.kinds), None)

    def on_frame(self, source: Source, frame: Frame) -> None:
        """Every source's frames arrive here; only the programme's reach the feed."""
        source.frames[frame.kind] += 1
        if frame.kind == "video":
            if source is self.pending and frame.key:
                if self.on_air is not None:
                    self.cuts += 1
                self.on_air, self.pending = source, None
            if source is self.on_air:
                self.feed.push(frame, source)
        elif self.mixer is not None:
            self.mixer.put(source.name, frame.data)
        elif source is self.audio_source():
            self.feed.push(frame, source)

    def _keyframe_for_viewers(self) -> None:
        for s in (self.on_air, self.pending):
            if s is not None:
                s.request_keyframe()

    def status(self) -> dict[str, Any]:
        audio = self.audio_source()
        return {
            "broadcast": self.broadcast,
            "sources": {s.name: {"kinds": sorted(s.kinds), "frames": dict(s.frames),
                                 "trickled": s.trickled}
                        for s in self.sources.values()},
            "program": {"video": self.video_wanted, "audio": self.audio_wanted},
            "onAir": {"video": self.on_air.name if self.on_air else None,
                      "audio": ("+".join(sorted(self.mixer.names)) if self.mixer is not None
                                else audio.name if audio else None)},
            "mix": self.mixer.status() if self.mixer is not None else None,
            "pendingCut": self.pending.name if self.pending else None,
            "cuts": self.cuts,
            "specVersion": self.spec_version,
            "viewers": self.feed.viewers(),
            "frames": dict(self.feed.frames),
        }

    def close(self) -> None:
        if self.mixer is not None:
            self.mixer.stop()
            self.mixer = None
        self.feed.close()

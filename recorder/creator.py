"""The file creator: chunks in, per-track files (remux) and one composite (transcode) out.

Per-track files keep the publisher's encoded frames byte for byte: they are muxed into WebM
(VP8 / Opus, RFC 7741 / 7587 payloads) with PyAV and never decoded, which is why a remux runs at
hundreds of times real time. The composite decodes every track once, lays the videos out in a
grid, mixes the audio and encodes H.264 + AAC in MP4 (what every player opens).

Timing: within one tap run (one node, one publisher connection) a frame's time comes from its RTP
timestamp anchored at the run's first arrival, so chunk boundaries add no jitter; across runs
(a node crashed, the publisher rejoined elsewhere) the arrival wall clock places the run.
"""

from __future__ import annotations

import heapq
import math
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from .chunks import decode
from .store import Store

Progress = Callable[[float], None]
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 0)  # RFC 7845 5.1
AUDIO_RATE = 48000


@dataclass
class TrackMedia:
    participant: str
    track: str
    kind: str
    codec: str
    clock_rate: int
    width: int = 0
    height: int = 0
    frames: list[tuple[float, bool, bytes]] = field(default_factory=list)  # (wall s, key, data)

    @property
    def name(self) -> str:
        return f"{self.participant}~{self.track}"


def load_tracks(store: Store, recording: str) -> list[TrackMedia]:
    """Every track's frames from the recording's chunks, in time order."""
    groups: dict[str, list[str]] = {}
    for key in store.list(f"recordings/{recording}/chunks/"):
        if key.endswith(".prc"):
            groups.setdefault(key.rsplit("/", 1)[0], []).append(key)
    tracks: list[TrackMedia] = []
    for keys in groups.values():
        track: TrackMedia | None = None
        anchors: dict[str, tuple[int, int]] = {}
        last = -math.inf
        for key in sorted(keys):
            header, records = decode(store.get(key))
            if track is None:
                track = TrackMedia(header["participant"], header["track"], header["kind"],
                                   header["codec"], int(header["clockRate"]))
            if header.get("width"):
                track.width, track.height = int(header["width"]), int(header["height"])
            for r in records:
                rtp0, arr0 = anchors.setdefault(header["run"], (r.rtp_ts, r.arrival_us))
                t = arr0 / 1e6 + (r.rtp_ts - rtp0) / track.clock_rate
                if t <= last:
                    continue  # overlapping runs (a rejoin): keep time strictly increasing
                last = t
                track.frames.append((t, r.keyframe, r.data))
        if track is not None and track.frames:
            tracks.append(track)
    return sorted(tracks, key=lambda t: (t.participant, t.kind, t.track))


def span(tracks: list[TrackMedia]) -> tuple[float, float]:
    start = min(t.frames[0][0] for t in tracks)
    end = max(t.frames[-1][0] + (0.02 if t.kind == "audio" else 1 / 30) for t in tracks)
    return start, end


def remux(track: TrackMedia, t0: float, path: Path) -> dict[str, Any]:
    """One track into WebM without touching the encoded frames."""
    with av.open(str(path), "w", format="webm") as out:
        if track.kind == "video":
            stream = out.add_stream("vp8")
            stream.width, stream.height = track.width or 640, track.height or 480
        else:
            stream = out.add_stream("opus", rate=AUDIO_RATE)
            stream.codec_context.extradata = OPUS_HEAD
        stream.time_base = Fraction(1, 1000)  # Matroska's own timestamp scale
        last = -1
        for t, key, data in track.frames:
            pts = max(last + 1, round((t - t0) * 1000))
            last = pts
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = pts
            packet.is_keyframe = key
            out.mux(packet)
    return {"participant": track.participant, "track": track.track, "kind": track.kind,
            "codec": track.codec, "frames": len(track.frames),
            "bytes": sum(len(f[2]) for f in track.frames)}


class _Mixer:
    """Decodes the Opus tracks in time order and sums them into 1-second blocks; a block is
    emitted once every track has moved past it, so memory stays bounded for long meetings."""

    def __init__(self, tracks: list[TrackMedia], t0: float) -> None:
        self.t0 = t0
        self.decoders = [av.CodecContext.create("opus", "r") for _ in tracks]
        self.resamplers = [av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
                           for _ in tracks]
        self.queue = [(f[0], i, n) for i, t in enumerate(tracks) for n, f in
                      enumerate(t.frames[:1])]
        heapq.heapify(self.queue)
        self.tracks = tracks
        self.blocks: dict[int, np.ndarray] = {}
        self.next_block = 0

    def _add(self, start: int, pcm: np.ndarray) -> None:
        pos = 0
        while pos < pcm.shape[1]:
            b, off = divmod(start + pos, AUDIO_RATE)
            if b < self.next_block:  # late audio for an emitted block: drop it
                pos += AUDIO_RATE - off
                continue
            block = self.blocks.setdefault(b, np.zeros((2, AUDIO_RATE), np.float32))
            n = min(AUDIO_RATE - off, pcm.shape[1] - pos)
            block[:, off:off + n] += pcm[:, pos:pos + n]
            pos += n

    def until(self, t: float) -> list[np.ndarray]:
        """Decode everything before ``t``; return finished blocks (2 x 48000 float32)."""
        while self.queue and self.queue[0][0] < t:
            ft, i, n = heapq.heappop(self.queue)
            frames = self.tracks[i].frames
            if n + 1 < len(frames):
                heapq.heappush(self.queue, (frames[n + 1][0], i, n + 1))
            start = round((ft - self.t0) * AUDIO_RATE)
            for decoded in self.decoders[i].decode(av.Packet(frames[n][2])):
                for f in self.resamplers[i].resample(decoded):
                    pcm = f.to_ndarray().reshape(2, -1)
                    if start >= 0:
                        self._add(start, pcm)
                    start += pcm.shape[1]
        horizon = (self.queue[0][0] - self.t0) if self.queue else math.inf
        done = []
        while horizon < math.inf and self.next_block + 1 <= horizon - 0.25:
            done.append(self._pop())
        return done

    def _pop(self) -> np.ndarray:
        block = self.blocks.pop(self.next_block, None)
        self.next_block += 1
        return np.zeros((2, AUDIO_RATE), np.float32) if block is None else np.clip(block, -1, 1)

    def rest(self, samples: int) -> list[np.ndarray]:
        """Everything left, cut to ``samples`` in total (the video's length)."""
        self.until(math.inf)
        out = []
        while self.next_block * AUDIO_RATE < samples:
            first = self.next_block * AUDIO_RATE
            out.append(self._pop()[:, :samples - first])
        return out


def grid(n: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Tiles (x, y, w, h) for ``n`` videos, even sizes (4:2:0 chroma)."""
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    w, h = (width // cols) & ~1, (height // rows) & ~1
    return [((i % cols) * w, (i // cols) * h, w, h) for i in range(n)]


def composite(tracks: list[TrackMedia], path: Path, *, width: int = 1280, height: int = 720,
              fps: int = 15, progress: Progress = lambda _: None) -> dict[str, Any]:
    """Grid of the video tracks with the audio tracks mixed, H.264 + AAC in MP4."""
    videos = [t for t in tracks if t.kind == "video"]
    audios = [t for t in tracks if t.kind == "audio"]
    t0, t1 = span(tracks)
    nframes = max(1, round((t1 - t0) * fps))
    tiles = grid(len(videos), width, height)
    y = np.full((height, width), 16, np.uint8)
    u = np.full((height // 2, width // 2), 128, np.uint8)
    v = np.full((height // 2, width // 2), 128, np.uint8)
    decoders = []
    for _ in videos:
        d = av.CodecContext.create("vp8", "r")
        d.thread_count = 1
        decoders.append(d)
    cursor = [0] * len(videos)
    mixer = _Mixer(audios, t0) if audios else None
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "26"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.thread_count = 1
        aus = out.add_stream("aac", rate=AUDIO_RATE) if mixer else None
        if aus is not None:
            aus.layout = "stereo"
        apts = 0

        def write_audio(blocks: list[np.ndarray]) -> None:
            nonlocal apts
            for block in blocks:
                if block.shape[1] == 0:
                    continue
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp",
                                                   layout="stereo")
                frame.sample_rate, frame.pts = AUDIO_RATE, apts
                apts += block.shape[1]
                for packet in aus.encode(frame):  # type: ignore[union-attr]
                    out.mux(packet)

        for i in range(nframes):
            t = t0 + i / fps
            for k, track in enumerate(videos):
                latest = None
                frames = track.frames
                while cursor[k] < len(frames) and frames[cursor[k]][0] <= t:
                    for decoded in decoders[k].decode(av.Packet(frames[cursor[k]][2])):
                        latest = decoded
                    cursor[k] += 1
                if latest is not None:
                    x0, y0, w, h = tiles[k]
                    a = latest.reformat(width=w, height=h, format="yuv420p").to_ndarray()
                    y[y0:y0 + h, x0:x0 + w] = a[:h]
                    q = h // 4
                    u[y0 // 2:(y0 + h) // 2, x0 // 2:(x0 + w) // 2] = a[h:h + q].reshape(
                        h // 2, w // 2)
                    v[y0 // 2:(y0 + h) // 2, x0 // 2:(x0 + w) // 2] = a[h + q:h + 2 * q].reshape(
                        h // 2, w // 2)
            frame = av.VideoFrame.from_ndarray(
                np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(height * 3 // 2, width),
                format="yuv420p")
            frame.pts = i
            for packet in vs.encode(frame):
                out.mux(packet)
            if mixer is not None:
                write_audio(mixer.until(t))
            if i % fps == 0:
                progress(i / nframes)
        if mixer is not None:
            write_audio(mixer.rest(round(nframes / fps * AUDIO_RATE)))
            for packet in aus.encode(None):  # type: ignore[union-attr]
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
    progress(1.0)
    return {"duration": nframes / fps, "width": width, "height": height, "fps": fps,
            "videos": len(videos), "audios": len(audios)}


def create_files(store: Store, recording: str, *, progress: Progress = lambda _: None,
                 fps: int = 15, width: int = 1280, height: int = 720) -> dict[str, Any]:
    """Compile a recording: per-track WebM files and ``composite.mp4`` into ``files/``.

    Remuxing is a few percent of the work, so it reports as the first 5 %."""
    last = [-1.0]

    def report(fraction: float) -> None:  # monotonic, rounded: what a progress bar wants
        fraction = round(fraction, 4)
        if fraction > last[0]:
            last[0] = fraction
            progress(fraction)

    tracks = load_tracks(store, recording)
    if not tracks:
        raise ValueError(f"recording {recording} has no media")
    t0, t1 = span(tracks)
    result: dict[str, Any] = {"start": t0, "end": t1, "tracks": []}
    with tempfile.TemporaryDirectory(prefix="parley-rec-") as tmp:
        for i, track in enumerate(tracks):
            name = f"{track.name}.webm"
            info = remux(track, t0, Path(tmp) / name)
            store.put_file(f"recordings/{recording}/files/{name}", Path(tmp) / name)
            result["tracks"].append({**info, "file": name})
            report(0.05 * (i + 1) / len(tracks))
        info = composite(tracks, Path(tmp) / "composite.mp4", fps=fps, width=width,
                         height=height, progress=lambda f: report(0.05 + 0.9 * f))
        store.put_file(f"recordings/{recording}/files/composite.mp4", Path(tmp) / "composite.mp4")
        result["composite"] = {**info, "file": "composite.mp4"}
    report(1.0)
    return result

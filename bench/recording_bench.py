"""File creator speed as a multiple of real time: remux (target >= 50x) and the 720p composite
(target >= 2x), each on one core.

Input: a synthetic two-participant meeting written through the real chunk format - per
participant a moving VP8 video (libvpx realtime, encoded once before timing) and a 48 kHz Opus
tone in 20 ms frames, cut into 2 s chunks in a local store. The timed work is exactly what the
file creator does in production (``load_tracks`` + ``remux``; ``composite``). The process is
pinned to one CPU and the speed is media seconds / CPU seconds of this process (wall clock too).

    python -m bench.recording_bench [--seconds 30] [--size 640x360] [--fps 15 30]
"""

from __future__ import annotations

import argparse
import fractions
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from parley.recorder.chunks import ChunkWriter
from parley.recorder.creator import composite, load_tracks, remux, span
from parley.recorder.store import LocalStore

RESULTS = Path(__file__).parent / "results" / "recording.json"


def synth(store: LocalStore, recording: str, seconds: float, size: tuple[int, int],
          participants: int = 2) -> None:
    """Write ``participants`` x (VP8 30 fps video + Opus 48 kHz audio) into chunks."""
    w, h = size
    t0_us = 1_700_000_000_000_000
    for p in range(participants):
        who = f"p{p}"
        head = {"recording": recording, "participant": who, "node": "bench", "run": f"r{p}"}
        video = ChunkWriter({**head, "track": f"{who}-camera", "kind": "video",
                             "codec": "video/vp8", "clockRate": 90000, "width": w, "height": h},
                            2.0, store.put)
        enc = av.CodecContext.create("libvpx", "w")
        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
        enc.time_base = fractions.Fraction(1, 30)
        enc.bit_rate = 1_000_000
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        enc.gop_size = 90
        xs = np.arange(w, dtype=np.int32)
        for i in range(int(seconds * 30)):
            y = np.tile(((xs + i * (3 + p)) & 0xFF).astype(np.uint8), (h, 1))
            y[(i * 4) % h:(i * 4) % h + h // 8] = 235  # a moving bar
            frame = av.VideoFrame.from_ndarray(
                np.concatenate([y.ravel(), np.full(w * h // 2, 128, np.uint8)]).reshape(
                    h * 3 // 2, w), format="yuv420p")
            frame.pts = i
            for pkt in enc.encode(frame):
                video.add(pkt.pts * 3000, bytes(pkt), pkt.is_keyframe,
                          now_us=t0_us + pkt.pts * 33_333)
        video.seal()
        audio = ChunkWriter({**head, "run": f"a{p}", "track": f"{who}-mic", "kind": "audio",
                             "codec": "audio/opus", "clockRate": 48000}, 2.0, store.put)
        aenc = av.CodecContext.create("libopus", "w")
        aenc.sample_rate, aenc.layout, aenc.format = 48000, "stereo", "s16"
        n = 0
        for i in range(int(seconds * 50)):
            t = (np.arange(960) + i * 960) / 48000
            tone = (np.sin(2 * math.pi * (330 + 110 * p) * t) * 6000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16",
                                               layout="stereo")
            frame.sample_rate, frame.pts = 48000, i * 960
            for pkt in aenc.encode(frame):
                audio.add(n * 960, bytes(pkt), True, now_us=t0_us + n * 20_000)
                n += 1
        audio.seal()


def timed(fn: Any) -> tuple[float, float, Any]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def run(seconds: float, size: tuple[int, int], fps_list: list[int]) -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    with tempfile.TemporaryDirectory(prefix="parley-bench-rec-") as tmp:
        store = LocalStore(Path(tmp) / "store")
        synth(store, "bench", seconds, size)
        out_dir = Path(tmp) / "out"
        out_dir.mkdir()

        def do_remux() -> list[dict[str, Any]]:
            tracks = load_tracks(store, "bench")
            t0, _ = span(tracks)
            return [remux(t, t0, out_dir / f"{t.name}.webm") for t in tracks]

        cpu, wall, infos = timed(do_remux)
        tracks = load_tracks(store, "bench")
        t0, t1 = span(tracks)
        media_s = t1 - t0
        result: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "pyav": av.__version__, "ffmpeg": av.library_versions.get("libavcodec"),
            "loadavg": os.getloadavg()[0], "participants": 2, "media_seconds": round(media_s, 2),
            "input": f"{size[0]}x{size[1]} VP8 30 fps + Opus 48 kHz, per participant",
            "remux": {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                      "speed_cpu": round(media_s / cpu, 1), "speed_wall": round(media_s / wall, 1),
                      "tracks": len(infos), "target": 50},
            "composite": [],
        }
        for fps in fps_list:
            cpu, wall, info = timed(lambda f=fps: composite(
                tracks, out_dir / f"composite-{f}.mp4", fps=f))
            result["composite"].append({
                "output": f"1280x720 H.264 (x264 ultrafast) {fps} fps + AAC", "fps": fps,
                "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                "speed_cpu": round(media_s / cpu, 2), "speed_wall": round(media_s / wall, 2),
                "duration": info["duration"], "target": 2})
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--fps", type=int, nargs="+", default=[15, 30])
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    result = run(args.seconds, (w, h), args.fps)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

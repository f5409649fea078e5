"""Meeting transcoder: CPU per output stream and outputs per core.

A real `parley media-node --role transcoder` process (PARLEY_MEETING=*), pinned to one core, is
fed a 1280x720 camera (VP8, or VP9 / AV1 with ``--source``) at 30 frames/s as RTP over loopback
(what a call server sends it) and asked for K distinct outputs (K = 0, 1, 2, ...; K = 0 is the
decode alone): 640x360 H.264 by default (the codec case), or a budget rung in VP8 or VP9
(``--output vp9 --height 180 --kbps 120``). Per step, over a fixed window: the process's CPU
time (all threads, /proc) and the frames per second each output delivered. CPU per output =
(CPU at K - CPU at 0) / K; outputs per core = the largest K the core keeps at >= 28 frames/s on
every output.

No peer to compare with: Janus and the other SFUs forward, none transcodes per receiver; VP9
rungs are compared with VP8 rungs of the same size in the same session (``--compare``).

    python -m bench.meeting_transcoder            # about 1-2 minutes, writes bench/results/
    python -m bench.meeting_transcoder --quick    # a smoke run
    python -m bench.meeting_transcoder --compare  # 180p rungs: VP8 from VP8, VP9 from VP9,
                                                  # VP8 from VP9 (the encoders alone), and
                                                  # CPU per frame of each rung encoder
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av

from parley.media.av1 import packetize as packetize_av1
from parley.media.broadcast.ladder import Rung
from parley.media.meeting_transcoder import OutputEncoder, packetize_vp8, packetize_vp9
from parley.media.meeting_transcoder_wire import PT_SOURCE, control, parse_rtp
from parley.media.rtp import pack_header

from .load import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FPS = 30
SOURCE = (1280, 720)
OUTPUT_HEIGHT, OUTPUT_KBPS = 360, 600
MIN_FPS = 28.0
CODECS = {"vp8": "video/vp8", "vp9": "video/vp9", "av1": "video/av1", "h264": "video/h264"}
ENCODERS = {"vp8": "VP8 (libvpx realtime, cpu-used 8, CBR)",
            "vp9": "VP9 (libvpx-vp9 realtime, cpu-used 8, CBR, aq-mode 3)",
            "h264": "H.264 (libx264 veryfast, zerolatency, baseline)"}


def camera(n: int) -> Iterator[bytes]:
    """``n`` raw 720p yuv420p pictures: a moving gradient with noise in a sixteenth of it."""
    rng = random.Random(1)
    w, h = SOURCE
    row = bytes(range(256)) * (w // 256 + 1)
    chroma = bytes([128]) * (w * h // 2)
    for i in range(n):
        shift = (i * 4) % 256
        luma = bytearray(row[shift:shift + w] * h)
        part = len(luma) // 16
        luma[:part] = rng.randbytes(part)
        yield bytes(luma) + chroma


def av1_frames(n: int) -> list[tuple[bytes, bool]]:
    """``n`` temporal units of the camera in AV1 from libaom (Chromium's encoder: realtime,
    cpu-used 8, CBR 2 Mbit/s, one keyframe), encoded by an ffmpeg process with a time bound
    (SVT-AV1, the only AV1 encoder PyAV has here, hung inside a Python process)."""
    with tempfile.TemporaryDirectory() as tmp:
        ivf = Path(tmp) / "camera.ivf"
        w, h = SOURCE
        proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt",
             "yuv420p", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "-", "-c:v", "libaom-av1",
             "-usage", "realtime", "-cpu-used", "8", "-lag-in-frames", "0", "-g", "100000",
             "-b:v", "2M", "-minrate", "2M", "-maxrate", "2M", "-bufsize", "2M",
             "-threads", "1", str(ivf)], stdin=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            for picture in camera(n):
                proc.stdin.write(picture)
            proc.stdin.close()
            if proc.wait(600):
                raise SystemExit("ffmpeg could not encode the AV1 camera")
        finally:
            if proc.poll() is None:
                proc.kill()
        with av.open(str(ivf)) as clip:
            return [(bytes(p), bool(p.is_keyframe)) for p in clip.demux(video=0) if p.size]


def source_frames(n: int, codec: str = "vp8") -> list[tuple[bytes, bool]]:
    """``n`` (frame, keyframe) of a 720p camera in ``codec`` (libvpx realtime CBR at 2 Mbit/s,
    or libaom for AV1), the first a keyframe; the loop restarts on it."""
    if codec == "av1":
        return av1_frames(n)
    ctx = av.CodecContext.create("libvpx-vp9" if codec == "vp9" else "libvpx", "w")
    ctx.width, ctx.height = SOURCE
    ctx.pix_fmt = "yuv420p"
    ctx.bit_rate = 2_000_000
    ctx.time_base = fractions.Fraction(1, FPS)
    ctx.gop_size = 100_000
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                   "minrate": "2000000", "maxrate": "2000000", "bufsize": "2000000"}
    ctx.open()
    w, h = SOURCE
    out = []
    for i, raw in enumerate(camera(n)):
        frame = av.VideoFrame(w, h, "yuv420p")
        frame.planes[0].update(raw[:w * h])
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        frame.pts = i
        frame.pict_type = av.video.frame.PictureType.I if i == 0 else \
            av.video.frame.PictureType.NONE
        out.extend((bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame))
    return out


class Feeder:
    """Plays the frames as RTP at 30 frames/s and counts each output's frames (marker bits)."""

    def __init__(self, frames: list[tuple[bytes, bool]], target: tuple[str, int],
                 source: str = "vp8", output: str = "h264", height: int = OUTPUT_HEIGHT,
                 kbps: int = OUTPUT_KBPS) -> None:
        self.frames = frames
        self.target = target
        self.source, self.output, self.height, self.kbps = source, output, height, kbps
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.ssrc = random.getrandbits(32)
        self.seq = 0
        self.outputs: list[list[Any]] = []
        self.counts: dict[int, int] = {}
        self.restart = False  # the transcoder asked for a keyframe: the loop starts again

    def want(self, k: int) -> None:
        self.outputs = [[random.getrandbits(32), CODECS[self.output], self.height, self.kbps + i]
                        for i in range(k)]  # distinct bitrates: K distinct encoders
        self.counts = {o[0]: 0 for o in self.outputs}
        self._send_want()

    def _send_want(self) -> None:
        self.sock.sendto(control({"t": "want", "source": self.ssrc,
                                  "codec": CODECS[self.source], "outputs": self.outputs}),
                         self.target)

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            if data[:1] == b"{" and b'"key"' in data:
                self.restart = True
                continue
            rtp = parse_rtp(data)
            if rtp is not None and rtp[3] and rtp[0] in self.counts:
                self.counts[rtp[0]] += 1

    async def run(self, stop: asyncio.Event) -> None:
        start = time.perf_counter()
        i = n = 0
        while not stop.is_set():
            if self.restart and n > FPS // 2:  # a camera answers a PLI, at most twice a second
                self.restart, n = False, 0
            frame, key = self.frames[n % len(self.frames)]
            n += 1
            payloads = (packetize_vp9(frame, i & 0x7FFF, i, key, SOURCE) if self.source == "vp9"
                        else packetize_av1(frame, key) if self.source == "av1"
                        else packetize_vp8(frame, i & 0x7FFF))
            for j, payload in enumerate(payloads):
                if j and j % 16 == 0:
                    await asyncio.sleep(0.001)  # paced like a camera's packets, not one burst
                self.seq = (self.seq + 1) & 0xFFFF
                marker = int(j == len(payloads) - 1)
                self.sock.sendto(pack_header(0x80, (marker << 7) | PT_SOURCE, self.seq,
                                             (i * 3000) & 0xFFFFFFFF, self.ssrc) + payload,
                                 self.target)
            if i % 8 == 0:
                self._send_want()  # the lease, as the call server renews it
            self._drain()
            i += 1
            await asyncio.sleep(max(0.0, start + i / FPS - time.perf_counter()))


async def measure(feeder: Feeder, pid: int, k: int, warmup: float,
                  window: float) -> dict[str, Any]:
    feeder.want(k)
    await asyncio.sleep(warmup)
    counts0 = dict(feeder.counts)
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.sleep(window)
    cpu1, t1 = cpu_seconds(pid), time.perf_counter()
    fps = [(feeder.counts[o] - counts0[o]) / (t1 - t0) for o in counts0]
    return {"outputs": k, "cpuPercent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "minOutputFps": round(min(fps), 1) if fps else None,
            "meanOutputFps": round(sum(fps) / len(fps), 1) if fps else None}


def start_transcoder(core: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The transcoder process pinned to ``core``; returns it and its UDP port."""
    proc = subprocess.Popen(
        ["taskset", "-c", str(core), sys.executable, "-m", "parley.cli", "media-node",
         "--role", "transcoder", "--host", "127.0.0.1", "--port", "0", "--udp-port", "0"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PARLEY_MEETING": "*"})
    for _ in range(300):
        m = re.search(rb"on udp (\d+)", log.read_bytes())
        if m:
            return proc, int(m.group(1))
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the transcoder did not start")


async def run(args: argparse.Namespace, frames: list[tuple[bytes, bool]], pid: int,
              port: int) -> list[dict[str, Any]]:
    feeder = Feeder(frames, ("127.0.0.1", port), args.source, args.output, args.height,
                    args.kbps)
    stop = asyncio.Event()
    task = asyncio.ensure_future(feeder.run(stop))
    steps = []
    for k in range(0, args.max_outputs + 1):
        step = await measure(feeder, pid, k, args.warmup, args.window)
        steps.append(step)
        print(json.dumps(step), flush=True)
        if k and (step["minOutputFps"] or 0) < MIN_FPS - 6:
            break  # well past saturation
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return steps


def bench(args: argparse.Namespace) -> dict[str, Any]:
    frames = source_frames(FPS * 4, args.source)
    bitrate = sum(len(f) for f, _ in frames) * 8 / (len(frames) / FPS)
    core = min(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_transcoder(core, Path(tmp) / "transcoder.log")
        try:
            steps = asyncio.run(run(args, frames, proc.pid, port))
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
    decode = steps[0]["cpuPercent"]
    kept = [s for s in steps[1:] if (s["minOutputFps"] or 0) >= MIN_FPS]
    per_output = [round((s["cpuPercent"] - decode) / s["outputs"], 1) for s in kept]
    return {
        "bench": "meeting_transcoder", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "pinnedCore": core, "load1": os.getloadavg()[0]},
        "source": {"codec": args.source.upper(), "size": list(SOURCE), "fps": FPS,
                   "kbps": round(bitrate / 1000)},
        "output": {"codec": ENCODERS[args.output], "height": args.height, "kbps": args.kbps,
                   "fps": FPS},
        "window_s": args.window, "steps": steps,
        "decodeOnlyCpuPercent": decode,
        "cpuPercentPerOutput": per_output,
        "outputsPerCore": max((s["outputs"] for s in kept), default=0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--max-outputs", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=6.0)
    parser.add_argument("--source", choices=("vp8", "vp9", "av1"), default="vp8")
    parser.add_argument("--output", choices=tuple(CODECS), default="h264")
    parser.add_argument("--height", type=int, default=OUTPUT_HEIGHT)
    parser.add_argument("--kbps", type=int, default=OUTPUT_KBPS)
    parser.add_argument("--compare", action="store_true",
                        help="180p rungs at 120 kbit/s: VP8 from VP8, VP9 from VP9, VP8 from VP9")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.max_outputs, args.warmup, args.window = 2, 1.0, 3.0
    if not args.compare:
        result = bench(args)
        out = args.out or RESULTS / "meeting_transcoder.json"
    else:
        args.height, args.kbps = 180, 120
        runs = []
        for args.source, args.output in (("vp8", "vp8"), ("vp9", "vp9"), ("vp9", "vp8")):
            runs.append(bench(args))
            print(json.dumps(_summary(runs[-1])), flush=True)
        per_frame = encoder_costs(source_frames(FPS * 4))
        print(json.dumps(per_frame), flush=True)
        result = {"bench": "meeting_transcoder_rungs", "when": runs[0]["when"],
                  "load1": [r["machine"]["load1"] for r in runs], "runs": runs,
                  "encoderPerFrame": per_frame, "load1After": os.getloadavg()[0]}
        out = args.out or RESULTS / "meeting_transcoder_rungs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.compare:
        print(json.dumps(_summary(result)))
    return 0


def encoder_costs(frames: list[tuple[bytes, bool]], rounds: int = 3) -> list[dict[str, Any]]:
    """CPU per frame of each budget-rung encoder (VP8, VP9 at 180p and 90p) in this process, one
    thread, on the same decoded 720p pictures: each picture goes to every encoder in turn, so
    the machine's noise falls on all of them alike."""
    decoder = av.CodecContext.create("vp8", "r")
    pictures = [p for data, _ in frames for p in decoder.decode(av.Packet(data))]
    encoders = {(codec, rung.height): OutputEncoder(CODECS[codec], rung)
                for codec in ("vp8", "vp9") for rung in (Rung("180p", 180, 120),
                                                         Rung("90p", 90, 50))}
    spent = dict.fromkeys(encoders, 0.0)
    sizes = dict.fromkeys(encoders, 0)
    n = 0
    for _ in range(rounds):
        for picture in pictures:
            for key, encoder in encoders.items():
                t0 = time.thread_time()
                out = encoder.encode(picture, n * 3000, n == 0)
                spent[key] += time.thread_time() - t0
                sizes[key] += sum(len(d) for d, _, _ in out)
            n += 1
    return [{"codec": codec.upper(), "height": height,
             "msPerFrame": round(1000 * spent[(codec, height)] / n, 2),
             "percentOfCoreAt30fps": round(100 * spent[(codec, height)] / n * FPS, 1),
             "kbps": round(sizes[(codec, height)] * 8 / (n / FPS) / 1000)}
            for codec, height in encoders]


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {"source": result["source"]["codec"], "output": result["output"]["codec"],
            **{k: result[k] for k in ("decodeOnlyCpuPercent", "cpuPercentPerOutput",
                                      "outputsPerCore")}}


if __name__ == "__main__":
    sys.exit(main())

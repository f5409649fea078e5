"""LL-HLS on one edge: part requests per second per core with blocking reload, HLS viewers per
core, and the packaging cost per rendition per second of media (remux only) as a fraction of a
core.

- **Packaging** (in this process): pre-encoded H.264 (Debian's ffmpeg, testsrc2, constrained
  baseline, a keyframe every 2 s, SPS/PPS on each) and AAC (PyAV) fed to one ``hls.Rendition``
  as fast as it takes them; process CPU time / seconds of media packaged = the fraction of one
  core a rendition costs while live. 720p 3000k, 360p 800k, 180p 200k.
- **Edge**: an origin process serves the real packager and routes (``hls.add_routes``) for a
  360p rung fed in real time from the same pre-encoded media (no encoder, no transcoder), and a
  real ``--role edge-relay`` process (tier edge) proxies it (``hls_proxy.py``). The edge's WHEP
  pull finds no WHEP at the origin and retries once a second (a 404 each time: noise, kept).
  Viewers behave as LL-HLS players do: a blocking playlist reload for the hinted next part
  (``_HLS_msn``/``_HLS_part``), then that part, again and again, each on its own keep-alive
  connection with its own User-Agent; a minimal raw HTTP/1.1 client in a process of its own
  (httpx would cost more CPU than the edge). Per step: the edge's CPU (/proc), its request
  counter, parts per viewer per second. Viewers per core = viewers / edge cores at the largest
  step where every viewer kept up (>= 90 % of the 3 parts/s). Everything on one 2-core machine:
  the origin and the load share the cores with the edge, so the numbers are a floor.

    flock /tmp/parley-heavy.lock .venv/bin/python -m bench.hls_edge   # about 2 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "hls_edge.json"
FPS = 30
BROADCAST, RUNG = "bench", "360p"
RUNGS = [("720p", 1280, 720, 3000), ("360p", 640, 360, 800), ("180p", 320, 180, 200)]
STEPS = [25, 50, 100, 150]
STEP_S, WARM_S = 8.0, 3.0
_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="([^"]+)/(\d+)\.(\d+)\.m4s"')


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_video(directory: Path, w: int, h: int, kbps: int, seconds: float
               ) -> list[tuple[bytes, bool]]:
    """Annex-B access units with SPS/PPS on every keyframe (what the transcoder hands over)."""
    out = directory / f"{h}.h264"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size={w}x{h}:rate={FPS}", "-t", str(seconds),
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast",
                    "-tune", "zerolatency", "-profile:v", "baseline", "-b:v", f"{kbps}k",
                    "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k", "-g", str(2 * FPS),
                    "-keyint_min", str(2 * FPS), "-sc_threshold", "0",
                    "-bsf:v", "dump_extra=freq=keyframe", "-f", "h264", str(out)], check=True)
    with av.open(str(out), format="h264") as c:
        return [(bytes(p), bool(p.is_keyframe)) for p in c.demux(video=0) if p.size]


def make_aac(seconds: float) -> tuple[bytes, list[bytes]]:
    """(AudioSpecificConfig, AAC-LC frames of 1024 samples, 48 kHz stereo, 96 kbit/s)."""
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "stereo", "fltp", 96000
    enc.open()
    frames: list[bytes] = []
    t = np.arange(int(seconds * 48000)) / 48000
    pcm = (np.sin(2 * np.pi * 440 * t) * 0.2).astype(np.float32)
    for i in range(0, len(pcm) - 1024, 1024):
        f = av.AudioFrame.from_ndarray(np.stack([pcm[i:i + 1024]] * 2), format="fltp",
                                       layout="stereo")
        f.sample_rate, f.pts = 48000, i
        frames.extend(bytes(p) for p in enc.encode(f))
    return bytes(enc.extradata or b"\x11\x90"), frames


class Feeder:
    """Plays pre-encoded video + AAC into one Rendition on the programme's clocks, looping."""

    def __init__(self, rendition: Any, video: list[tuple[bytes, bool]], audio: list[bytes],
                 size: tuple[int, int]) -> None:
        self.r, self.video, self.audio, self.size = rendition, video, audio, size
        self.n = 0
        self.audio_n = 0

    def step(self) -> None:
        """One video frame (and the AAC frames that start before its end)."""
        au, key = self.video[self.n % len(self.video)]
        if self.n % len(self.video) == 0 and self.n:
            key = True  # the loop restarts on the file's first (key) frame
        ts = self.n * 90000 // FPS
        end = (self.n + 1) * 48000 // FPS
        while self.audio_n * 1024 < end:
            self.r.audio(self.audio_n * 1024, self.audio[self.audio_n % len(self.audio)])
            self.audio_n += 1
        self.r.video(au, ts % (1 << 32), key, self.size)
        self.n += 1


def packaging_cost(tmp: Path, media_s: float = 60.0) -> list[dict[str, Any]]:
    from parley.media.broadcast.hls import Rendition

    asc, aac = make_aac(10)
    out = []
    for name, w, h, kbps in RUNGS:
        video = make_video(tmp, w, h, kbps, 10)
        r = Rendition(name, "bench", kbps, 2.0)
        r.audio_config = asc
        feeder = Feeder(r, video, aac, (w, h))
        frames = int(media_s * FPS)
        t0, w0 = time.process_time(), time.perf_counter()
        for _ in range(frames):
            feeder.step()
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        out.append({"rendition": name, "height": h, "video_kbps": kbps, "media_s": media_s,
                    "cpu_s": round(cpu, 4), "core_fraction": round(cpu / media_s, 5),
                    "wall_s": round(wall, 3), "segments": r.last_msn + 1,
                    "bytes_per_s": round(sum(len(s.data) for s in r.segments)
                                         / max(sum(s.duration for s in r.segments), 0.1))})
        print(f"packaging {name}: {cpu / media_s:.4%} of a core", flush=True)
    return out


# ---- the origin: the real packager and routes, fed in real time ---------------------------

def origin(port: int, tmp: Path) -> None:
    import uvicorn
    from fastapi import FastAPI

    from parley.media.broadcast.hls import Ladder, add_routes

    asc, aac = make_aac(10)
    video = make_video(tmp, 640, 360, 800, 10)
    ladder = Ladder([(RUNG, 800)], 2.0, asc)
    live = FastAPI()
    add_routes(live, lambda b: ladder if b == BROADCAST else None)
    app = FastAPI()
    app.mount("/live", live)

    async def feed() -> None:
        feeder = Feeder(ladder.renditions[RUNG], video, aac, (640, 360))
        start = time.monotonic()
        while True:
            feeder.step()
            await asyncio.sleep(max(0.0, start + feeder.n / FPS - time.monotonic()))

    async def main() -> None:
        task = asyncio.ensure_future(feed())
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning"))
        await server.serve()
        task.cancel()
    asyncio.run(main())


# ---- the viewers: LL-HLS players as plain keep-alive HTTP clients ---------------------------

class Conn:
    """One keep-alive HTTP/1.1 connection (Content-Length answers only, as the edge gives)."""

    def __init__(self, host: str, port: int, agent: str) -> None:
        self.host, self.port, self.agent = host, port, agent
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"User-Agent: {self.agent}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        body = await self.reader.readexactly(int(m.group(1))) if m else b""
        return status, body


async def viewer(i: int, host: str, port: int, stop: asyncio.Event,
                 stats: dict[str, Any]) -> None:
    conn = Conn(host, port, f"bench-viewer-{i}")
    base = f"/live/{BROADCAST}/"
    _, body = await conn.get(f"{base}{RUNG}.m3u8")
    m = _HINT.search(body.decode())
    while not stop.is_set() and m is not None:
        prefix, msn, part = m.group(1), int(m.group(2)), int(m.group(3))
        status, body = await conn.get(f"{base}{RUNG}.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        stats["playlists"] += 1
        t0 = time.perf_counter()
        status, _ = await conn.get(f"{base}{prefix}/{msn}.{part}.m4s")
        if status == 200:
            stats["parts"][i] += 1
            stats["part_ms"].append((time.perf_counter() - t0) * 1000)
        m = _HINT.search(body.decode()) if body else None


def viewers(edge: str, n: int, ramp_s: float) -> None:
    """Run until stdin closes, then print counts; reset counters on a line 'reset'."""
    host, port = edge.removeprefix("http://").split(":")

    async def main() -> None:
        stop = asyncio.Event()
        stats: dict[str, Any] = {"playlists": 0, "parts": [0] * n, "part_ms": []}
        tasks = []
        for i in range(n):
            tasks.append(asyncio.ensure_future(viewer(i, host, int(port), stop, stats)))
            await asyncio.sleep(ramp_s / n)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if line.strip() == "reset":
                stats.update(playlists=0, parts=[0] * n, part_ms=[])
                print("ok", flush=True)
                continue
            ms = sorted(stats["part_ms"]) or [0.0]
            print(json.dumps({"playlists": stats["playlists"], "parts": stats["parts"],
                              "part_p50_ms": ms[len(ms) // 2],
                              "part_p95_ms": ms[int(len(ms) * 0.95)]}), flush=True)
            if not line:
                break
        stop.set()
        for t in tasks:
            t.cancel()
    asyncio.run(main())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def edge_steps(tmp: Path) -> list[dict[str, Any]]:
    import httpx

    o_port, e_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "bench.hls_edge", "origin", str(o_port),
                               str(tmp)], cwd=ROOT, env=env,
                              stdout=(tmp / "origin.log").open("w"), stderr=subprocess.STDOUT)]
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "media-node", "--role", "edge-relay", "--host",
         "127.0.0.1", "--port", str(e_port)], cwd=ROOT, stdout=(tmp / "edge.log").open("w"),
        stderr=subprocess.STDOUT,
        env={**env, "PARLEY_BROADCAST": BROADCAST, "PARLEY_RENDITIONS": RUNG,
             "PARLEY_TIER": "edge", "PARLEY_HLS_VIEWER_WINDOW_S": "5",
             "PARLEY_UPSTREAM_URL": f"http://127.0.0.1:{o_port}/live/{BROADCAST}/"
                                    "{rendition}/whep"}))
    edge = f"http://127.0.0.1:{e_port}"
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{edge}/live/{BROADCAST}/{RUNG}.m3u8", timeout=5).status_code \
                        == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the edge never served the playlist: see " + str(tmp))
            time.sleep(0.5)
        for n in STEPS:
            load = subprocess.Popen([sys.executable, "-m", "bench.hls_edge", "viewers", edge,
                                     str(n), "1.0"], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(WARM_S)
            assert load.stdin is not None and load.stdout is not None
            load.stdin.write("reset\n")
            load.stdin.flush()
            load.stdout.readline()
            req0 = httpx.get(f"{edge}/live/{BROADCAST}").json()["hls"]["requests"]
            cpu0, t0 = cpu_seconds(procs[1].pid), time.monotonic()
            time.sleep(STEP_S)
            status = httpx.get(f"{edge}/live/{BROADCAST}").json()
            cpu, spent = cpu_seconds(procs[1].pid) - cpu0, time.monotonic() - t0
            got = json.loads(load.communicate("", 30)[0].splitlines()[-1])
            cores = cpu / spent
            requests = status["hls"]["requests"] - req0
            part_rate = sum(got["parts"]) / spent
            kept_up = sum(1 for p in got["parts"] if p / spent >= 0.9 * FPS / 10)
            step = {"viewers": n, "edge_cores": round(cores, 3),
                    "requests_per_s": round(requests / spent, 1),
                    "part_requests_per_s": round(part_rate, 1),
                    "part_requests_per_s_per_core": round(part_rate / max(cores, 1e-3)),
                    "requests_per_s_per_core": round(requests / spent / max(cores, 1e-3)),
                    "viewers_kept_up": kept_up, "viewers_per_core": round(n / max(cores, 1e-3)),
                    "edge_counted_hls": status["audience"]["hls"],
                    "upstream_requests": status["hls"]["upstreamRequests"],
                    "part_p50_ms": round(got["part_p50_ms"], 2),
                    "part_p95_ms": round(got["part_p95_ms"], 2), "load_avg": os.getloadavg()}
            print(json.dumps(step), flush=True)
            out.append(step)
            time.sleep(6)  # the edge forgets the viewers (window 5 s) before the next step
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return out


def render(path: Path = RESULTS) -> str:
    d = json.loads(path.read_text())
    lines = ["| rendition | video kbit/s | packaging: fraction of one core per rendition |",
             "|---|---|---|"]
    lines += [f"| {p['rendition']} | {p['video_kbps']} | {p['core_fraction']:.4%} |"
              for p in d["packaging"]]
    lines += ["", "| HLS viewers on one edge | edge CPU (cores) | requests/s | part requests/s "
              "| part requests/s per core | viewers per core | kept up | edge counted | part "
              "p50 / p95 (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {s['viewers']} | {s['edge_cores']:.2f} | {s['requests_per_s']:.0f} | "
              f"{s['part_requests_per_s']:.0f} | {s['part_requests_per_s_per_core']} | "
              f"{s['viewers_per_core']} | {s['viewers_kept_up']} | {s['edge_counted_hls']} | "
              f"{s['part_p50_ms']} / {s['part_p95_ms']} |" for s in d["edge"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", default="all",
                    choices=["all", "packaging", "origin", "viewers", "table"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args(argv)
    if a.mode == "origin":
        origin(int(a.args[0]), Path(a.args[1]))
        return 0
    if a.mode == "viewers":
        viewers(a.args[0], int(a.args[1]), float(a.args[2]))
        return 0
    if a.mode == "table":
        print(render())
        return 0
    with tempfile.TemporaryDirectory(prefix="parley-hls-bench-") as d:
        tmp = Path(d)
        result: dict[str, Any] = {"bench": "hls_edge", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                          time.gmtime()),
                                  "machine": {"cpus": os.cpu_count(),
                                              "python": platform.python_version()},
                                  "packaging": packaging_cost(tmp)}
        if a.mode == "all":
            result["edge"] = edge_steps(tmp)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    if "edge" in result:
        print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())

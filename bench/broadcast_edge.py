"""Edge: WHEP viewers per core at <= 1 % loss, against Janus in the same run.

One publisher replays pre-encoded media (no encoder runs): 640x360 30 fps H.264 constrained
baseline at 800 kbit/s (the ladder's 360p rung; a keyframe every 2 s) and 48 kHz Opus at 64
kbit/s, made once by Debian's ffmpeg and PyAV. Systems, one after the other under the same load:

- ``parley-edge``: ``--role ingest`` (WHIP) -> ``--role edge-relay`` (tier edge, pulling the
  programme over WHEP) -> WHEP viewers. Measured: the edge process only.
- ``janus``: Debian's Janus, VideoRoom (H.264 + Opus room), the publisher over its REST API,
  viewers as VideoRoom subscribers (the config of bench/sfus.py: HTTP transport, ICE on lo).

Viewers are light receivers: aiortc peer connections (ICE, DTLS, SRTP: a real WebRTC session)
whose receivers count packets instead of handing them to a jitter buffer and a decoder, in two
processes of their own. A full WebRTC client per viewer would saturate this 2-core machine long
before the edge, so viewers per core is extrapolated: viewers / edge CPU (cores) at the largest
step whose loss is <= 1 %, plus the marginal CPU per added viewer. Loss per viewer = max(1 -
distinct video frames received / frames sent, RTP sequence gaps, 1 - audio packets / sent).

    flock /tmp/parley-heavy.lock python -m bench.broadcast_edge   # about 3 min
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtp import RtpPacket

from .broadcast_chain import BROADCAST, Chain, machine_load, stream_key
from .load import cpu_seconds
from .sfus import JanusSfu, connected, new_pc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FPS = 30
AUDIO_MS = 20
GOAL = 500
LOSS_LIMIT = 0.01
JANUS_ROOM = 4343


def make_media(directory: Path, seconds: float = 10.0) -> tuple[list[bytes], list[bytes]]:
    """Pre-encoded access units (Annex B) and Opus packets to replay."""
    video = directory / "v.h264"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size=640x360:rate={FPS}", "-t", str(seconds),
                    "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast",
                    "-tune", "zerolatency", "-profile:v", "baseline", "-b:v", "800k",
                    "-maxrate", "800k", "-bufsize", "800k", "-g", str(2 * FPS),
                    "-f", "h264", str(video)], check=True)
    with av.open(str(video), format="h264") as c:
        frames = [bytes(p) for p in c.demux(video=0) if p.size]
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    enc.bit_rate = 64000
    enc.open()
    n = 48000 * AUDIO_MS // 1000
    audio: list[bytes] = []
    t = np.arange(int(seconds * 48000)) / 48000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    for i in range(0, len(pcm) - n, n):
        f = av.AudioFrame.from_ndarray(np.repeat(pcm[i:i + n], 2)[None, :], format="s16",
                                       layout="stereo")
        f.sample_rate, f.pts = 48000, i
        audio.extend(bytes(p) for p in enc.encode(f))
    return frames, audio


class Replay(MediaStreamTrack):
    """Pre-encoded packets at their real pace, looping: aiortc's sender only packetizes them."""

    def __init__(self, kind: str, packets: list[bytes], period: float, clock: int) -> None:
        super().__init__()
        self.kind = kind
        self.packets = packets
        self.period = period
        self.ticks = int(period * clock)
        self.time_base = fractions.Fraction(1, clock)
        self.n = 0
        self.start: float | None = None

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.start is None:
            self.start = time.monotonic()
        delay = self.start + self.n * self.period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        p = av.Packet(self.packets[self.n % len(self.packets)])
        p.pts, p.time_base = self.n * self.ticks, self.time_base
        self.n += 1
        return p


def publisher_pc(video: list[bytes], audio: list[bytes]) -> RTCPeerConnection:
    pc = new_pc()
    t = pc.addTransceiver(Replay("video", video, 1 / FPS, 90000), "sendonly")
    t.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                           if c.mimeType.lower() == "video/h264"
                           and c.parameters.get("packetization-mode") == "1"])
    pc.addTransceiver(Replay("audio", audio, AUDIO_MS / 1000, 48000), "sendonly")
    return pc


# ---- the viewers' processes -------------------------------------------------------------------

class Counts:
    """Per viewer and kind: packets, the extended sequence span, distinct video frames."""

    def __init__(self) -> None:
        self.on = False
        self.packets = {"video": 0, "audio": 0}
        self.seq: dict[str, list[int]] = {}
        self.frames: set[int] = set()

    def reset(self) -> None:
        self.packets = {"video": 0, "audio": 0}
        self.seq = {}
        self.frames = set()


def count(pc: RTCPeerConnection, counts: Counts) -> None:
    """Replace each receiver's packet handler by a counter (no jitter buffer, no decoder)."""
    for t in pc.getTransceivers():
        kind = t.kind
        pts = {c.payloadType for c in t._codecs if not c.mimeType.lower().endswith("/rtx")}

        async def handle(packet: RtpPacket, arrival_time_ms: int = 0, _kind: str = kind,
                         _pts: set[int] = pts) -> None:
            if not counts.on or packet.payload_type not in _pts:
                return
            counts.packets[_kind] += 1
            s = counts.seq.get(_kind)  # [first, last] extended sequence numbers, last raw
            if s is None:
                counts.seq[_kind] = [0, 0, packet.sequence_number]
            else:
                d = (packet.sequence_number - s[2]) & 0xFFFF
                if d < 0x8000:  # forward, a wrap included
                    s[1] += d
                    s[2] = packet.sequence_number
            if _kind == "video":
                counts.frames.add(packet.timestamp)

        t.receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


async def parley_viewer(url: str, counts: Counts) -> RTCPeerConnection:
    pc = new_pc()
    v = pc.addTransceiver("video", "recvonly")
    v.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                           if c.mimeType.lower() in ("video/h264", "video/rtx")])
    pc.addTransceiver("audio", "recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(url, content=pc.localDescription.sdp,
                            headers={"Content-Type": "application/sdp"})
    if r.status_code != 201:
        raise RuntimeError(f"WHEP {r.status_code}: {r.text[:200]}")
    await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
    count(pc, counts)
    return pc


async def janus_viewer(janus: JanusSfu, feed: int, counts: Counts) -> RTCPeerConnection:
    pc = new_pc()
    handle = await janus._attach()
    await janus._message(handle, {"request": "join", "room": janus.room, "ptype": "subscriber",
                                  "streams": [{"feed": feed}]})
    ev = await janus._event(handle, want_jsep=True)
    await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "offer"))
    count(pc, counts)
    await pc.setLocalDescription(await pc.createAnswer())
    await janus._message(handle, {"request": "start", "room": janus.room},
                         {"type": "answer", "sdp": pc.localDescription.sdp})
    return pc


async def viewers_process(system: str, target: str, feed: int) -> None:
    """Child: ``add N`` opens N more viewers; ``window S`` counts for S seconds and answers with
    per-viewer counts (one JSON line)."""
    loop = asyncio.get_running_loop()
    janus: JanusSfu | None = None
    if system == "janus":
        janus = JanusSfu()
        janus.room = JANUS_ROOM
        await janus.connect(target)
    viewers: list[tuple[RTCPeerConnection, Counts]] = []
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "add":
            for _ in range(int(line[1])):
                c = Counts()
                pc = (await janus_viewer(janus, feed, c) if janus is not None
                      else await parley_viewer(target, c))
                viewers.append((pc, c))
            with contextlib.suppress(TimeoutError, RuntimeError):  # counted as not connected
                await asyncio.wait_for(asyncio.gather(*(
                    connected(pc, "viewer") for pc, _ in viewers)), 30)
            print(json.dumps({"viewers": len(viewers), "connected": sum(
                pc.connectionState == "connected" for pc, _ in viewers)}), flush=True)
        elif line[0] == "window":
            for _, c in viewers:
                c.reset()
                c.on = True
            await asyncio.sleep(float(line[1]))
            for _, c in viewers:
                c.on = False
            print(json.dumps([{"packets": c.packets, "frames": len(c.frames),
                               "seq": c.seq} for _, c in viewers]), flush=True)
    for pc, _ in viewers:
        with contextlib.suppress(Exception):
            await pc.close()
    if janus is not None:
        janus.proc = None
        await janus.stop()


# ---- the parent -------------------------------------------------------------------------------

PY_SPY = os.environ.get("PY_SPY")  # a py-spy binary: profile a Python system's last step


def profile_start(pid: int, seconds: float) -> tuple[subprocess.Popen[bytes], Path]:
    out = Path(tempfile.mkstemp(prefix="parley-bbench-spy-", suffix=".txt")[1])
    proc = subprocess.Popen([str(PY_SPY), "record", "-p", str(pid), "-d", str(int(seconds)),
                             "-r", "200", "-f", "raw", "-o", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


async def profile_end(proc: subprocess.Popen[bytes], out: Path, top: int = 25
                      ) -> dict[str, Any]:
    """Share of samples per function: inclusive (on the stack) and self (on top)."""
    await asyncio.to_thread(proc.wait, 60)
    text = await asyncio.to_thread(out.read_text)
    await asyncio.to_thread(out.unlink)
    incl: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  for f in stack.split(";")]
        total += int(n)
        for f in set(frames):
            incl[f] = incl.get(f, 0) + int(n)
        own[frames[-1]] = own.get(frames[-1], 0) + int(n)

    def share(d: dict[str, int]) -> dict[str, float]:
        return {k: round(v / total, 3) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]}
    return {"samples": total, "inclusive": share(incl), "self": share(own)}


class ViewerProcs:
    def __init__(self, system: str, target: str, feed: int, n: int) -> None:
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "bench.broadcast_edge", "--viewers", system, target,
             str(feed)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for _ in range(n)]

    async def ask(self, lines: list[str], limit: float) -> list[Any]:
        def one(p: subprocess.Popen[str], line: str) -> Any:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(line + "\n")
            p.stdin.flush()
            out = p.stdout.readline()
            if not out:
                raise RuntimeError(f"viewer process exited {p.poll()}")
            return json.loads(out)
        return await asyncio.wait_for(asyncio.gather(*(
            asyncio.to_thread(one, p, ln) for p, ln in zip(self.procs, lines, strict=True))),
            limit)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                assert p.stdin is not None
                p.stdin.write("quit\n")
                p.stdin.flush()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def loss_of(rows: list[dict[str, Any]], window: float, audio_pps: float) -> dict[str, Any]:
    """Mean and worst loss over the viewers, and the mean of each of its parts (which one
    decides says where packets went: whole frames, sequence gaps or audio)."""
    frames_sent = window * FPS
    worst, total = 0.0, 0.0
    parts = {"frames": 0.0, "seq_video": 0.0, "seq_audio": 0.0, "audio": 0.0}
    for r in rows:
        seq = {"video": 0.0, "audio": 0.0}
        for kind, (first, last, _) in r["seq"].items():
            span = last - first + 1
            seq[kind] = 1 - r["packets"][kind] / span if span > 0 else 1.0
        mine = {"frames": 1 - r["frames"] / frames_sent, "seq_video": seq["video"],
                "seq_audio": seq["audio"],
                "audio": 1 - r["packets"]["audio"] / (window * audio_pps)}
        for k, v in mine.items():
            parts[k] += v
        loss = max(0.0, *mine.values())
        worst = max(worst, loss)
        total += loss
    n = max(1, len(rows))
    return {"mean": round(total / n, 4), "worst": round(worst, 4),
            "parts": {k: round(v / n, 4) for k, v in parts.items()}}


def udp_drops(pids: list[int]) -> int:
    """Datagrams the kernel dropped at the UDP sockets of these processes (their receive
    buffers full: /proc/net/udp's drops column), so far."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    drops = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if len(cols) > 12 and cols[9] in inodes:
                    drops += int(cols[-1])
    return drops


async def forwarding(status: str | None) -> dict[str, int] | None:
    """The edge's forwarding counters (its status document), or None (Janus)."""
    if status is None:
        return None
    async with httpx.AsyncClient(timeout=10) as http:
        doc = (await http.get(status)).json()
    return {**doc.get("forwarding", {}), "upstream_sessions": doc.get("upstreamSessions", 0)}


async def measure(system: str, pid: int, target: str, feed: int, steps: list[int],
                  window: float, warm: float, procs: int, status: str | None = None,
                  upstream: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """``upstream``: the processes feeding the system (ingest, this process's publisher), whose
    kernel drops are counted too."""
    vp = ViewerProcs(system, target, feed, procs)
    rows: list[dict[str, Any]] = []
    try:
        have = 0
        for step in steps:
            add = step - have
            parts = [add // procs + (1 if i < add % procs else 0) for i in range(procs)]
            ready = await vp.ask([f"add {n}" for n in parts], 60 + 2 * add)
            have = step
            await asyncio.sleep(warm)
            spy = profile_start(pid, window) if step == steps[-1] and PY_SPY else None
            vpids = [p.pid for p in vp.procs]
            d0, e0, u0 = udp_drops(vpids), udp_drops([pid]), udp_drops([*upstream, os.getpid()])
            f0 = await forwarding(status)
            c0, v0, w0 = cpu_seconds(pid), vp.cpu(), time.monotonic()
            res = await vp.ask([f"window {window}"] * procs, window + 30)
            w1 = time.monotonic()
            d1, e1, u1 = udp_drops(vpids), udp_drops([pid]), udp_drops([*upstream, os.getpid()])
            f1 = await forwarding(status)
            cpu = (cpu_seconds(pid) - c0) / (w1 - w0)
            per = [r for part in res for r in part]
            loss = loss_of(per, window, 1000 / AUDIO_MS)
            pps = sum(r["packets"]["video"] + r["packets"]["audio"] for r in per) / window
            row = {"viewers": step, "connected": sum(x["connected"] for x in ready),
                   "cpu_cores": round(cpu, 4), "packets_out_per_s": round(pps),
                   "cpu_us_per_packet": round(cpu * 1e6 / pps, 2) if pps else None,
                   "loss_mean": loss["mean"], "loss_worst": loss["worst"],
                   "viewer_procs_cpu_cores": round((vp.cpu() - v0) / (w1 - w0), 3),
                   "loss_parts": loss["parts"], "udp_drops_viewers": d1 - d0,
                   "udp_drops_system": e1 - e0, "udp_drops_upstream": u1 - u0,
                   "loadavg": machine_load()}
            if f0 and f1:  # the edge's own counters over the window
                row["edge"] = {k: f1[k] - f0.get(k, 0) for k in f1}
            ok = loss["mean"] <= LOSS_LIMIT and cpu > 0
            row["viewers_per_core"] = round(step / cpu) if ok else None
            if rows:
                prev = rows[-1]
                dv = step - prev["viewers"]
                row["marginal_cpu_per_viewer"] = round((cpu - prev["cpu_cores"]) / dv, 5)
            if spy is not None:
                row["profile"] = await profile_end(*spy)
            rows.append(row)
            print(f"  {system:11} viewers={step:4} connected={row['connected']:4} "
                  f"cpu={row['cpu_cores']:.3f} pps={row['packets_out_per_s']} "
                  f"us/pkt={row['cpu_us_per_packet']} loss mean={loss['mean']} "
                  f"worst={loss['worst']} viewers/core={row['viewers_per_core']} "
                  f"load={row['loadavg'][0]} parts={loss['parts']} "
                  f"udp drops viewers={d1 - d0} system={e1 - e0} upstream={u1 - u0} "
                  f"edge={row.get('edge')}",
                  flush=True)
    finally:
        vp.stop()
    return rows


async def edge_on_air(chain: Chain, pc: RTCPeerConnection, packets: int) -> str:
    """Ingest and edge role processes of ``chain``, ``pc`` publishing over WHIP: the edge's
    URL once it has forwarded ``packets`` video packets from its upstream."""
    ingest = chain.ingest()
    edge = chain.start("edge", "edge-relay", {
        "PARLEY_UPSTREAM_URL": f"{ingest}/live/{BROADCAST}/whep", "PARLEY_TIER": "edge"})
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=20) as http:
        r = await http.post(f"{ingest}/live/{BROADCAST}/whip", content=pc.localDescription.sdp,
                            headers={"Content-Type": "application/sdp",
                                     "Authorization": f"Bearer {stream_key()}"})
        if r.status_code != 201:
            raise RuntimeError(f"WHIP {r.status_code}: {r.text}")
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        deadline = time.monotonic() + 20
        while (await http.get(f"{edge}/live/{BROADCAST}")).json()["packets"]["video"] < packets:
            if time.monotonic() > deadline:
                raise RuntimeError("the edge is not receiving")
            await asyncio.sleep(0.2)
    return edge


async def run_parley(media: tuple[list[bytes], list[bytes]], args: argparse.Namespace
                     ) -> dict[str, Any]:
    chain = Chain()
    pc = publisher_pc(*media)
    try:
        edge = await edge_on_air(chain, pc, 30)
        rows = await measure("parley-edge", chain.pid("edge"), f"{edge}/live/{BROADCAST}/whep",
                             0, args.steps, args.window, args.warm, args.procs,
                             f"{edge}/live/{BROADCAST}", (chain.pid("ingest"),))
        warnings = [ln for ln in chain.log("edge").splitlines() if "WARNING" in ln or "pull" in ln]
        if warnings:  # e.g. the upstream pulled again: say so next to the figures
            rows[-1]["edge_log"] = warnings[-20:]
        import aiortc
        return {"system": "parley-edge", "version": f"parley edge-relay (aiortc "
                f"{aiortc.__version__})", "steps": rows}
    finally:
        await pc.close()
        chain.stop()


async def run_janus(media: tuple[list[bytes], list[bytes]], args: argparse.Namespace
                    ) -> dict[str, Any]:
    janus = JanusSfu()
    pc = publisher_pc(*media)
    try:
        await janus.start()
        handle = await janus._attach()
        janus.room = JANUS_ROOM  # an H.264 room next to the VP8 one start() made
        await janus._message(handle, {"request": "create", "room": janus.room, "publishers": 4,
                                      "videocodec": "h264", "audiocodec": "opus",
                                      "bitrate": 0, "fir_freq": 0})
        await pc.setLocalDescription(await pc.createOffer())
        pub = await janus._attach()
        await janus._message(pub, {"request": "joinandconfigure", "room": janus.room,
                                   "ptype": "publisher", "display": "cam1"},
                             {"type": "offer", "sdp": pc.localDescription.sdp})
        ev = await janus._event(pub, want_jsep=True)
        feed = ev["plugindata"]["data"]["id"]
        await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "answer"))
        await connected(pc, "janus publisher")
        await asyncio.sleep(1)  # media flowing before anyone subscribes
        rows = await measure("janus", janus.pid, janus.endpoint(), feed, args.steps,
                             args.window, args.warm, args.procs)
        return {"system": "janus", "version": janus.version, "steps": rows}
    finally:
        await pc.close()
        await janus.stop()


def best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = [r for r in rows if r["viewers_per_core"] is not None]
    return max(ok, key=lambda r: r["viewers"]) if ok else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "benchmark": "broadcast_edge_viewers_per_core",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_start": machine_load()},
        "setup": {"video": "640x360 30 fps H.264 baseline 800 kbit/s, keyframe every 2 s "
                           "(pre-encoded, replayed)", "audio": "Opus 64 kbit/s, 20 ms",
                  "steps": args.steps, "window_s": args.window, "warm_s": args.warm,
                  "viewer_processes": args.procs,
                  "viewers": "aiortc peer connections counting packets (no jitter buffer, "
                             "no decoder)"},
        "goal_viewers_per_core": GOAL, "loss_limit": LOSS_LIMIT, "results": []}
    with tempfile.TemporaryDirectory(prefix="parley-bbench-edge-") as tmp:
        media = make_media(Path(tmp))
    for name, fn in (("parley-edge", run_parley), ("janus", run_janus)):
        if name in args.systems:
            try:
                out["results"].append(await fn(media, args))
            except Exception as exc:  # report, never hide, a system that could not be measured
                out["results"].append({"system": name, "error": f"{type(exc).__name__}: {exc}"})
                print(f"  {name}: {type(exc).__name__}: {exc}", flush=True)
    out["machine"]["loadavg_end"] = machine_load()
    summary = {r["system"]: best(r.get("steps", [])) for r in out["results"]}
    out["summary"] = {k: (v and {"viewers": v["viewers"], "viewers_per_core":
                                 v["viewers_per_core"], "cpu_us_per_packet":
                                 v["cpu_us_per_packet"]}) for k, v in summary.items()}
    p, j = summary.get("parley-edge"), summary.get("janus")
    if p and j:
        out["parley_vs_janus_viewers_per_core"] = round(
            p["viewers_per_core"] / j["viewers_per_core"], 2)
        out["parley_vs_janus_cpu_per_packet"] = round(
            p["cpu_us_per_packet"] / j["cpu_us_per_packet"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--viewers":
        asyncio.run(viewers_process(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.broadcast_edge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")],
                    default=[20, 50, 100])
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--warm", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=2, help="viewer processes")
    ap.add_argument("--systems", default="parley-edge,janus")
    ap.add_argument("--out", default=str(RESULTS / "broadcast_edge.json"))
    args = ap.parse_args(argv)
    result = asyncio.run(run(args))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Forwarding cost: Parley's call server vs Janus VideoRoom, same machine, same load, one run.

For each SFU: P publishers send stamped one-packet frames at F fps; subscribers are added in steps,
each receiving every publisher. Per step, over a fixed window: the SFU process's CPU time (all
threads, /proc) per forwarded packet, loss, subscriptions per core, and one-way latency
(publisher's send -> subscriber's arrival, same clock). A direct peer-to-peer pair measured the
same way gives the latency with no SFU, so "added" latency = via SFU - direct.

    python -m bench                      # full run (about 100 s), writes bench/results/
    python -m bench --quick              # smaller smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from aiortc import RTCSessionDescription

from .load import StampTrack, Stats, count_arrivals, cpu_seconds, percentile
from .sfus import JanusSfu, ParleySfu, Sfu, new_pc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


async def baseline(fps: float, seconds: float) -> dict[str, float]:
    """Latency of a direct aiortc publisher -> subscriber connection (no SFU)."""
    stats = Stats()
    pub, sub = new_pc(), new_pc()
    pub.addTransceiver(StampTrack(0, fps, stats), "sendonly")
    await pub.setLocalDescription(await pub.createOffer())
    await sub.setRemoteDescription(pub.localDescription)
    count_arrivals(sub, 0, stats)
    await sub.setLocalDescription(await sub.createAnswer())
    await pub.setRemoteDescription(RTCSessionDescription(sub.localDescription.sdp, "answer"))
    await asyncio.sleep(1.5)
    t0 = time.monotonic_ns()
    stats.reset(t0, t0 + int(seconds * 1e9))
    await asyncio.sleep(seconds + 0.3)
    await pub.close()
    await sub.close()
    return {"p50_ms": percentile(stats.latencies, 0.5) / 1e6,
            "p99_ms": percentile(stats.latencies, 0.99) / 1e6,
            "packets": stats.packets}


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound (seconds) of the histogram bucket holding quantile ``q`` of the window."""
    delta = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = delta.get(float("inf"), 0)
    if total <= 0:
        return float("nan")
    for le in sorted(delta):
        if delta[le] >= q * total:
            return le
    return float("inf")


async def run_sfu(sfu: Sfu, publishers: int, fps: float, steps: list[int], warm: float,
                  window: float, direct: dict[str, float]) -> dict[str, Any]:
    stats = Stats()
    await sfu.start()
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.probe", sfu.name, sfu.endpoint(), str(publishers),
        str(fps), cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert probe.stdin is not None and probe.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(probe.stdout.readline(), 60))
        if isinstance(sfu, JanusSfu):
            sfu.feeds = ready["feeds"]
        await asyncio.sleep(1.0)
        rows: list[dict[str, Any]] = []
        subs = 0
        for target in steps:
            while subs < target:
                await sfu.add_subscriber(subs, publishers, stats)
                subs += 1
            await asyncio.sleep(warm)
            hist0 = (await sfu.forward_latency_buckets()
                     if isinstance(sfu, ParleySfu) else None)
            # the window opens 0.3 s from now, so both processes count from the same instant
            t0 = time.monotonic_ns() + 300_000_000
            t1 = t0 + int(window * 1e9)
            probe.stdin.write(f"window {t0} {t1}\n".encode())
            stats.reset(t0, t1)
            await asyncio.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
            c0, w0 = cpu_seconds(sfu.pid), time.monotonic()
            me0 = cpu_seconds(os.getpid()) + cpu_seconds(probe.pid)
            await asyncio.sleep(window)
            c1, w1 = cpu_seconds(sfu.pid), time.monotonic()
            me1 = cpu_seconds(os.getpid()) + cpu_seconds(probe.pid)
            hist1 = (await sfu.forward_latency_buckets()
                     if isinstance(sfu, ParleySfu) else None)
            res = json.loads(await asyncio.wait_for(probe.stdout.readline(), window + 30))
            sent = sum(res["sent"].values())
            expected = sent * (subs + 1)  # bulk subscribers and the probe
            received = sum(len(v) for v in stats.received.values()) + res["received"]
            cpu, wall = c1 - c0, w1 - w0
            forwarded = stats.packets + res["packets"]
            row: dict[str, Any] = {
                "subscribers": subs + 1, "subscriptions": (subs + 1) * publishers,
                "packets_forwarded": forwarded,
                "pps_out": round(forwarded / window, 1),
                "sfu_cpu_fraction": round(cpu / wall, 4),
                "cpu_us_per_packet": round(cpu * 1e6 / forwarded, 2) if forwarded else None,
                "loss": round(max(0.0, 1 - received / expected), 5) if expected else None,
                "probe_latency_p50_ms": round(res["p50_ms"], 3),
                "probe_latency_p99_ms": round(res["p99_ms"], 3),
                "added_latency_p50_ms": round(res["p50_ms"] - direct["p50_ms"], 3),
                "added_latency_p99_ms": round(res["p99_ms"] - direct["p99_ms"], 3),
                "bulk_latency_p99_ms": round(percentile(stats.latencies, 0.99) / 1e6, 3),
                "load_clients_cpu_fraction": round((me1 - me0) / wall, 4),
            }
            if hist0 is not None and hist1 is not None:
                row["server_forward_time_p50_le_ms"] = bucket_quantile(hist0, hist1, 0.5) * 1e3
                row["server_forward_time_p99_le_ms"] = bucket_quantile(hist0, hist1, 0.99) * 1e3
            ok = row["loss"] is not None and row["loss"] <= 0.01 and row["sfu_cpu_fraction"] > 0
            row["subscriptions_per_core"] = (round(row["subscriptions"] / row["sfu_cpu_fraction"])
                                             if ok else None)
            if rows:
                # slope between steps: the cost of one more forwarded packet, without the fixed
                # cost of timers, RTCP and publishers that the per-step average carries
                prev = rows[-1]
                dp = row["pps_out"] - prev["pps_out"]
                dc = row["sfu_cpu_fraction"] - prev["sfu_cpu_fraction"]
                row["marginal_cpu_us_per_packet"] = round(dc * 1e6 / dp, 2) if dp > 0 else None
            rows.append(row)
            print(f"  {sfu.name:7} subs={row['subscriptions']:4} pps_out={row['pps_out']:8} "
                  f"cpu={row['sfu_cpu_fraction']:.3f} us/pkt={row['cpu_us_per_packet']} "
                  f"marginal={row.get('marginal_cpu_us_per_packet')} loss={row['loss']} "
                  f"probe p50={row['probe_latency_p50_ms']}ms "
                  f"p99={row['probe_latency_p99_ms']}ms", flush=True)
        passing = [r for r in rows if r["subscriptions_per_core"] is not None]
        best = max(passing, key=lambda r: r["subscriptions"]) if passing else None
        keys = ("cpu_us_per_packet", "marginal_cpu_us_per_packet", "subscriptions_per_core",
                "added_latency_p50_ms", "added_latency_p99_ms", "subscriptions")
        return {"sfu": sfu.name, "version": sfu.version, "steps": rows,
                "summary": {k: (best.get(k) if best else None) for k in keys}}
    finally:
        with contextlib.suppress(Exception):
            probe.stdin.write(b"quit\n")
            await asyncio.wait_for(probe.wait(), 10)
        if probe.returncode is None:
            probe.kill()
        await sfu.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    steps = [int(x) for x in args.steps.split(",")]
    direct = await baseline(args.fps, 3.0)
    print(f"  direct  p50={direct['p50_ms']:.3f}ms p99={direct['p99_ms']:.3f}ms", flush=True)
    out: dict[str, Any] = {
        "benchmark": "forwarding",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "load": {"publishers": args.publishers, "fps_per_publisher": args.fps,
                 "packets_per_frame": 1, "payload_bytes": 1000 + 4,
                 "subscriber_steps": steps, "warmup_s": args.warm, "window_s": args.window},
        "direct_p2p": direct,
        "results": [],
        "targets": {"cpu_us_per_packet": 20, "vs_janus_cpu_ratio": 2.0,
                    "added_latency_p99_ms": 5},
    }
    systems: list[Sfu] = [ParleySfu()]
    if not args.no_one_port:
        systems.append(ParleySfu(one_port=True))
    if not args.no_janus:
        systems.append(JanusSfu())
    for sfu in systems:
        try:
            out["results"].append(await run_sfu(sfu, args.publishers, args.fps, steps,
                                                 args.warm, args.window, direct))
        except Exception as exc:  # report, never hide, a system that could not be measured
            out["results"].append({"sfu": sfu.name, "error": f"{type(exc).__name__}: {exc}"})
            print(f"  {sfu.name}: {type(exc).__name__}: {exc}", flush=True)
    out["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    by = {r["sfu"]: r.get("summary") for r in out["results"]}
    for name in ("parley", "parley-1port"):
        if by.get(name) and by.get("janus") and by["janus"]["cpu_us_per_packet"]:
            out[f"{name}_vs_janus_cpu_ratio"] = round(
                by[name]["cpu_us_per_packet"] / by["janus"]["cpu_us_per_packet"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--fps", type=float, default=100.0)
    ap.add_argument("--steps", default="4,12,24", help="subscriber counts")
    ap.add_argument("--warm", type=float, default=2.5)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--no-janus", action="store_true")
    ap.add_argument("--no-one-port", action="store_true",
                    help="skip Parley in single-port mode (--udp-port)")
    ap.add_argument("--quick", action="store_true", help="2 publishers, 2 and 4 subscribers")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.publishers, args.steps, args.warm, args.window = 2, "2,4", 2.0, 3.0
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / "forwarding.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0

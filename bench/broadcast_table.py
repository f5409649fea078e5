"""Render the broadcast benchmarks' JSON (bench/results/broadcast_*.json) as the Markdown tables
of docs/benchmarks.md ("Broadcast")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def glass() -> str:
    lines = ["| run (UTC) | source, ladder | viewer at | frames | p50 | p95 | max | load avg "
             "(1 min) start / end |", "|---|---|---|---|---|---|---|---|"]
    for name in ("broadcast_glass.json", "broadcast_glass_marker.json",
                 "broadcast_glass_fixed.json", "broadcast_glass_360p.json",
                 "broadcast_glass_360p_marker.json", "broadcast_glass_360p_fixed.json"):
        d = _load(name)
        if d is None:
            continue
        s = d["setup"]
        run = f"{d['when'][11:16]}" + (" marker-jitter" if s.get("marker_jitter") else "") + (
            " roles: marker buffer" if s.get("roles_jitter_buffer") == "marker" else "")
        for viewer, v in d["viewers"].items():
            lines.append(f"| {run} | {s['source']}, {s['ladder']} | {viewer} | {v['frames']} | "
                         f"{v['p50_ms']} ms | {v['p95_ms']} ms | {v['max_ms']} ms | "
                         f"{d['machine']['loadavg_start'][0]} / "
                         f"{d['machine']['loadavg_end'][0]} |")
    return "\n".join(lines)


def hls() -> str:
    lines = ["| source, ladder | rung | frames presented | p50 | p95 | max | hls.js latency "
             "(median) | waiting events | load avg start / end |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in ("broadcast_hls.json", "broadcast_hls_360p.json"):
        d = _load(name)
        if d is None:
            continue
        s = d["setup"]
        for rung, v in d["rungs"].items():
            lines.append(f"| {s['source']}, {s['ladder']} | {rung} ({v['height']} lines) | "
                         f"{v['frames']} | {v['p50_ms']} ms | {v['p95_ms']} ms | "
                         f"{v['max_ms']} ms | {round(v['hlsjs_latency_s_median'] or 0, 2)} s | "
                         f"{v['waiting_events']} | {d['machine']['loadavg_start'][0]} / "
                         f"{v.get('loadavg_end', d['machine']['loadavg_end'])[0]} |")
    return "\n".join(lines)


def transcoder() -> str:
    d = _load("broadcast_transcoder.json")
    if d is None:
        return ""
    lines = ["| source (1080p30) | x264 preset | speed (x real time, wall) | per CPU second | "
             "decode ms/frame | decode + ladder ms/frame | out kbit/s 720p / 360p | load avg |",
             "|---|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        k = r["output_kbps"]
        lines.append(f"| {r['source']} | {r['preset']} | **{r['speed']}x** | "
                     f"{r['speed_per_cpu_s']}x | {r['decode_ms_per_frame']} | "
                     f"{r['ladder_ms_per_frame']} | {k.get('720p')} / {k.get('360p')} | "
                     f"{r['loadavg'][0]} |")
    return "\n".join(lines)


def edge() -> str:
    d = _load("broadcast_edge.json")
    if d is None:
        return ""
    lines = ["| system | viewers | packets/s out | CPU (cores) | CPU us/packet | loss mean / worst "
             "| viewers per core | viewer processes' CPU | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        if "error" in r:
            lines.append(f"| {r['system']} | not measured: {r['error']} ||||||||")
            continue
        for s in r["steps"]:
            lines.append(f"| {r['system']} | {s['viewers']} | {s['packets_out_per_s']} | "
                         f"{s['cpu_cores']} | {s['cpu_us_per_packet']} | "
                         f"{s['loss_mean']:.2%} / {s['loss_worst']:.2%} | "
                         f"{s['viewers_per_core'] or '- (loss > 1 %)'} | "
                         f"{s['viewer_procs_cpu_cores']} | {s['loadavg'][0]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for title, table in (("glass to glass, WebRTC", glass()), ("glass to glass, LL-HLS", hls()),
                         ("transcoder", transcoder()), ("edge", edge())):
        print(f"### {title}\n\n{table}\n")

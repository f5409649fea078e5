"""Render bench/results/forwarding.json as the Markdown table in docs/benchmarks.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "forwarding.json"


def render(path: Path = RESULTS) -> str:
    d = json.loads(path.read_text())
    lines = [
        "| SFU | subscriptions | packets/s out | SFU CPU (cores) | CPU us/packet | marginal "
        "us/packet | loss | probe latency p50 / p99 (ms) | added p50 / p99 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["results"]:
        if "error" in r:
            lines.append(f"| {r['sfu']} | not measured: {r['error']} |||||||| ")
            continue
        for s in r["steps"]:
            marginal = s.get("marginal_cpu_us_per_packet")
            lines.append(
                f"| {r['sfu']} | {s['subscriptions']} | {s['pps_out']:.0f} | "
                f"{s['sfu_cpu_fraction']:.3f} | {s['cpu_us_per_packet']} | "
                f"{marginal if marginal is not None else '-'} | {s['loss']:.2%} | "
                f"{s['probe_latency_p50_ms']:.2f} / {s['probe_latency_p99_ms']:.2f} | "
                f"{s['added_latency_p50_ms']:.2f} / {s['added_latency_p99_ms']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS))

"""Benchmark (not a test): how long from an event produced to Kafka until the engine's Prometheus
metric shows it, while the engine counts a steady load.

    .venv/bin/python -m bench.analytics_freshness [RATE] [PROBES]
    # writes bench/results/analytics_freshness.json

Needs the running test bed. One `parley analytics` process (Kafka -> the test bed's Redis, with
``--metrics-port``) counts a background load of RATE events/s (default 5,000: the issue's figure;
the test mix re-sent with fresh ids). Every 0.3 s a probe event (``config.changed`` from a region
of its own) is produced through the same producer settings signaling uses, and /metrics is read
every 10 ms until ``parley_analytics_events_total`` for that region has grown: the time from
``produce()`` to that scrape is the probe's freshness (it includes the producer's linger, the
engine's batch wait, the Lua step and the scrape; 10 ms resolution).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from bench.operator_meetings import _proc_stats
from parley.analytics.state import RedisState
from parley.events import KafkaSink, make_event
from tests.analytics.mix import build
from tests.conftest import ROOT, free_port, provision

RESULT = ROOT / "bench" / "results" / "analytics_freshness.json"
PROBE = {"maxHeight": 720, "maxFps": 30, "bandwidthKbps": 1500, "codecs": ["VP8"]}


def load(sink: KafkaSink, rate: int, stop: threading.Event, sent: list[int]) -> None:
    """``rate`` events a second from the test mix, in 10 ms slices, each with a fresh id."""
    events = build(2000).events
    tag, i, slice_n = uuid.uuid4().hex[:8], 0, max(rate // 100, 1)
    next_at = time.monotonic()
    while not stop.is_set():
        for _ in range(slice_n):
            e = dict(events[i % len(events)])
            e["id"] = f"{tag}-{i}"
            sink.emit(e)
            i += 1
        sent[0] = i
        next_at += 0.01
        time.sleep(max(next_at - time.monotonic(), 0))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main(rate: int, probes: int) -> dict:
    from confluent_kafka.admin import AdminClient, NewTopic

    env = provision.up()
    kafka, redis_url = env["KAFKA_BOOTSTRAP"], env["REDIS_URL"]
    tag = uuid.uuid4().hex[:8]
    topic, prefix, region = f"parley.events.fresh-{tag}", f"anfresh:{tag}:", f"probe-{tag}"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(10)
    port = free_port()
    pattern = re.compile(r'parley_analytics_events_total\{device="unknown",region="'
                         + re.escape(region) + r'",type="config.changed"\} ([0-9.e+]+)')
    state = RedisState(redis_url, prefix)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "analytics", "--kafka", kafka, "--topic", topic,
             "--group", f"fresh-{tag}", "--state", redis_url, "--prefix", prefix,
             "--archive", Path(tmp).as_uri(), "--metrics-port", str(port)],
            env=dict(os.environ), stdout=subprocess.DEVNULL)
        loader, prober = KafkaSink(kafka, topic, max_buffered=200_000), KafkaSink(kafka, topic)
        stop, sent = threading.Event(), [0]
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

        def seen() -> int:
            m = pattern.search(http.get("/metrics").text)
            return int(float(m.group(1))) if m else 0

        try:
            deadline = time.monotonic() + 60
            while True:  # the engine is up and in its group: a first probe comes through
                try:
                    prober.emit(make_event("config.changed", instance="bench", room="probe",
                                           region=region, data=PROBE))
                    prober.poll()
                    start = time.monotonic()
                    while time.monotonic() - start < 2 and seen() < 1:
                        time.sleep(0.05)
                    if seen() >= 1:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
                assert time.monotonic() < deadline, "engine never counted a probe"
            thread = threading.Thread(target=load, args=(loader, rate, stop, sent), daemon=True)
            thread.start()
            time.sleep(3)  # the load reaches its rate
            counted0, sent0, cpu0 = state.stats().get("counted", 0), sent[0], _proc_stats(
                proc.pid)[0]
            began = time.monotonic()
            latencies: list[float] = []
            have = seen()
            for _ in range(probes):
                at = time.monotonic()
                prober.emit(make_event("config.changed", instance="bench", room="probe",
                                       region=region, data=PROBE))
                prober.poll()
                while (now := seen()) <= have:
                    assert time.monotonic() - at < 30, "probe not visible within 30 s"
                    time.sleep(0.01)
                latencies.append(time.monotonic() - at)
                have = now
                time.sleep(max(0.3 - (time.monotonic() - at), 0))
            span = time.monotonic() - began
            counted = state.stats().get("counted", 0) - counted0
            engine_cpu = _proc_stats(proc.pid)[0] - cpu0
            offered = sent[0] - sent0
        finally:
            stop.set()
            proc.terminate()
            proc.wait(30)
            loader.close(10)
            prober.close(10)
            http.close()
    keys = list(state.r.scan_iter(prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        state.r.delete(*keys[i:i + 500])
    ms = [1000 * v for v in latencies]
    result = {
        "bench": "analytics_freshness", "rate_target": rate,
        "load_events_per_s": round(offered / span), "counted_per_s": round(counted / span),
        "engine_cpu_share": round(engine_cpu / span, 3), "probes": len(ms),
        "p50_ms": round(statistics.median(ms)), "p95_ms": round(pct(ms, 0.95)),
        "p99_ms": round(pct(ms, 0.99)), "max_ms": round(max(ms)),
        "note": "produce() -> parley_analytics_events_total grown on /metrics, scraped every "
                "10 ms; one engine, 4 partitions, test-bed Kafka and Redis, shared 2-core host",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(main(*(args + [5000, 100][len(args):])), indent=2))

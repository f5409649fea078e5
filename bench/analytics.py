"""Benchmark (not a test): analytics engine throughput from real Kafka into Redis.

    .venv/bin/python -m bench.analytics [ROOMS]   # writes bench/results/analytics.json

Needs the running test bed. Produces the test mix (tests/analytics/mix.py, ~13 events a room,
10 % duplicates) to a fresh 4-partition topic, then runs one `parley analytics` process and
times it from start to the last event counted; its CPU seconds give events per second per core,
over the whole process (imports, joining the group, archive flushes included) and over the
counting alone (from the first event counted to the last). Redis's CPU for the same span (the
Lua step per batch) is reported beside it, from INFO.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.operator_meetings import _proc_stats
from parley.analytics.state import RedisState
from parley.events import KafkaSink
from tests.analytics.mix import build
from tests.conftest import ROOT, provision

RESULT = ROOT / "bench" / "results" / "analytics.json"


def _redis_cpu(state: RedisState) -> float:
    info = state.r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main(rooms: int) -> dict:
    from confluent_kafka.admin import AdminClient, NewTopic

    env = provision.up()
    kafka, redis_url = env["KAFKA_BOOTSTRAP"], env["REDIS_URL"]
    tag = uuid.uuid4().hex[:8]
    topic, prefix = f"parley.events.bench-{tag}", f"anbench:{tag}:"
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(10)
    mix = build(rooms)
    sink = KafkaSink(kafka, topic, max_buffered=1_000_000)
    for e in mix.events:
        sink.emit(e)
    sink.close(60)
    state = RedisState(redis_url, prefix)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "analytics", "--kafka", kafka, "--topic", topic,
             "--group", f"bench-{tag}", "--state", redis_url, "--prefix", prefix,
             "--archive", Path(tmp).as_uri(), "--flush-seconds", "2"],
            env=dict(os.environ), stdout=subprocess.DEVNULL)
        first: tuple[float, float, int] | None = None  # wall, engine cpu, counted
        redis0 = _redis_cpu(state)
        try:
            while (counted := state.stats().get("counted", 0)) < mix.unique:
                assert time.monotonic() - started < 600, state.stats()
                if first is None and counted:
                    first = (time.monotonic(), _proc_stats(proc.pid)[0], counted)
                time.sleep(0.02)
            end = time.monotonic()
            wall = end - started
            cpu, rss = _proc_stats(proc.pid)
            redis_cpu = _redis_cpu(state) - redis0
        finally:
            proc.terminate()
            proc.wait(30)
    keys = list(state.r.scan_iter(prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        state.r.delete(*keys[i:i + 500])
    assert first is not None
    # the share of the mix read after the first count, in produced events (duplicates too)
    counting = len(mix.events) * (mix.unique - first[2]) / mix.unique
    result = {
        "bench": "analytics", "events": len(mix.events), "unique": mix.unique,
        "wall_s": round(wall, 2), "engine_cpu_s": round(cpu, 2), "engine_peak_rss_mb":
        round(rss / 2**20), "events_per_s": round(len(mix.events) / wall),
        "events_per_cpu_s": round(len(mix.events) / cpu) if cpu else None,
        "counting_wall_s": round(end - first[0], 2),
        "events_per_cpu_s_counting": round(counting / (cpu - first[1])),
        "redis_cpu_s": round(redis_cpu, 2),
        "events_per_cpu_s_with_redis": round(len(mix.events) / (cpu + redis_cpu)),
        "note": "wall and events_per_cpu_s include process start (imports), joining the "
                "consumer group and archive flushes; *_counting: first event counted to last",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7700), indent=2))

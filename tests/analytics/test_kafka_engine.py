"""The engine on the real Kafka broker: 100,000 events (10 % duplicates, shuffled times), two
instances in one consumer group, one SIGKILLed mid-way between storing a batch and committing its
offsets, a third started after; every aggregate is exact, the Parquet archive holds each event
once and a DuckDB query over it agrees."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from parley.analytics import series
from parley.analytics.state import RedisState
from parley.events import KafkaSink
from tests.analytics.mix import build
from tests.conftest import free_port, wait_until

ROOMS = 7000  # 102,227 events (92,934 unique): 10 % of them sent twice
CRASH_AFTER = 12  # batches (of up to 2,000) the doomed instance stores: mid-way through its share


def engine(kafka: str, topic: str, group: str, redis_url: str, prefix: str, archive: Path,
           log: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "analytics", "--kafka", kafka, "--topic", topic,
         "--group", group, "--state", redis_url, "--prefix", prefix, "--archive",
         archive.as_uri(), "--flush-seconds", "0.5",
         *(["--metrics-port", env.pop("metrics_port")] if "metrics_port" in env else [])],
        env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT)


@pytest.mark.kafka
@pytest.mark.redis
def test_100k_events_two_engines_one_killed_mid_way_count_every_event_once(
        kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    topic, group, prefix = f"parley.events.an-{tag}", f"an-{tag}", f"antest:{tag}:"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(10)
    mix = build(ROOMS)
    assert len(mix.events) >= 100_000
    sink = KafkaSink(kafka_bootstrap, topic, max_buffered=len(mix.events))
    for e in mix.events:  # signaling's producer, keyed as signaling keys them
        sink.emit(e)
    sink.close(30)

    archive, log = tmp_path / "archive", tmp_path / "engines.log"
    port = free_port()
    started = time.monotonic()
    doomed = engine(kafka_bootstrap, topic, group, redis_url, prefix, archive, log,
                    PARLEY_ANALYTICS_CRASH_AFTER_BATCHES=str(CRASH_AFTER))
    procs = [doomed]
    state = RedisState(redis_url, prefix)
    try:
        # the doomed instance owns the partitions first, then shares them: started together,
        # the survivor could win the first assignment and leave the doomed one fewer than
        # CRASH_AFTER batches (the rehearsal's failure: it never crashed)
        wait_until(lambda: state.stats().get("counted", 0) > 0 or doomed.poll() is not None,
                   60, what="the doomed instance counting")
        survivor = engine(kafka_bootstrap, topic, group, redis_url, prefix, archive, log,
                          metrics_port=str(port))
        procs.append(survivor)
        assert doomed.wait(40) == -signal.SIGKILL, log.read_text()
        at_kill = state.stats().get("counted", 0)
        assert 0 < at_kill < mix.unique, at_kill  # killed mid-way
        procs.append(engine(kafka_bootstrap, topic, group, redis_url, prefix, archive, log))

        wait_until(lambda: state.stats().get("counted", 0) >= mix.unique, 60,
                   what="every event counted")
        took = time.monotonic() - started
        stats = state.stats()
        assert stats["counted"] == mix.unique, stats
        # the produced duplicates, plus what the killed instance stored and never committed
        assert stats["duplicates"] >= len(mix.events) - mix.unique, stats

        totals = series.totals(state)
        for key, want in mix.totals.items():
            assert totals.get(key, 0) == want, (key, totals.get(key), want)
        assert sum(totals.values()) == sum(mix.totals.values())

        minutes = int((dt.datetime.now(dt.UTC) - mix.start).total_seconds() // 60) + 2
        got = series.read(state, "m", mix.start, minutes)
        for i, minute in enumerate(got.starts):
            assert got.get("participants")[i] == mix.present(minute), minute
        eu = series.read(state, "m", mix.start, minutes, region="eu-west")
        for i, minute in enumerate(eu.starts):
            assert eu.get("joined")[i] == mix.joined_per_minute[
                minute.strftime("%Y%m%d%H%M"), "eu-west"], minute

        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        want = mix.totals["events.participant.joined", "eu-west", "mobile"]
        assert re.search(r'parley_analytics_events_total\{device="mobile",region="eu-west",'
                         rf'type="participant.joined"\}} {want}\.0', text), text[-2000:]

        wait_until(lambda: not state.pending_hours(), 30, what="the archive flushed")
        out = subprocess.run(
            [sys.executable, "-m", "parley.cli", "analytics", "query",
             "SELECT count(*) AS n, count(DISTINCT id) AS ids, "
             "count(*) FILTER (WHERE type = 'participant.joined' AND region = 'eu-west') "
             "AS eu_joins FROM events", "--archive", archive.as_uri()],
            capture_output=True, text=True, timeout=30, check=True).stdout
        eu_joins = sum(v for (m, r, _), v in mix.totals.items()
                       if m == "joined" and r == "eu-west")
        assert re.search(rf"^{mix.unique}\s+\|\s+{mix.unique}\s+\|\s+{eu_joins}\s*$", out,
                         re.M), out
        print(f"{len(mix.events)} events ({mix.unique} unique) counted exactly in {took:.1f} s "
              f"with one instance SIGKILLed after {at_kill} were counted")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait(10)
        keys = list(state.r.scan_iter(prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            state.r.delete(*keys[i:i + 500])

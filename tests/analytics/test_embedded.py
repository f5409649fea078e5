"""The embedded path: the engine tails `parley up`'s JSONL file into SQLite; a SIGKILL right
after a batch is stored loses and doubles nothing; `parley analytics query` reads the archive;
malformed lines are counted and skipped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from parley.analytics import series
from parley.analytics.archive import Archive
from parley.analytics.state import SqliteState
from parley.events import JsonlSink
from parley.recorder.store import S3Store
from tests.analytics.mix import build


def analytics(data: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parley.cli", "analytics", "--data-dir",
                           str(data), *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


def test_jsonl_engine_is_exact_across_a_kill_and_the_archive_answers_queries(
        tmp_path: Path) -> None:
    mix = build(300, seed=7)
    half = len(mix.events) // 2
    sink = JsonlSink(tmp_path / "events.jsonl")
    for e in mix.events[:half]:
        sink.emit(e)
    sink._fh.write('{"not": "an event"}\nnot json at all\n')  # a reader must survive these
    sink._fh.flush()

    crashed = analytics(tmp_path, "--once", PARLEY_ANALYTICS_CRASH_AFTER_BATCHES="1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    state = SqliteState(tmp_path / "analytics.sqlite")
    first = state.stats()["counted"]
    assert 0 < first <= half

    for e in mix.events[half:]:
        sink.emit(e)
    sink.close()
    done = analytics(tmp_path, "--once")
    assert done.returncode == 0, done.stderr
    again = analytics(tmp_path, "--once")  # a restart reads from the stored offset: no-op
    assert again.returncode == 0, again.stderr

    assert state.stats()["counted"] == mix.unique
    totals = series.totals(state)
    for key, want in mix.totals.items():
        assert totals.get(key, 0) == want, (key, totals.get(key), want)

    out = analytics(tmp_path, "query", "SELECT type, count(*) AS n, count(DISTINCT id) AS ids "
                    "FROM events WHERE type = 'participant.dropped' GROUP BY type")
    assert out.returncode == 0, out.stderr
    dropped = sum(v for (m, _, _), v in mix.totals.items() if m == "dropped")
    assert re.search(rf"participant\.dropped\s+\|\s+{dropped}\s+\|\s+{dropped}\s*$", out.stdout,
                     re.M), out.stdout
    total = analytics(tmp_path, "query", "SELECT count(*) FROM events")
    assert re.search(rf"^{mix.unique}\s*$", total.stdout, re.M), total.stdout
    layout = sorted(p.relative_to(tmp_path / "archive").parts[:3]
                    for p in (tmp_path / "archive").rglob("*.parquet"))
    assert layout and all(re.fullmatch(r"date=\d{4}-\d\d-\d\d", d) and re.fullmatch(
        r"hour=\d\d", h) for _, d, h in layout), layout

    bad = analytics(tmp_path, "query", "SELECT nope FROM events")
    assert bad.returncode == 1 and "nope" in bad.stderr


@pytest.mark.s3
def test_archive_on_s3_with_retention(tmp_path: Path, s3: dict[str, str]) -> None:
    """A deployment's archive: the same layout in a bucket; `query` reads it; files of days
    past the retention are deleted."""
    env = {"PARLEY_S3_ENDPOINT": s3["endpoint"], "PARLEY_S3_ACCESS_KEY": s3["access_key"],
           "PARLEY_S3_SECRET_KEY": s3["secret_key"], "PARLEY_S3_REGION": s3["region"]}
    bucket = S3Store(f"parley-an-{uuid.uuid4().hex[:8]}", endpoint=s3["endpoint"],
                     access_key=s3["access_key"], secret_key=s3["secret_key"],
                     region=s3["region"])
    bucket.ensure_bucket()
    url = f"s3://{bucket.bucket}/archive"
    mix = build(40, seed=3)
    old = dict(mix.events[0], id="from-last-year", time="2025-01-02T03:04:05.000Z")
    sink = JsonlSink(tmp_path / "events.jsonl")
    for e in [*mix.events, old]:
        sink.emit(e)
    sink.close()
    ran = analytics(tmp_path, "--once", "--archive", url, **env)
    assert ran.returncode == 0, ran.stderr
    keys = S3Store(bucket.bucket, "archive", endpoint=s3["endpoint"],
                   access_key=s3["access_key"], secret_key=s3["secret_key"]).list("events/")
    assert any(k.startswith("events/date=2025-01-02/hour=03/") for k in keys), keys
    out = analytics(tmp_path, "query", "SELECT count(*) AS n, min(date) AS first FROM events",
                    "--archive", url, **env)
    assert re.search(rf"^{mix.unique + 1}\s+\|\s+2025-01-02\s*$", out.stdout, re.M), out

    state = SqliteState(tmp_path / "analytics.sqlite")
    gone = Archive(open_store_env(url, env), state, retention_days=30).enforce_retention()
    assert gone == 1
    out = analytics(tmp_path, "query", "SELECT count(*) AS n FROM events", "--archive", url,
                    **env)
    assert re.search(rf"^{mix.unique}\s*$", out.stdout, re.M), out


def open_store_env(url: str, env: dict[str, str]) -> S3Store:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return S3Store(parsed.netloc, parsed.path, endpoint=env["PARLEY_S3_ENDPOINT"],
                   access_key=env["PARLEY_S3_ACCESS_KEY"],
                   secret_key=env["PARLEY_S3_SECRET_KEY"], region=env["PARLEY_S3_REGION"])

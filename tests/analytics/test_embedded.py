"""The embedded path: the engine tails `parley up`'s JSONL file into SQLite; a SIGKILL right
after a batch is stored loses and doubles nothing; `parley analytics query` reads the archive;
malformed lines are counted and skipped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from parley.analytics import series
from parley.analytics.state import SqliteState
from parley.events import JsonlSink
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

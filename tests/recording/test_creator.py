"""The file creator on its own, from chunks in the real format (bench/recording_bench.py's
synthetic meeting): progress is reported while it works, a grid holds every participant."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.recording_bench import synth
from parley.recorder import state
from parley.recorder.creator import create_files, grid
from parley.recorder.store import LocalStore

from .media import packets, probe


def test_progress_is_reported_and_every_participant_is_in_the_grid(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    synth(store, "r", 6.0, (320, 180), participants=3)
    progress: list[float] = []
    result = create_files(store, "r", progress=progress.append, fps=15)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert len([p for p in progress if 0.05 < p < 1.0]) >= 4, progress  # during the transcode
    assert len(result["tracks"]) == 6 and result["composite"]["videos"] == 3
    out = tmp_path / "composite.mp4"
    store.get_file("recordings/r/files/composite.mp4", out)
    info = probe(out)
    assert info["streams"] == ["audio", "video"] and abs(info["duration"] - 6.0) < 0.3
    tiles = grid(3, 1280, 720)  # 2 x 2: three tiles filled, the fourth stays black
    assert tiles == [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 640, 360)]
    for t in result["tracks"]:
        path = tmp_path / t["file"]
        store.get_file(f"recordings/r/files/{t['file']}", path)
        assert len(packets(path)) == t["frames"]


def test_the_job_process_compiles_a_recording_from_the_store(tmp_path: Path) -> None:
    """What a Kubernetes Job runs: only the store URL and the recording id."""
    store = LocalStore(tmp_path / "store")
    synth(store, "job1", 3.0, (320, 180))
    state.save(store, {**state.new("room-j", "host"), "id": "job1", "state": "processing"})
    done = subprocess.run([sys.executable, "-m", "parley.recorder.job", "--store", store.url,
                           "--recording", "job1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["state"] == "ready"
    manifest = state.load(store, "job1")
    assert manifest["state"] == "ready" and manifest["progress"] == 1.0
    assert set(manifest["participants"]) == {"p0", "p1"}
    assert store.exists("recordings/job1/files/composite.mp4")
    assert [m["id"] for m in state.for_room(store, "room-j")] == ["job1"]
    # no media at all: the job fails with a clear error and a non-zero exit
    state.save(store, {**state.new("room-j", "host"), "id": "empty"})
    done = subprocess.run([sys.executable, "-m", "parley.recorder.job", "--store", store.url,
                           "--recording", "empty"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert state.load(store, "empty")["error"] == "recording empty has no media"

"""The file-creator Job in tests: a fresh bucket on the test bed's S3 server, a recording whose
chunks are real (bench/recording_bench.py's synthetic meeting through the real chunk writer),
and the Job's container command run as a local process (kwok nodes run no containers)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from bench.recording_bench import synth
from parley.recorder import state
from parley.recorder.store import S3Store


def s3_env(s3: dict[str, str]) -> dict[str, str]:
    """What the recorder Secret holds: the store's endpoint and keys as ``PARLEY_S3_*``."""
    return {"PARLEY_S3_ENDPOINT": s3["endpoint"], "PARLEY_S3_ACCESS_KEY": s3["access_key"],
            "PARLEY_S3_SECRET_KEY": s3["secret_key"], "PARLEY_S3_REGION": s3["region"]}


def new_bucket(s3: dict[str, str]) -> S3Store:
    store = S3Store(f"parley-fc-{uuid.uuid4().hex[:8]}", "recordings-test",
                    endpoint=s3["endpoint"], access_key=s3["access_key"],
                    secret_key=s3["secret_key"], region=s3["region"])
    store.ensure_bucket()
    return store


def record(store: S3Store, recording: str, seconds: float = 3.0) -> None:
    """Two participants' VP8 + Opus, chunked as the tap writes them."""
    synth(store, recording, seconds, (320, 180))  # type: ignore[arg-type]


def stopped_recording(store: S3Store, room: str) -> str:
    """What signaling leaves behind in job mode: chunks, a processing manifest, the marker."""
    recording = uuid.uuid4().hex
    record(store, recording)
    state.save(store, {**state.new(room, "host"), "id": recording, "state": "processing"})
    state.mark_pending(store, recording)
    return recording


def run_job_command(command: list[str], env: dict[str, str],
                    timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The container's command exactly as written; ``python`` is this virtualenv's (as in the
    image, where /opt/parley/bin comes first on PATH)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(command, env={**os.environ, **env, "PATH": path},
                          capture_output=True, text=True, timeout=timeout)

"""The broadcast path as processes on loopback, wired as the operator wires the roles:
ingest (WHIP in) -> transcoder (one ladder) -> relay -> edge (WHEP out), each its own
``parley media-node`` process (as tests/broadcast/test_tiers.py and test_transcoder.py run them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from parley import tokens

from .sfus import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "broadcast-bench-secret-of-at-least-32-bytes"
BROADCAST = "final"


def stream_key(source: str = "cam1") -> str:
    return tokens.mint(SECRET, identity=source, room=tokens.broadcast_room(BROADCAST),
                       grants=("publish",))


def roles_buffer() -> str:
    """Which video jitter buffer the roles' receivers use (frames.tap installs its own now)."""
    from parley.media.broadcast import frames

    return "marker" if hasattr(frames, "MarkerJitterBuffer") else "aiortc"


def machine_load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Chain:
    """Starts roles as subprocesses (logs in a temporary directory) and stops them all."""

    def __init__(self, marker_jitter: bool = False) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="parley-bbench-")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}
        self.env: dict[str, str] = {}
        if marker_jitter:  # the experiment of bench/broadcast_jitter.py, in every role
            from .broadcast_jitter import sitecustomize_dir

            site = sitecustomize_dir(Path(self.tmp.name) / "site")
            self.env["PYTHONPATH"] = os.pathsep.join(
                [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])

    def start(self, name: str, role: str, env: dict[str, str],
              cpus: str | None = None) -> str:
        port = free_port()
        log = (Path(self.tmp.name) / f"{name}.log").open("ab")
        cmd = [sys.executable, "-m", "parley.cli", "media-node", "--role", role,
               "--host", "127.0.0.1", "--port", str(port)]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={
            **os.environ, "PARLEY_BROADCAST": BROADCAST, "PARLEY_TOKEN_SECRET": SECRET,
            "PARLEY_WATCH_BROADCAST": "0", **self.env, **env})
        self.procs[name] = proc
        deadline = time.monotonic() + 30
        import socket

        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}: {self.log(name)[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not open its port")
            time.sleep(0.05)
        self.urls[name] = f"http://127.0.0.1:{port}"
        return self.urls[name]

    def log(self, name: str) -> str:
        return (Path(self.tmp.name) / f"{name}.log").read_text(errors="replace")

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def ingest(self) -> str:
        return self.start("ingest", "ingest", {"PARLEY_INGEST_SOURCES": "cam1"})

    def ladder(self, ladder: str, preset: str = "veryfast") -> dict[str, str]:
        """ingest -> transcoder -> relay -> edge; returns their base URLs."""
        ingest = self.ingest()
        rungs = ",".join(r.split(":")[0] for r in ladder.split(","))
        tx = self.start("transcoder", "transcoder", {
            "PARLEY_UPSTREAM_URL": f"{ingest}/live/{BROADCAST}/whep", "PARLEY_LADDER": ladder,
            "PARLEY_X264_PRESET": preset})
        relay = self.start("relay", "edge-relay", {
            "PARLEY_UPSTREAM_URL": f"{tx}/live/{BROADCAST}/{{rendition}}/whep",
            "PARLEY_RENDITIONS": rungs, "PARLEY_TIER": "relay"})
        edge = self.start("edge", "edge-relay", {
            "PARLEY_UPSTREAM_URL": f"{relay}/live/{BROADCAST}/{{rendition}}/whep",
            "PARLEY_RENDITIONS": rungs, "PARLEY_TIER": "edge"})
        return {"ingest": ingest, "transcoder": tx, "relay": relay, "edge": edge}

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.tmp.cleanup()

"""Real processes of a deployment on one machine: `parley media-node` call servers registered in
the test bed's Redis and `parley signaling` replicas placing meetings on them, one region."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from parley.tokens import control_key
from tests.conftest import SERVER_SECRETS, free_port, port_open, wait_until
from tests.media.client import TEST_SECRET


class Cluster:
    """Processes of one test; give it a Redis logical database of its own, so node sets (and
    signaling state) of other tests do not mix in."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.redis_url = redis_url
        self.tmp = tmp
        self.region = f"sfu-{uuid.uuid4().hex[:6]}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: dict[str, dict[str, Any]] = {}
        self.replicas: dict[str, subprocess.Popen[bytes]] = {}  # signaling base URL -> process
        self.secret = TEST_SECRET  # signaling's token secret; nodes get only its control key

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> tuple[Any, int]:
        port = free_port()
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "parley.cli", *args, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        self.procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what=name)
        assert proc.poll() is None, (self.tmp / f"{name}.log").read_text()
        return proc, port

    def node(self, suffix: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        node_id = f"{self.region}-{suffix}"
        env = dict(env or {})  # a node never holds the token secret: it gets the control key
        env.setdefault("PARLEY_CONTROL_KEY",
                       control_key(env.pop("PARLEY_TOKEN_SECRET", None) or self.secret))
        proc, port = self._start(node_id, [
            "media-node", "--role", "call-server", "--host", "127.0.0.1", "--node-id", node_id,
            "--region", self.region, "--redis-url", self.redis_url], env)
        self.nodes[node_id] = {"id": node_id, "proc": proc, "url": f"http://127.0.0.1:{port}"}
        return self.nodes[node_id]

    def signaling(self, env: dict[str, str] | None = None) -> str:
        """A replica sharing Redis and the data dir (so the recording store) with the others."""
        proc, port = self._start(f"signaling-{len(self.replicas) + 1}",
                                 ["signaling", "--host", "127.0.0.1"], {
            "PARLEY_REDIS_URL": self.redis_url, "PARLEY_REGION": self.region,
            "PARLEY_DATA_DIR": str(self.tmp / "data"), "PARLEY_TOKEN_SECRET": self.secret,
            **(env or {})})
        base = f"http://127.0.0.1:{port}"
        self.replicas[base] = proc
        SERVER_SECRETS[base] = (env or {}).get("PARLEY_TOKEN_SECRET") or self.secret
        return base

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

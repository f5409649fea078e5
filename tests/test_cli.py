"""The `parley` command line: what it prints and how it exits, against a real `parley up`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from parley import tokens

SECRET = "cli-test-secret-of-at-least-32-bytes-long"


def parley(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "parley.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_up_prints_its_url(parley_server: Callable[..., str], tmp_path: Path) -> None:
    base = parley_server()
    port = base.rsplit(":", 1)[1]
    log = (tmp_path / f"parley-{port}.log").read_text()
    assert f"Parley is running at http://127.0.0.1:{port}/" in log, log
    assert httpx.get(base + "/").status_code == 200


def test_token_prints_only_a_token_the_server_accepts(
        parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET})
    env = {"PARLEY_TOKEN_SECRET": SECRET}
    out = parley("token", "--room", "cli-room", "--identity", "ann", "--grant", "record",
                 "--grant", "subscribe", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1 and out.stdout.strip().count(".") == 2, out.stdout
    token = out.stdout.strip()

    def recordings(tok: str, room: str = "cli-room") -> httpx.Response:
        return httpx.get(f"{base}/api/v1/recordings", params={"room": room},
                         headers={"Authorization": f"Bearer {tok}"})

    assert recordings(token).status_code == 200
    assert recordings(token).json() == {"recordings": []}
    # the token admits its own room only
    other = recordings(token, "another-room")
    assert other.status_code == 401 and other.json()["detail"]["code"] == "token_invalid"
    # expired, and signed with another secret
    expired = tokens.mint(SECRET, identity="ann", room="cli-room", ttl_s=5,
                          now=time.time() - 60)
    r = recordings(expired)
    assert r.status_code == 401 and r.json()["detail"]["code"] == "token_expired", r.text
    forged = parley("token", "--room", "cli-room", "--identity", "ann",
                    env={"PARLEY_TOKEN_SECRET": "x" * 40}).stdout.strip()
    r = recordings(forged)
    assert r.status_code == 401 and r.json()["detail"]["code"] == "token_invalid", r.text
    # without the record grant, starting a recording is refused with the reason
    plain = parley("token", "--room", "cli-room", "--identity", "ann", env=env).stdout.strip()
    r = httpx.post(f"{base}/api/v1/rooms/cli-room/recording", json={"action": "start"},
                   headers={"Authorization": f"Bearer {plain}"})
    assert r.status_code == 403 and r.json()["detail"]["code"] == "grant_missing", r.text


def test_token_usage_errors_are_clear() -> None:
    out = parley("token", "--identity", "ann")
    assert out.returncode == 2 and "--room" in out.stderr and out.stdout == ""
    out = parley("token", "--room", "r", "--identity", "ann", "--grant", "root")
    assert out.returncode == 2 and "invalid choice: 'root'" in out.stderr
    for ttl in ("-5", "0", "86401"):  # lifetimes are capped: 1 s .. 24 h
        out = parley("token", "--room", "r", "--identity", "ann", f"--ttl={ttl}")
        assert out.returncode == 2 and "24 h" in out.stderr and out.stdout == ""


def test_every_role_exists_and_names_what_it_lacks() -> None:
    """No role is a stub any more: each one started without its upstream says which variable it
    needs and exits 1 (a pod in CrashLoopBackOff with a reason), and an unknown role is a usage
    error."""
    for role in ("transcoder", "recorder"):
        out = parley("media-node", "--role", role, env={"PARLEY_UPSTREAM_URL": ""})
        assert out.returncode == 1 and f"{role} needs PARLEY_UPSTREAM_URL" in out.stderr, out
    out = parley("media-node", "--role", "mixer")
    assert out.returncode == 2 and "invalid choice: 'mixer'" in out.stderr, out

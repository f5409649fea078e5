"""Attack: DNS rebinding and cross-site WebSockets. A page on evil.example that resolves its
name to 127.0.0.1 reaches `parley up` with its own Host; a cross-site page opens a WebSocket with
its own Origin. Both are refused (421 / 403 with a JSON body) before any route runs; allowed hosts
are configurable (PARLEY_ALLOWED_HOSTS); a deployed `parley signaling` answers any Host but still
refuses foreign Origins (docs/signaling.md, "Hosts and origins")."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import SERVER_SECRETS, free_port, port_open, wait_until
from tests.security.signaling_attack import alive
from tests.signaling.helpers import Client, user_token


def refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status and r.json()["detail"]["code"] == code, (r.status_code,
                                                                             r.text)


async def test_parley_up_refuses_foreign_hosts_and_origins(
        parley_server: Callable[..., str]) -> None:
    base = parley_server()
    port = base.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=base) as http:
        for host in ("evil.example", f"evil.example:{port}", "10.0.0.1"):
            refused(await http.get("/", headers={"Host": host}), 421, "host_not_allowed")
            refused(await http.post("/api/v1/guest-token", json={}, headers={"Host": host}),
                    421, "host_not_allowed")
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            assert (await http.get("/healthz", headers={"Host": host})).status_code == 200
        refused(await http.post("/api/v1/guest-token", json={},
                                headers={"Origin": "http://evil.example"}),
                403, "origin_not_allowed")
        refused(await http.post("/api/v1/guest-token", json={}, headers={"Origin": "null"}),
                403, "origin_not_allowed")
        ok = await http.post("/api/v1/guest-token", json={},
                             headers={"Origin": f"http://localhost:{port}"})
        assert ok.status_code == 200
    url = base.replace("http", "ws", 1) + "/ws?token=" + user_token(base, "victim")
    with pytest.raises(websockets.InvalidStatus) as refusal:
        await websockets.connect(url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refusal.value.response.status_code == 403
    assert b"origin_not_allowed" in refusal.value.response.body
    same_site = await Client.connect(base, "victim")
    await alive(same_site)
    ws = await websockets.connect(url, origin=f"http://127.0.0.1:{port}")  # type: ignore
    assert b'"welcome"' in (await ws.recv()).encode()
    await ws.close()
    await same_site.close()


async def test_allowed_hosts_are_configurable(parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_ALLOWED_HOSTS": "meet.example.org,127.0.0.1"})
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/healthz", headers={"Host": "meet.example.org"})).status_code \
            == 200
        refused(await http.get("/healthz", headers={"Host": "localhost"}), 421,
                "host_not_allowed")
        ok = await http.post("/api/v1/guest-token", json={},
                             headers={"Origin": "https://meet.example.org"})
        assert ok.status_code == 200


@pytest.fixture
def signaling(tmp_path: Path) -> Iterator[str]:
    """A real `parley signaling` (the deployed form: no embedded call server)."""
    port = free_port()
    log = (tmp_path / "signaling.log").open("wb")
    secret = "origin-test-secret-0123456789abcdef"
    proc = subprocess.Popen([sys.executable, "-m", "parley.cli", "signaling", "--host",
                             "127.0.0.1", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env={
                                **os.environ, "PARLEY_TOKEN_SECRET": secret,
                                "PARLEY_DATA_DIR": str(tmp_path / "data")})
    wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what="signaling")
    assert proc.poll() is None, (tmp_path / "signaling.log").read_text()
    base = f"http://127.0.0.1:{port}"
    SERVER_SECRETS[base] = secret
    yield base
    proc.terminate()
    proc.wait(10)


async def test_deployed_signaling_answers_any_host_but_not_foreign_origins(
        signaling: str) -> None:
    async with httpx.AsyncClient(base_url=signaling) as http:
        assert (await http.get("/healthz", headers={"Host": "10.1.2.3:8080"})).status_code == 200
        refused(await http.post("/api/v1/guest-token", json={}, headers={
            "Host": "meet.example.org", "Origin": "https://evil.example"}), 403,
            "origin_not_allowed")
        ok = await http.post("/api/v1/guest-token", json={}, headers={
            "Host": "meet.example.org", "Origin": "https://meet.example.org"})
        assert ok.status_code == 200
    url = signaling.replace("http", "ws", 1) + "/ws?token=" + user_token(signaling, "v")
    with pytest.raises(websockets.InvalidStatus) as refusal:
        await websockets.connect(url, origin="https://evil.example")  # type: ignore[arg-type]
    assert refusal.value.response.status_code == 403

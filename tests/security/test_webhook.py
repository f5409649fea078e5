"""The recording webhook is always signed: a signaling process configured with a webhook URL
but no secret refuses to start (a clear message, exit status 1, never listening), the same
process with a secret serves; and ``send`` itself never posts unsigned."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parley.recorder import webhook
from tests.conftest import free_port, port_open, wait_until


def _signaling(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return subprocess.Popen(
        [sys.executable, "-m", "parley.cli", "signaling", "--host", "127.0.0.1", "--port",
         str(port)], env={**base, "PARLEY_TOKEN_SECRET": "s" * 32,
                          "PARLEY_DATA_DIR": str(tmp_path), **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("secret", ["", "   "])
def test_signaling_refuses_to_start_with_a_webhook_but_no_secret(tmp_path: Path,
                                                                 secret: str) -> None:
    port = free_port()
    proc = _signaling(tmp_path, port, PARLEY_RECORDING_WEBHOOK_URL="http://127.0.0.1:9/hook",
                      PARLEY_RECORDING_WEBHOOK_SECRET=secret)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "PARLEY_RECORDING_WEBHOOK_SECRET is empty; refusing to start" in err
    assert "Traceback" not in err
    assert not port_open(port)


def test_signaling_starts_with_a_webhook_and_its_secret(tmp_path: Path) -> None:
    """The control: the same process, with a secret, serves."""
    port = free_port()
    proc = _signaling(tmp_path, port, PARLEY_RECORDING_WEBHOOK_URL="http://127.0.0.1:9/hook",
                      PARLEY_RECORDING_WEBHOOK_SECRET="a-long-random-secret")
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 60, what="signaling")
        assert proc.poll() is None, proc.communicate()[1]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_webhook_configuration_and_send_refuse_no_secret() -> None:
    assert webhook.from_env({}) is None  # no URL: no webhook, nothing to refuse
    assert webhook.from_env({webhook.URL_ENV: "https://hooks.example/p",
                             webhook.SECRET_ENV: "k"}) == webhook.Webhook(
        "https://hooks.example/p", "k")
    for env in ({webhook.URL_ENV: "https://hooks.example/p"},
                {webhook.URL_ENV: "file:///etc/passwd", webhook.SECRET_ENV: "k"}):
        with pytest.raises(webhook.WebhookConfigError):
            webhook.from_env(env)
    with pytest.raises(ValueError, match="always signed"):
        asyncio.run(webhook.send("http://127.0.0.1:9/hook", "", {"type": "recording.ready"}))

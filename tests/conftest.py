"""Fixtures over the real test bed (testbed/provision.py), started on demand.

A test that needs a real service asks for its fixture; the fixture starts the whole test bed when
it is not running. tests/realservices.py (loaded by addopts) turns the skip of a real-service test
into a failure.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("parley_testbed", ROOT / "testbed/provision.py")
assert _spec and _spec.loader
provision = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(provision)


@pytest.fixture(scope="session")
def testbed() -> dict[str, str]:
    """The running test bed's environment (KUBECONFIG, REDIS_URL, ...), started if needed."""
    env = provision.up()
    missing = {"KUBECONFIG", "REDIS_URL", "KAFKA_BOOTSTRAP", "TURN_URI", "TURN_SECRET",
               "PROMETHEUS_URL", "CHROMIUM", "S3_ENDPOINT"} - env.keys()
    assert not missing, f"test bed environment lacks {missing}"
    return env


@pytest.fixture(scope="session")
def redis_url(testbed: dict[str, str]) -> str:
    return testbed["REDIS_URL"]


@pytest.fixture(scope="session")
def kafka_bootstrap(testbed: dict[str, str]) -> str:
    return testbed["KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def turn(testbed: dict[str, str]) -> tuple[str, str]:
    """(TURN URI, shared secret)."""
    return testbed["TURN_URI"], testbed["TURN_SECRET"]


@pytest.fixture(scope="session")
def prometheus(testbed: dict[str, str]) -> tuple[str, Path]:
    """(Prometheus URL, folder of file_sd target files it scrapes every second)."""
    return testbed["PROMETHEUS_URL"], Path(testbed["PROMETHEUS_TARGETS_DIR"])


@pytest.fixture(scope="session")
def s3(testbed: dict[str, str]) -> dict[str, str]:
    """The S3-compatible store: endpoint, access_key, secret_key, region."""
    return {"endpoint": testbed["S3_ENDPOINT"], "access_key": testbed["S3_ACCESS_KEY"],
            "secret_key": testbed["S3_SECRET_KEY"], "region": testbed["S3_REGION"]}


class Kube:
    """kubectl and helm against the test bed's cluster."""

    def __init__(self, env: dict[str, str]):
        self.kubeconfig = env["KUBECONFIG"]
        self.kubectl_bin = env["KUBECTL"]
        self.helm_bin = env["HELM"]
        self.version = env["KUBE_VERSION"]
        self.env = {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kubectl_bin, *args], input=input, env=self.env, text=True,
                              capture_output=True, check=check, timeout=timeout)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str, check: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.helm_bin, *args, "--kubeconfig", self.kubeconfig],
                              env=self.env, text=True, capture_output=True, check=check,
                              timeout=timeout)

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.kubectl("create", "namespace", name)
        return name


@pytest.fixture(scope="session")
def kube(testbed: dict[str, str]) -> Kube:
    return Kube(testbed)


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, deleted afterwards (without waiting)."""
    name = kube.namespace(request.node.name.lower().replace("_", "-")[:30].strip("-"))
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def chromium(testbed: dict[str, str]) -> str:
    return testbed["CHROMIUM"]


CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """A headless Chromium (Debian's) driven by Playwright, with fake camera and microphone.

    Per module: sync Playwright keeps an event loop running in the main thread while it is open,
    which would break the asyncio tests of later modules."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def free_port() -> int:
    return provision.free_port()


def wait_until(check: Callable[[], Any], timeout: float = 10, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll until ``check()`` returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


# base URL of a server a test started -> its token secret, so tests can mint tokens for the
# identities they need (guest tokens get server-made identities; tests/signaling/helpers.py)
SERVER_SECRETS: dict[str, str] = {}


@pytest.fixture
def parley_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start `parley up` processes (real subprocesses) with extra environment; return base URLs."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str] | None = None, host: str = "127.0.0.1", **_: Any) -> str:
        port = free_port()
        data = tmp_path / f"parley-{port}"
        log = (tmp_path / f"parley-{port}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "up", "--host", host, "--port", str(port),
             "--data-dir", str(data)], env={**os.environ, **(env or {})}, stdout=log,
            stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what="parley up")
        assert proc.poll() is None, (tmp_path / f"parley-{port}.log").read_text()
        base = f"http://127.0.0.1:{port}"
        SERVER_SECRETS[base] = ({**os.environ, **(env or {})}.get("PARLEY_TOKEN_SECRET")
                                or (data / "token-secret").read_text().strip())
        return base

    yield start
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], limit: float, what: str) -> T:
    """Await until ``await check()`` is truthy and return it (``wait_until`` for coroutines)."""
    deadline = time.monotonic() + limit
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {limit}s waiting for {what}"
        await asyncio.sleep(0.1)

"""TURN relay attacks against the real coturn (the test bed's package) running the chart's own
rendered turnserver.conf: a TURN client asking to relay into loopback, private, link-local,
CGNAT, ULA or IPv4-mapped space gets 403 Forbidden IP; the call servers' range (allowed in values)
still relays; a user past its quota gets 486.

coturn refuses loopback peers on its own unless --allow-loopback-peers, so the server here runs
with that flag: every refusal below comes from the chart's denied-peer-ip lines (the control test
shows the same requests pass on the same config without them).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, Kube, free_port, port_open, provision, wait_until
from tests.security.turn_client import TurnClient, TurnError, rest_credential

pytestmark = [pytest.mark.k8s, pytest.mark.turn]
CHART = str(ROOT / "charts" / "parley")
SECRET = "turn-attack-secret"
CALL_SERVER_RANGE = "127.0.0.2"  # stands in for the call servers' pod range (values)
DENIED_V4 = ["127.0.0.1", "0.0.0.1", "10.0.0.1", "10.96.0.1", "100.64.0.1", "169.254.169.254",
             "172.16.0.1", "172.31.255.254", "192.168.1.1"]
DENIED_V6 = ["fc00::1", "fd12:3456::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
             "::ffff:169.254.169.254"]


def _rendered_conf(kube: Kube, port: int, lo: int) -> str:
    out = kube.helm("template", "t", CHART, "--kube-version", kube.version,
                    "--show-only", "templates/coturn.yaml",
                    "--set", f"coturn.port={port}", "--set", f"coturn.minPort={lo}",
                    "--set", f"coturn.maxPort={lo + 100}", "--set", "coturn.userQuota=2",
                    "--set", f"coturn.allowedPeerRanges={{{CALL_SERVER_RANGE}}}").stdout
    cm = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap")
    return cm["data"]["turnserver.conf"]


@contextmanager
def _coturn(conf_text: str, port: int, tmp: Path) -> Iterator[tuple[tuple[str, int], Path]]:
    """The test bed's coturn binary with this config (listening on 127.0.0.1:``port``, relaying
    on loopback for both families); (server address, log file)."""
    conf = tmp / "turnserver.conf"
    conf.write_text(conf_text)
    log = tmp / "turn.log"
    proc = subprocess.Popen(
        [provision.APT_PACKAGES["coturn"], "-c", str(conf), "--listening-ip=127.0.0.1",
         "--relay-ip=127.0.0.1", "--relay-ip=::1", "--allow-loopback-peers",
         f"--static-auth-secret={SECRET}", f"--log-file={log}", "--simple-log",
         f"--pidfile={tmp / 'turn.pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 20, what="coturn")
        assert proc.poll() is None, log.read_text() if log.exists() else "coturn exited"
        yield ("127.0.0.1", port), log
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def chart_turn(kube: Kube, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[tuple[str, int], Path]]:
    """coturn running the chart's rendered turnserver.conf."""
    port = free_port()
    with _coturn(_rendered_conf(kube, port, 20000 + port % 20000), port,
                 tmp_path_factory.mktemp("coturn")) as server:
        yield server


def _client(server: tuple[str, int], identity: str, secret: str = SECRET) -> TurnClient:
    return TurnClient(server, *rest_credential(secret, identity))


def test_relay_into_internal_ranges_is_forbidden(chart_turn: tuple[tuple[str, int], Path]
                                                 ) -> None:
    server, log = chart_turn
    v4 = _client(server, "mallory-v4")
    v6 = _client(server, "mallory-v6")
    try:
        assert v4.allocate()[0] == "127.0.0.1"
        assert v6.allocate(family=6)[0] == "::1"
        for client, peers in ((v4, DENIED_V4), (v6, DENIED_V6)):
            for peer in peers:
                with pytest.raises(TurnError) as refused:
                    client.permit(peer)
                assert refused.value.code == 403, (peer, str(refused.value))
        text = log.read_text()
        assert "denied in the range: 127.0.0.0-127.255.255.255" in text
        assert "denied in the range: ::ffff:0.0.0.0-::ffff:255.255.255.255" in text
    finally:
        v4.close()
        v6.close()


def test_only_the_call_server_range_is_relayed(chart_turn: tuple[tuple[str, int], Path]) -> None:
    """Data sent to a refused peer never arrives; data to the allowed range does, from the
    relayed address."""
    server, _ = chart_turn
    client = _client(server, "alice")
    denied = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    allowed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        denied.bind(("127.0.0.1", 0))
        allowed.bind((CALL_SERVER_RANGE, 0))
        allowed.settimeout(5)
        relayed = client.allocate()
        with pytest.raises(TurnError, match="403"):
            client.permit("127.0.0.1")
        client.permit(CALL_SERVER_RANGE)
        client.send(denied.getsockname(), b"to-loopback")
        client.send(allowed.getsockname(), b"to-call-server")
        data, source = allowed.recvfrom(100)
        assert (data, source) == (b"to-call-server", relayed)
        denied.setblocking(False)
        with pytest.raises(BlockingIOError):  # sent first, through the same relay: never came
            denied.recvfrom(100)
    finally:
        client.close()
        denied.close()
        allowed.close()


def test_user_quota_caps_allocations(chart_turn: tuple[tuple[str, int], Path]) -> None:
    """userQuota=2: a third concurrent allocation of the same TURN user is refused (486)."""
    server, _ = chart_turn
    user, password = rest_credential(SECRET, "greedy")
    clients = [TurnClient(server, user, password) for _ in range(3)]
    try:
        clients[0].allocate()
        clients[1].allocate()
        with pytest.raises(TurnError) as refused:
            clients[2].allocate()
        assert refused.value.code == 486
        other = _client(server, "someone-else")  # the quota is per user
        clients.append(other)
        assert other.allocate()
    finally:
        for c in clients:
            c.close()


def test_control_without_the_chart_denials_loopback_is_relayed(
        kube: Kube, tmp_path: Path) -> None:
    """The same config minus its denied-peer-ip lines grants the same requests: the 403s above
    come from the chart's lines, not from coturn's defaults or from this client."""
    port = free_port()
    conf = "\n".join(line for line in _rendered_conf(kube, port, 20000 + port % 20000)
                     .splitlines() if not line.startswith("denied-peer-ip="))
    with _coturn(conf, port, tmp_path) as (server, _):
        v4, v6 = _client(server, "control-v4"), _client(server, "control-v6")
        try:
            v4.allocate()
            v6.allocate(family=6)
            v4.permit("127.0.0.1")
            v4.permit("10.0.0.1")
            v6.permit("::ffff:127.0.0.1")
        finally:
            v4.close()
            v6.close()

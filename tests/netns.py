"""A network namespace of the test's own making, joined to the host by a veth pair, whose downlink
(host -> namespace) can be rate limited with tbf (tc netem is missing from this kernel; tbf
works, ../shared/notes/testbed.md). A real browser runs inside it through a launcher script, so
everything it receives crosses the throttle, as on a weak home link. Traffic never leaves the
machine: the only routes lead to the host end of the pair."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


@dataclass
class WeakLink:
    name: str
    host_if: str
    host_ip: str
    ns_ip: str

    def throttle(self, kbit: int, latency_ms: int = 250) -> None:
        """Limit what the host sends into the namespace to ``kbit``/s, with a queue of
        ``latency_ms`` in front of it and drops past that (a home router's buffer)."""
        burst = max(4000, kbit * 1000 // 8 // 50)  # about 20 ms of tokens
        sh("tc", "qdisc", "replace", "dev", self.host_if, "root", "tbf", "rate",
           f"{kbit}kbit", "burst", str(burst), "latency", f"{latency_ms}ms")

    def lift(self) -> None:
        sh("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)

    def launcher(self, executable: str, directory: Path) -> str:
        """A script that runs ``executable`` inside the namespace (for Playwright's
        ``executable_path``: it talks to the browser over pipes, which cross namespaces)."""
        path = directory / f"in-{self.name}.sh"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} "{executable}" "$@"\n')
        path.chmod(0o755)
        return str(path)


@contextlib.contextmanager
def weak_link(tag: str = "") -> Iterator[WeakLink]:
    """Create the namespace and veth pair; remove both on exit."""
    n = os.getpid() % 200 + 20
    name = f"parley-weak{tag}-{os.getpid()}"
    host_if, ns_if = f"pw{os.getpid()}a"[-15:], f"pw{os.getpid()}b"[-15:]
    host_ip, ns_ip = f"10.213.{n}.1", f"10.213.{n}.2"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", name)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        for cmd in (["ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if],
                    ["ip", "link", "set", ns_if, "up"], ["ip", "link", "set", "lo", "up"],
                    ["ip", "route", "add", "default", "via", host_ip]):
            sh("ip", "netns", "exec", name, *cmd)
        yield WeakLink(name, host_if, host_ip, ns_ip)
    finally:
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", name, check=False)

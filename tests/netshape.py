"""A throttled link of the test's own: a network namespace joined to the host by a veth pair,
whose host end shapes what the namespace receives with tbf (Linux's token bucket filter; netem
is not in this kernel). A process started inside (``ip netns exec``, e.g. a Chromium) reaches
the host only at ``host_ip``; nothing here routes anywhere else."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=10)


class Netns:
    """The namespace, its veth pair and the shaping of its downlink (host -> namespace)."""

    def __init__(self, tag: str) -> None:
        n = (os.getpid() * 7 + int(time.monotonic() * 1000)) % 16000
        self.name = f"parley-{tag}-{n}"
        self.host_if, self.inner_if = f"pv{n}h", f"pv{n}n"  # <= 15 characters
        self.host_ip = f"10.{200 + n // 4000}.{n % 4000 // 16}.{(n % 16) * 16 + 1}"
        self.inner_ip = self.host_ip[: self.host_ip.rfind(".") + 1] + str(
            int(self.host_ip.rsplit(".", 1)[1]) + 1)
        self.rate_kbit: int | None = None

    def create(self) -> None:
        if not shutil.which("tc") or not shutil.which("ip"):
            raise AssertionError("ip/tc (Debian's iproute2) are missing: run `make testbed`")
        run("ip", "netns", "add", self.name)
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.inner_if)
        run("ip", "link", "set", self.inner_if, "netns", self.name)
        # no IPv6 link-local address: the kernel adds it when its duplicate-address detection
        # ends, 1.6 s after the link comes up, a network change to every running Chromium that
        # fails its page loads in flight with net::ERR_NETWORK_CHANGED (a test's page then
        # never got its identity: "no identity within 15 s", 2 runs of test_throttled)
        run("ip", "link", "set", self.host_if, "addrgenmode", "none")
        run("ip", "addr", "add", f"{self.host_ip}/28", "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")
        inner = ("ip", "netns", "exec", self.name)
        run(*inner, "ip", "link", "set", self.inner_if, "addrgenmode", "none")
        run(*inner, "ip", "addr", "add", f"{self.inner_ip}/28", "dev", self.inner_if)
        run(*inner, "ip", "link", "set", self.inner_if, "up")
        run(*inner, "ip", "link", "set", "lo", "up")

    def throttle(self, kbit: int, latency_ms: int = 200) -> None:
        """Shape the namespace's downlink to ``kbit`` kbit/s with a queue of ``latency_ms`` (tbf
        drops what would wait longer), as a narrow access link does (their buffers hold
        hundreds of milliseconds; a 50 ms one dropped most of every keyframe burst)."""
        burst = max(4000, kbit * 1000 // 8 // 50)  # bytes: about 20 ms at the rate
        run("tc", "qdisc", "replace", "dev", self.host_if, "root", "tbf", "rate", f"{kbit}kbit",
            "burst", str(burst), "latency", f"{latency_ms}ms")
        self.rate_kbit = kbit

    def lift(self) -> None:
        if self.rate_kbit is not None:
            subprocess.run(["tc", "qdisc", "del", "dev", self.host_if, "root"],
                           capture_output=True, timeout=10)
            self.rate_kbit = None

    def dropped(self) -> int:
        """Packets tbf dropped so far (the throttle really bit)."""
        out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", self.host_if],
                             capture_output=True, text=True, timeout=10).stdout
        words = out.replace(",", " ").replace("(", " ").split()
        return int(words[words.index("dropped") + 1]) if "dropped" in words else 0

    def wrapper(self, folder: Path, exe: str) -> Path:
        """An executable that starts ``exe`` inside the namespace (for Playwright's
        ``executable_path``: the debugging pipe is inherited through ``ip netns exec``)."""
        path = folder / f"in-{self.name}.sh"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {exe} "$@"\n')
        path.chmod(0o755)
        return path

    def delete(self) -> None:
        self.lift()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)


@contextlib.contextmanager
def netns(tag: str) -> Iterator[Netns]:
    """A fresh namespace with a veth to the host; throttle, veth and namespace are removed on
    exit, whatever happened inside."""
    ns = Netns(tag)
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()

"""Cut a live network path between two local sockets with nftables (the kernel drops the
packets, as a failing firewall or NAT would). Loopback only: rules match local ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator


def nft(script: str) -> None:
    exe = shutil.which("nft") or "/usr/sbin/nft"
    if not os.path.exists(exe):
        raise AssertionError("nft (Debian's nftables) is missing: run `make testbed`")
    subprocess.run([exe, "-f", "-"], input=script.encode(), check=True, capture_output=True)


@contextlib.contextmanager
def cut(a_ports: Iterable[int], b_ports: Iterable[int]) -> Iterator[None]:
    """Drop every packet between a port in ``a_ports`` and one in ``b_ports`` (UDP and TCP,
    both directions) until the block exits."""
    a = ", ".join(str(p) for p in sorted(set(a_ports)))
    b = ", ".join(str(p) for p in sorted(set(b_ports)))
    table = f"parley_cut_{os.getpid()}"
    rules = "\n".join(
        f"    meta l4proto {{ udp, tcp }} th sport {{ {src} }} th dport {{ {dst} }} drop"
        for src, dst in ((a, b), (b, a)))
    nft(f"table inet {table} {{\n  chain input {{\n"
        f"    type filter hook input priority 0; policy accept;\n{rules}\n  }}\n}}\n")
    try:
        yield
    finally:
        nft(f"delete table inet {table}\n")

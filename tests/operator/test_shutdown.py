"""`parley operator` exits on SIGTERM (issue 9, item 9): with a pool and a Meeting it used to
log "Operator is stopping" and hang in asyncio's executor shutdown. It must exit within 5 s and
hand its lease over, so a standby leads at once instead of after the lease duration (15 s)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Kube, wait_until
from tests.operator.conftest import Operator, apply, cond, get, make_pool, meeting

pytestmark = pytest.mark.k8s

EXIT_BOUND_S = 5.0
LEASE_DURATION_S = 15.0  # LeaderElector's default; a takeover faster than this was handed over


def _holder(kube: Kube, namespace: str) -> str | None:
    lease = kube.json("get", "lease", "parley-operator", "-n", namespace)
    return lease["spec"].get("holderIdentity")


def test_sigterm_exits_within_5s_and_hands_the_lease_to_the_standby(
        kube: Kube, namespace: str, crds: None, tmp_path: Path) -> None:
    make_pool(kube, namespace, per_pod=100, headroom=0)
    a = Operator(kube, namespace, tmp_path, identity="op-a").start()
    b: Operator | None = None
    try:
        wait_until(lambda: "leader as op-a" in a.logs(), 30, 0.2, what="op-a leads")
        apply(kube, namespace, meeting("standup", region="eu", maxParticipants=10))
        wait_until(lambda: cond(get(kube, namespace, "mtg", "standup"), "Ready").get(
            "status") == "True", 60, 0.5, what="standup Ready")
        b = Operator(kube, namespace, tmp_path, identity="op-b").start()
        wait_until(lambda: "standby as op-b" in b.logs(), 30, 0.2, what="op-b stands by")
        assert _holder(kube, namespace) == "op-a"

        assert a.proc is not None
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        try:
            code = a.proc.wait(EXIT_BOUND_S)
        except Exception:
            a.proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack to the log
            time.sleep(1)
            pytest.fail(f"operator still running {EXIT_BOUND_S} s after SIGTERM:\n"
                        f"{a.logs()[-8000:]}")
        exited = time.monotonic() - t0
        assert code == 0, a.logs()[-3000:]
        assert "released lease" in a.logs()
        assert _holder(kube, namespace) in (None, "op-b")

        wait_until(lambda: _holder(kube, namespace) == "op-b", 5, 0.1,
                   what="op-b holds the lease")
        took = time.monotonic() - t0
        assert took < LEASE_DURATION_S / 2, f"standby took {took:.1f} s: not handed over"
        assert b.alive() and "leader as op-b" in b.logs()
        apply(kube, namespace, meeting("retro", region="eu", maxParticipants=10))
        wait_until(lambda: cond(get(kube, namespace, "mtg", "retro"), "Ready").get(
            "status") == "True", 60, 0.5, what="retro Ready under op-b")
        print(f"SIGTERM to exit {exited:.2f} s; to standby leading {took:.2f} s")
    finally:
        a.stop()
        if b is not None:
            b.stop()

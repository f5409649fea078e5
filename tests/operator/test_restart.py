"""Crash safety: kill -9 in the middle of reconciling, restart, converge without duplicates;
two replicas never both act, and the standby takes over when the leader dies."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import Kube, wait_until
from tests.operator.conftest import (
    Operator,
    apply,
    cond,
    get,
    make_pool,
    meeting,
    pool_state,
    wait_pool,
)
from tests.operator.test_broadcasts import BROADCAST

pytestmark = pytest.mark.k8s

N = 10


def _all_ready(kube: Kube, ns: str) -> list[dict] | None:
    items = kube.json("get", "meetings", "-n", ns)["items"]
    ok = [m for m in items if cond(m, "Ready").get("status") == "True"
          and cond(m, "Transcoding").get("status") == "True"]
    return items if len(ok) == N else None


def test_kill_mid_reconcile_then_restart_converges_without_duplicates(
        kube: Kube, namespace: str, crds: None, tmp_path: Path) -> None:
    pool = make_pool(kube, namespace, per_pod=100, headroom=1, max_replicas=30)
    for i in range(N):
        apply(kube, namespace, meeting(f"m{i}", region="eu", maxParticipants=60,
                                       transcoding={"enabled": True}))
    apply(kube, namespace, BROADCAST)
    op = Operator(kube, namespace, tmp_path).start()
    try:
        # Kill as soon as the first decision is visible: the rest is half done.
        wait_until(lambda: any(m.get("status") for m in kube.json(
            "get", "meetings", "-n", namespace)["items"]), 60, 0.05, what="first status")
        op.kill()
        partial = kube.json("get", "meetings", "-n", namespace)["items"]
        assert len([m for m in partial if cond(m, "Ready").get("status") == "True"]) < N, \
            "the operator finished before it was killed; the test proves nothing"
        op.start()
        items = wait_until(lambda: _all_ready(kube, namespace), 120, 1,
                           what="all meetings Ready after restart")
        # One pod per meeting (60 + 60 > 100), never two meetings over capacity.
        hosts = Counter(m["status"]["callServer"]["pod"] for m in items)
        assert len(hosts) == N and max(hosts.values()) == 1
        wait_pool(kube, namespace, pool, N + 1)
        spec, _, pods = pool_state(kube, namespace, pool)
        assert spec == N + 1 and {m["status"]["callServer"]["pod"] for m in items} <= {
            p["metadata"]["name"] for p in pods}
        # Exactly one transcoder per meeting, one ReplicaSet for the pool.
        transcoders = kube.json("get", "deployments", "-n", namespace, "-l",
                                "app.kubernetes.io/component=transcoder,parley.dev/meeting"
                                )["items"]
        assert sorted(d["metadata"]["name"] for d in transcoders) == sorted(
            f"m{i}-transcoder" for i in range(N))
        assert len({d["metadata"]["ownerReferences"][0]["uid"] for d in transcoders}) == N
        rs = kube.json("get", "replicasets", "-n", namespace, "-l",
                       "app.kubernetes.io/component=call-server,parley.dev/region=eu")["items"]
        assert len(rs) == 1
        workloads = kube.json("get", "deployments", "-n", namespace, "-l",
                              "parley.dev/broadcast=keynote")["items"]
        assert sorted(d["metadata"]["name"] for d in workloads) == [
            "keynote-edge-eu", "keynote-edge-us", "keynote-ingest", "keynote-relay",
            "keynote-tx-1080p", "keynote-tx-360p", "keynote-tx-720p"]

        # A clean restart of a converged system changes nothing.
        before = {m["metadata"]["name"]: m["status"] for m in items}
        replicas = spec
        op.stop()
        op.start()
        time.sleep(6)  # several resync periods
        after = {m["metadata"]["name"]: m["status"]
                 for m in kube.json("get", "meetings", "-n", namespace)["items"]}
        assert after == before
        assert pool_state(kube, namespace, pool)[0] == replicas
    finally:
        op.stop()


def test_two_replicas_one_leader_and_failover(kube: Kube, namespace: str, crds: None,
                                             tmp_path: Path) -> None:
    make_pool(kube, namespace, per_pod=100, headroom=0)
    a = Operator(kube, namespace, tmp_path, identity="op-a").start()
    wait_until(lambda: "leader as op-a" in a.logs(), 30, 0.2, what="op-a leads")
    b = Operator(kube, namespace, tmp_path, identity="op-b").start()
    try:
        apply(kube, namespace, meeting("first", region="eu", maxParticipants=10))
        wait_until(lambda: cond(get(kube, namespace, "mtg", "first"), "Ready").get(
            "status") == "True", 60, 0.5, what="first Ready")
        time.sleep(2)
        assert b.alive() and "leader as" not in b.logs()  # the standby does nothing
        assert "Handler" not in b.logs()
        lease = kube.json("get", "lease", "parley-operator", "-n", namespace)
        assert lease["spec"]["holderIdentity"] == "op-a"

        a.kill()  # no hand-over: b must wait for the lease to expire (15 s)
        apply(kube, namespace, meeting("second", region="eu", maxParticipants=10))
        wait_until(lambda: cond(get(kube, namespace, "mtg", "second"), "Ready").get(
            "status") == "True", 60, 0.5, what="second Ready after failover")
        lease = kube.json("get", "lease", "parley-operator", "-n", namespace)
        assert lease["spec"]["holderIdentity"] == "op-b"
        assert lease["spec"]["leaseTransitions"] >= 1
        assert "took over lease" in b.logs()
    finally:
        a.stop()
        b.stop()

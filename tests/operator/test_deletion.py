"""Deleting what the operator serves needs no operator: no finalizer on any Meeting, Broadcast
or call-server pool, even after many resync passes, so `kubectl delete` returns while the
operator is down (cleanup is garbage collection through owner references)."""

from __future__ import annotations

import pytest

from parley.operator import reports
from tests.conftest import Kube, wait_until
from tests.operator.conftest import Operator, apply, cond, get, make_pool, meeting
from tests.operator.test_broadcasts import BROADCAST, _edge_replicas, _viewers

pytestmark = pytest.mark.k8s

KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def test_nothing_the_operator_serves_carries_a_finalizer(kube: Kube, namespace: str,
                                                         operator: Operator) -> None:
    pool = make_pool(kube, namespace, per_pod=100, headroom=0)
    apply(kube, namespace, meeting("standup", region="eu", maxParticipants=50))
    apply(kube, namespace, meeting("pair", topology="p2p", maxParticipants=2))
    apply(kube, namespace, BROADCAST)

    def ready(kind: str, name: str) -> dict | None:
        obj = get(kube, namespace, kind, name)
        return obj if cond(obj, "Ready").get("status") == "True" else None

    standup = wait_until(lambda: ready("mtg", "standup"), 60, 0.5, what="standup Ready")
    wait_until(lambda: ready("mtg", "pair"), 60, 0.5, what="pair Ready")
    wait_until(lambda: ready("bcast", "keynote"), 90, 0.5, what="keynote Ready")

    # Proof that resync passes ran over each kind: what only they pick up (reports, which
    # no watch event announces) shows in the Meeting's status and the Broadcast's edges.
    reports.publish(namespace, standup["status"]["callServer"]["pod"], role="call-server",
                    region="eu", meetings={f"{namespace}/standup": 3})
    wait_until(lambda: get(kube, namespace, "mtg", "standup")["status"].get(
        "participants") == 3, 30, 0.5, what="participants from the report")
    _viewers(namespace, eu=350, us=0)
    wait_until(lambda: _edge_replicas(kube, namespace) == {"eu": 4, "us": 2}, 30, 0.5,
               what="edges follow reported viewers")

    objects = [("meeting", "standup"), ("meeting", "pair"), ("broadcast", "keynote"),
               ("deployment", pool)]
    for kind, name in objects:
        finalizers = get(kube, namespace, kind, name)["metadata"].get("finalizers")
        assert not finalizers, (kind, name, finalizers)

    operator.stop()
    for kind, name in objects:
        kube.kubectl("delete", kind, name, "-n", namespace, "--wait=true", "--timeout=30s")
        gone = kube.kubectl("get", kind, name, "-n", namespace, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, (kind, name, gone.stdout)
    assert KOPF_FINALIZER not in kube.kubectl("get", "meetings,broadcasts", "-n", namespace,
                                              "-o", "yaml").stdout

"""Meetings against the real cluster: reservation, placement, rescaling, drain, release."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from pathlib import Path

import pytest

from parley.operator import reports
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

pytestmark = pytest.mark.k8s


def _ready(kube: Kube, ns: str, name: str, timeout: float = 60) -> dict:
    def check() -> dict | None:
        m = get(kube, ns, "mtg", name)
        return m if cond(m, "Ready").get("status") == "True" else None

    return wait_until(check, timeout, 0.5, what=f"Meeting {name} Ready")


def _events(kube: Kube, ns: str, name: str) -> set[str]:
    items = kube.json("get", "events", "-n", ns,
                      "--field-selector", f"involvedObject.name={name}")["items"]
    return {e["reason"] for e in items}


def test_meeting_is_placed_on_a_ready_pool_pod(kube: Kube, namespace: str,
                                               operator: Operator) -> None:
    pool = make_pool(kube, namespace, per_pod=100, headroom=1)
    apply(kube, namespace, meeting("standup", region="eu", maxParticipants=50,
                                   recording={"enabled": True}, title="Daily standup"))
    m = _ready(kube, namespace, "standup")
    wait_pool(kube, namespace, pool, 2)  # 50 participants fit one pod, plus one of headroom
    _, _, pods = pool_state(kube, namespace, pool)
    by_name = {p["metadata"]["name"]: p for p in pods}
    cs = m["status"]["callServer"]
    assert cs["pod"] in by_name
    host = by_name[cs["pod"]]
    assert any(c["type"] == "Ready" and c["status"] == "True"
               for c in host["status"]["conditions"])
    assert cs["endpoint"] == f"{host['status']['podIP']}:7882"
    assert m["status"]["joinUrl"].endswith(f"/m/{namespace}.standup")
    assert m["status"]["observedGeneration"] == 1
    assert m["status"]["reservedParticipants"] == 50
    for c in m["status"]["conditions"]:
        assert c["observedGeneration"] == 1 and c["reason"] and c["message"]
    assert cond(m, "CapacityReserved")["status"] == "True"

    # Recording runs in the call server once someone joins (tests/operator/test_directory.py
    # records for real); until then the condition says what it waits for. Nothing else runs.
    rec = cond(m, "Recording")
    assert (rec["status"], rec["reason"]) == ("False", "WaitingForParticipants"), rec
    assert kube.json("get", "deployments", "-n", namespace, "-l",
                     "parley.dev/meeting")["items"] == []
    assert m["metadata"].get("finalizers") is None  # all cleanup is garbage collection

    # Participant counts come from the call server's report.
    reports.publish(namespace, cs["pod"], role="call-server", region="eu",
                    meetings={f"{namespace}/standup": 7})
    live = wait_until(lambda: (lambda m: m if m["status"].get("phase") == "Live" else None)(
        get(kube, namespace, "mtg", "standup")), 30, 0.5, what="phase Live")
    assert live["status"]["participants"] == 7
    assert {"Placed", "PhaseLive"} <= _events(kube, namespace, "standup")
    assert "PoolScaled" in _events(kube, namespace, pool)

    # Metrics: reconciles, latency, managed meetings and the pool size.
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith("parley_operator")}
    assert values['parley_operator_reconciles_total{kind="CallServerPool"}'] > 0
    assert values['parley_operator_reconcile_seconds_count{kind="CallServerPool"}'] > 0
    assert values['parley_operator_managed{kind="Meeting"}'] == 1
    assert values[f'parley_operator_pool_replicas{{namespace="{namespace}",region="eu",'
                  f'state="desired"}}'] == 2


def test_raising_max_participants_rescales_and_delete_collects(
        kube: Kube, namespace: str, operator: Operator) -> None:
    pool = make_pool(kube, namespace, per_pod=100, headroom=1)
    apply(kube, namespace, meeting("allhands", region="eu", maxParticipants=50,
                                   transcoding={"enabled": True}))
    first = _ready(kube, namespace, "allhands")
    wait_pool(kube, namespace, pool, 2)
    host = first["status"]["callServer"]["pod"]

    kube.kubectl("patch", "mtg", "allhands", "-n", namespace, "--type=merge",
                 "-p", '{"spec":{"maxParticipants":250}}')
    # 250 = the primary pod plus two cascade pods, plus one of headroom.
    wait_pool(kube, namespace, pool, 4)
    m = wait_until(lambda: (lambda m: m if m["status"].get("observedGeneration") == 2 else None)(
        get(kube, namespace, "mtg", "allhands")), 30, 0.5, what="observedGeneration 2")
    assert m["status"]["reservedParticipants"] == 250
    assert "250 participants reserved" in cond(m, "CapacityReserved")["message"]
    assert m["status"]["callServer"]["pod"] == host  # a resize does not move the meeting

    kube.kubectl("patch", "mtg", "allhands", "-n", namespace, "--type=merge",
                 "-p", '{"spec":{"maxParticipants":50}}')
    wait_pool(kube, namespace, pool, 2)
    _, _, pods = pool_state(kube, namespace, pool)
    assert host in {p["metadata"]["name"] for p in pods}, "scale-down removed a busy pod"
    assert get(kube, namespace, "mtg", "allhands")["status"]["callServer"]["pod"] == host

    wait_until(lambda: kube.kubectl("get", "deployment", "allhands-transcoder", "-n",
                                    namespace, check=False).returncode == 0, 30, 0.5,
               what="transcoder Deployment")
    # the meeting transcoder (docs/call-server.md): its role, and what it announces in Redis
    tx = kube.json("get", "deployment", "allhands-transcoder", "-n", namespace)
    media = tx["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in media["env"]}
    assert media["args"] == ["media-node", "--role", "transcoder"]
    assert env["PARLEY_MEETING"] == f"{namespace}/allhands"
    assert env["PARLEY_MEDIA_PORT"] == "7882"
    assert env["POD_IP"]["fieldRef"]["fieldPath"] == "status.podIP"
    kube.kubectl("delete", "mtg", "allhands", "-n", namespace, "--wait=true")
    wait_until(lambda: kube.kubectl("get", "deployment", "allhands-transcoder", "-n",
                                    namespace, check=False).returncode != 0, 60, 0.5,
               what="transcoder garbage-collected")
    wait_pool(kube, namespace, pool, 1)  # only the headroom pod is left


def test_scale_down_removes_only_drained_pods(kube: Kube, namespace: str,
                                              operator: Operator) -> None:
    pool = make_pool(kube, namespace, per_pod=100, headroom=1, drain=600)
    for name in ("a", "b", "c"):
        apply(kube, namespace, meeting(name, region="eu", maxParticipants=60))
    hosts = {n: _ready(kube, namespace, n)["status"]["callServer"]["pod"] for n in "abc"}
    assert len(set(hosts.values())) == 3  # 60 + 60 > 100: one pod each
    wait_pool(kube, namespace, pool, 4)

    # Shrink the pool below what is in use: the headroom pod goes at once, one busy pod is
    # drained (no new meetings) but stays while its meeting runs.
    kube.kubectl("annotate", "deployment", pool, "-n", namespace, "--overwrite",
                 "parley.dev/max-replicas=2")
    wait_pool(kube, namespace, pool, 3)

    def draining() -> list[str]:
        return [p["metadata"]["name"] for p in pool_state(kube, namespace, pool)[2]
                if "parley.dev/draining-since" in p["metadata"].get("annotations", {})]

    drained = wait_until(draining, 30, 0.5, what="a draining pod")
    assert len(drained) == 1 and drained[0] in hosts.values()
    victim = next(n for n, pod in hosts.items() if pod == drained[0])
    assert set(p["metadata"]["name"] for p in pool_state(kube, namespace, pool)[2]) == set(
        hosts.values())

    kube.kubectl("delete", "mtg", victim, "-n", namespace)
    wait_pool(kube, namespace, pool, 2)
    left = {p["metadata"]["name"] for p in pool_state(kube, namespace, pool)[2]}
    assert left == set(hosts.values()) - {drained[0]}
    assert "Draining" in _events(kube, namespace, drained[0])


def test_drain_deadline_evicts_and_reports_exhaustion(kube: Kube, namespace: str,
                                                      operator: Operator) -> None:
    pool = make_pool(kube, namespace, per_pod=100, headroom=0, drain=2)
    for name in ("a", "b"):
        apply(kube, namespace, meeting(name, region="eu", maxParticipants=60))
    for name in "ab":
        _ready(kube, namespace, name)
    wait_pool(kube, namespace, pool, 2)
    kube.kubectl("annotate", "deployment", pool, "-n", namespace, "--overwrite",
                 "parley.dev/max-replicas=1")
    wait_pool(kube, namespace, pool, 1)  # after the 2 s deadline the drained pod goes

    def exhausted() -> dict | None:
        for name in "ab":
            m = get(kube, namespace, "mtg", name)
            if cond(m, "CapacityReserved").get("reason") == "PoolExhausted":
                return m
        return None

    m = wait_until(exhausted, 30, 0.5, what="a meeting with PoolExhausted")
    assert m["status"]["phase"] == "Pending" and not m["status"].get("callServer")
    assert "raise the pool's parley.dev/max-replicas annotation" in cond(
        m, "CapacityReserved")["message"]


def test_p2p_needs_no_pool_and_missing_pool_is_explained(kube: Kube, namespace: str,
                                                         operator: Operator) -> None:
    apply(kube, namespace, meeting("pair", topology="p2p", maxParticipants=2))
    m = _ready(kube, namespace, "pair")
    assert cond(m, "Ready")["reason"] == "PeerToPeer" and not m["status"].get("callServer")
    apply(kube, namespace, meeting("lost", region="mars", topology="sfu"))
    m = wait_until(lambda: (lambda m: m if cond(m, "CapacityReserved").get("reason") ==
                            "PoolNotFound" else None)(get(kube, namespace, "mtg", "lost")),
                   30, 0.5, what="PoolNotFound")
    assert m["status"]["phase"] == "Pending"
    assert "parley.dev/region=mars" in cond(m, "CapacityReserved")["message"]
    assert "callServer.pools" in cond(m, "CapacityReserved")["message"]
    # Creating the pool later is picked up without touching the meeting.
    make_pool(kube, namespace, region="mars")
    _ready(kube, namespace, "lost")


def test_schedule_prescales_then_releases(kube: Kube, namespace: str, crds: None,
                                          tmp_path: Path) -> None:
    op = Operator(kube, namespace, tmp_path, env={"PARLEY_PRESCALE_SECONDS": "60"}).start()
    try:
        pool = make_pool(kube, namespace, per_pod=100, headroom=1)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)

        def at(seconds: int) -> str:
            return (now + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

        apply(kube, namespace, meeting("later", region="eu", maxParticipants=100,
                                       schedule={"start": at(3600)}))
        apply(kube, namespace, meeting("soon", region="eu", maxParticipants=100,
                                       schedule={"start": at(40)}))
        apply(kube, namespace, meeting("short", region="eu", maxParticipants=100,
                                       recording={"enabled": True},
                                       schedule={"start": at(-60), "end": at(25)}))
        soon = _ready(kube, namespace, "soon")
        assert soon["status"]["phase"] == "Scheduled"  # placed ahead of its start
        assert soon["status"]["reservedParticipants"] == 100
        later = get(kube, namespace, "mtg", "later")
        assert later["status"]["phase"] == "Scheduled"
        assert later["status"]["reservedParticipants"] == 0
        assert cond(later, "CapacityReserved")["reason"] == "NotYetReserved"
        short = _ready(kube, namespace, "short")
        assert short["status"]["phase"] in ("Ready", "Live")
        wait_pool(kube, namespace, pool, 3)  # soon + short + headroom; later not yet
        # this operator has no Redis directory: it says why the recording cannot start
        assert cond(short, "Recording")["reason"] == "NoDirectory"

        ended = wait_until(lambda: (lambda m: m if m["status"].get("phase") == "Ended" else None)(
            get(kube, namespace, "mtg", "short")), 60, 0.5, what="phase Ended")
        assert not ended["status"].get("callServer")
        assert cond(ended, "CapacityReserved")["reason"] == "Released"
        assert cond(ended, "Recording")["reason"] == "Ended"
        wait_pool(kube, namespace, pool, 2)
        assert "Released" in {e["reason"] for e in kube.json(
            "get", "events", "-n", namespace,
            "--field-selector", "involvedObject.name=short")["items"]}
        json.dumps(ended)
    finally:
        op.stop()

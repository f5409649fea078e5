"""The pool arithmetic on its own (pure functions, no cluster)."""

from __future__ import annotations

from parley.operator.placement import Demand, PodInfo, PoolSettings, plan_pool
from parley.operator.resources import edge_replicas

S = PoolSettings(participants_per_pod=100, headroom_pods=1, min_replicas=1, max_replicas=5,
                 drain_deadline_seconds=60)


def test_best_fit_packs_and_keeps_existing_placements() -> None:
    pods = [PodInfo("a", True), PodInfo("b", True)]
    plan = plan_pool(pods, [Demand("x", 70, "a"), Demand("y", 30), Demand("z", 50)], S, 2, 0)
    assert plan.placements == {"x": "a", "y": "a", "z": "b"}
    assert plan.replicas == 3  # two busy pods + headroom


def test_unready_and_draining_pods_take_no_new_meetings() -> None:
    pods = [PodInfo("a", False), PodInfo("b", True, draining_since=10.0)]
    plan = plan_pool(pods, [Demand("x", 10)], S, 2, now=20)
    assert plan.placements == {"x": None} and plan.replicas == 2


def test_scale_down_removes_empty_pods_and_drains_busy_ones() -> None:
    pods = [PodInfo("a", True), PodInfo("b", True), PodInfo("c", True)]
    small = PoolSettings(participants_per_pod=100, headroom_pods=0, max_replicas=1)
    plan = plan_pool(pods, [Demand("x", 60, "a"), Demand("y", 60, "b")], small, 3, 0)
    assert plan.removable == ["c"] and plan.drain == ["a"] and plan.replicas == 2


def test_drain_deadline_frees_the_pod_and_exhausts() -> None:
    pods = [PodInfo("a", True, draining_since=0.0), PodInfo("b", True)]
    small = PoolSettings(participants_per_pod=100, headroom_pods=0, max_replicas=1,
                         drain_deadline_seconds=5)
    plan = plan_pool(pods, [Demand("x", 60, "a"), Demand("y", 60, "b")], small, 2, now=10)
    assert plan.removable == ["a"] and plan.replicas == 1
    assert plan.placements["x"] is None and plan.exhausted == {"x"}


def test_big_meeting_reserves_cascade_pods() -> None:
    plan = plan_pool([PodInfo("a", True)], [Demand("x", 250, "a")], S, 1, 0)
    assert plan.replicas == 4  # primary + 2 cascade + headroom


def test_edge_replicas_follow_viewers_within_bounds() -> None:
    assert [edge_replicas(v, 100, 1, 4) for v in (0, 1, 100, 101, 250, 10_000)] == [
        1, 1, 1, 2, 3, 4]

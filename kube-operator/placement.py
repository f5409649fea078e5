"""Pure capacity arithmetic for a call-server pool: where meetings go, how many pods the pool
needs, which pods may be removed. No API calls here, so it is unit-testable and the same
inputs always give the same plan (which is what makes the reconciler idempotent)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PoolSettings:
    """Per-pool knobs, read from annotations on the pool Deployment."""

    participants_per_pod: int = 500
    headroom_pods: int = 1
    min_replicas: int = 1
    max_replicas: int = 50
    drain_deadline_seconds: float = 3600.0
    media_port: int = 7882

    @classmethod
    def from_annotations(cls, ann: dict[str, str]) -> PoolSettings:
        def num(key: str, default: float) -> float:
            try:
                return float(ann.get(f"parley.dev/{key}", default))
            except ValueError:
                return default

        d = cls()
        return cls(
            participants_per_pod=max(int(num("participants-per-pod", d.participants_per_pod)), 1),
            headroom_pods=max(int(num("headroom-pods", d.headroom_pods)), 0),
            min_replicas=max(int(num("min-replicas", d.min_replicas)), 0),
            max_replicas=max(int(num("max-replicas", d.max_replicas)), 1),
            drain_deadline_seconds=num("drain-deadline-seconds", d.drain_deadline_seconds),
            media_port=int(num("media-port", d.media_port)),
        )


@dataclass(frozen=True)
class PodInfo:
    name: str
    ready: bool
    draining_since: float | None = None  # unix time the drain started


@dataclass(frozen=True)
class Demand:
    key: str
    amount: int  # participants to reserve; 0 = nothing (scheduled later, ended, p2p)
    pod: str | None = None  # current placement


@dataclass
class PoolPlan:
    replicas: int
    placements: dict[str, str | None] = field(default_factory=dict)
    loads: dict[str, int] = field(default_factory=dict)
    exhausted: set[str] = field(default_factory=set)  # demands the pool cannot fit at max
    removable: list[str] = field(default_factory=list)  # drained pods to delete now
    drain: list[str] = field(default_factory=list)  # pods to start draining
    undrain: list[str] = field(default_factory=list)  # draining pods needed again


def plan_pool(pods: list[PodInfo], demands: list[Demand], s: PoolSettings,
              current_replicas: int, now: float) -> PoolPlan:
    cap = s.participants_per_pod
    by_name = {p.name: p for p in pods}
    expired = {p.name for p in pods if p.draining_since is not None
               and now - p.draining_since >= s.drain_deadline_seconds}
    loads = {p.name: 0 for p in pods}
    placements: dict[str, str | None] = {}
    pending: list[Demand] = []
    for d in demands:
        if d.amount <= 0:
            placements[d.key] = None
            continue
        pod = by_name.get(d.pod) if d.pod else None
        if pod is not None and pod.ready and pod.name not in expired:
            placements[d.key] = pod.name
            loads[pod.name] += min(d.amount, cap)
        else:
            pending.append(d)
    # Best fit, largest first: packs meetings tightly so whole pods empty out for scale-down.
    candidates = [p.name for p in pods if p.ready and p.draining_since is None]
    virtual: list[int] = []  # free space of pods the pool still has to grow
    plan = PoolPlan(replicas=0, placements=placements, loads=loads)
    for d in sorted(pending, key=lambda d: (-d.amount, d.key)):
        need = min(d.amount, cap)
        fits = [n for n in candidates if cap - loads[n] >= need]
        if fits:
            best = min(fits, key=lambda n: (cap - loads[n], n))
            placements[d.key] = best
            loads[best] += need
            continue
        placements[d.key] = None
        slot = next((i for i, free in enumerate(virtual) if free >= need), None)
        if slot is None:
            virtual.append(cap - need)
        else:
            virtual[slot] -= need
    used = sum(1 for n, load in loads.items() if load > 0)
    total = sum(d.amount for d in demands if d.amount > 0)
    # A meeting larger than one pod keeps its primary pod and reserves whole extra pods for
    # the participants that cascade beyond it.
    overflow = sum(math.ceil(d.amount / cap) - 1 for d in demands if d.amount > cap)
    needed = max(used + len(virtual) + overflow, math.ceil(total / cap))
    plan.replicas = min(max(needed + s.headroom_pods, s.min_replicas), s.max_replicas)
    if needed > s.max_replicas:
        plan.exhausted = {k for k, p in placements.items() if p is None
                          and any(d.key == k and d.amount > 0 for d in demands)}
    # Scale-down: only pods without meetings (or past their drain deadline) may go.
    surplus = current_replicas - plan.replicas
    if surplus > 0:
        empty = [p for p in pods if loads[p.name] == 0 or p.name in expired]
        empty.sort(key=lambda p: (p.ready, p.draining_since is None, p.name))
        plan.removable = [p.name for p in empty[:surplus]]
        short = surplus - len(plan.removable)
        if short > 0:
            busy = [p for p in pods if p.draining_since is None and loads[p.name] > 0
                    and p.name not in plan.removable]
            busy.sort(key=lambda p: (loads[p.name], p.name))
            plan.drain = [p.name for p in busy[:short]]
        plan.replicas = current_replicas - len(plan.removable)
    else:
        plan.undrain = [p.name for p in pods if p.draining_since is not None
                        and p.name not in expired]
    return plan

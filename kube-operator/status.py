"""Status helpers: Kubernetes-style conditions and snapshots of custom objects."""

from __future__ import annotations

from typing import Any

from parley.operator import kube


def condition(old: list[dict[str, Any]] | None, type_: str, status: bool, reason: str,
              message: str, generation: int) -> dict[str, Any]:
    """A condition whose lastTransitionTime only moves when its status flips."""
    value = "True" if status else "False"
    prev = next((c for c in old or [] if c.get("type") == type_), None)
    since = prev.get("lastTransitionTime") if prev and prev.get("status") == value else None
    return {"type": type_, "status": value, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since or kube.rfc3339()}


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any]:
    return next((c for c in conditions or [] if c.get("type") == type_), {})


def snapshot(body: Any) -> dict[str, Any]:
    """The parts of a Meeting/Broadcast the reconcilers read, as plain dicts."""
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation",
                                              "resourceVersion", "deletionTimestamp")},
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def rv(obj: dict[str, Any] | None) -> int:
    """resourceVersion as a number, to tell which of two copies is newer (etcd revisions)."""
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())

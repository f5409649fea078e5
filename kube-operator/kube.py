"""Thin, idempotent wrappers over the Kubernetes API used by every reconciler.

Objects the operator owns are written with server-side apply under one field manager, so
re-applying the same intent after a restart is a no-op and never creates duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from parley.kubeapi import api, coordination, now
from parley.operator.config import FIELD_MANAGER

__all__ = ["api", "coordination", "now"]


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api())


def apps() -> client.AppsV1Api:
    return client.AppsV1Api(api())


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api())


def rfc3339(t: dt.datetime | None = None) -> str:
    return (t or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class Applier:
    """Server-side apply with a memory of what was applied, so a resync that changes nothing
    costs no API call. The memory is only an optimisation: after a restart it is empty and the
    first apply of each object is a harmless no-op on the server."""

    def __init__(self) -> None:
        self._applied: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]

    def apply(self, obj: dict[str, Any]) -> bool:
        """Apply ``obj``; return True when something was sent (i.e. the intent changed)."""
        key = self._key(obj)
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        with self._lock:
            if self._applied.get(key) == digest:
                return False
        kind, ns, name = key
        kwargs = {"field_manager": FIELD_MANAGER, "force": True,
                  "_content_type": "application/apply-patch+yaml"}
        if kind == "Deployment":
            apps().patch_namespaced_deployment(name, ns, obj, **kwargs)
        elif kind == "Service":
            core().patch_namespaced_service(name, ns, obj, **kwargs)
        elif kind == "ServiceAccount":
            core().patch_namespaced_service_account(name, ns, obj, **kwargs)
        elif kind == "Role":
            client.RbacAuthorizationV1Api(api()).patch_namespaced_role(name, ns, obj, **kwargs)
        elif kind == "RoleBinding":
            client.RbacAuthorizationV1Api(api()).patch_namespaced_role_binding(
                name, ns, obj, **kwargs)
        else:
            raise ValueError(f"cannot apply kind {kind}")
        with self._lock:
            self._applied[key] = digest
        return True

    def delete(self, kind: str, ns: str, name: str) -> bool:
        """Delete if present; True when something was deleted."""
        with self._lock:
            self._applied.pop((kind, ns, name), None)
        try:
            if kind == "Deployment":
                apps().delete_namespaced_deployment(name, ns, propagation_policy="Background")
            elif kind == "Service":
                core().delete_namespaced_service(name, ns)
            else:
                raise ValueError(f"cannot delete kind {kind}")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def forget(self, kind: str, ns: str, name: str) -> None:
        with self._lock:
            self._applied.pop((kind, ns, name), None)


def event(obj: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
    """Record one decision as a core/v1 Event on ``obj`` (kubectl describe shows it).

    Events are best effort: failing to post one must never fail a reconcile.
    """
    meta = obj["metadata"]
    ts = rfc3339()
    body = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                           "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta.get("uid")},
        "reason": reason, "message": message[:1000], "type": type_,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER, "firstTimestamp": ts, "lastTimestamp": ts,
        "count": 1,
    }
    try:
        core().create_namespaced_event(meta["namespace"], body)
    except ApiException:
        pass


def patch_status(plural: str, ns: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch the status subresource; returns the updated object."""
    from parley.operator.config import GROUP, VERSION

    return custom().patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, plural, name, {"status": status},
        _content_type="application/merge-patch+json")

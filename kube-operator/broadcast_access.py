"""The apiserver identities of a Broadcast's pods, least privilege, in the Broadcast's namespace.

Few roles talk to the apiserver: the ingest follows its own Broadcast (``spec.program``,
``spec.sources``: media-node/broadcast/spec_watch.py), asks whether it may broadcast a meeting
source (get the Meeting: meeting_access.py) and reports its sources (ingest_report.py), the edges
report their viewers (edge_report.py); reports are Leases (the recorder's identity,
``{broadcast}-recorder`` with the edges' Lease rule, is made only when recording is on:
broadcast_recorder.py).
Each gets a ServiceAccount, a Role and a RoleBinding named
``{broadcast}-ingest`` / ``{broadcast}-edge``, owned by the Broadcast (deleted with it); every
other broadcast pod keeps running without a token. The chart cannot own these (as it owns the
call servers' ``{release}-media``): Broadcasts live in any watched namespace and the ingest's
rule names its one Broadcast. The operator holds each permission it grants (RBAC forbids
granting more than one has): broadcasts get/watch, leases get/create/update/patch, meetings
get.
"""

from __future__ import annotations

from typing import Any

from parley.operator import resources
from parley.operator.config import GROUP

RBAC = "rbac.authorization.k8s.io"

# a watch of one object (field selector metadata.name) is authorized against resourceNames
INGEST_RULES = "get", "watch"
LEASE_VERBS = ["get", "create", "update", "patch"]  # server-side apply of parley-report-<pod>


def ingest_account(b: str) -> str:
    return resources.ingest_name(b)


def edge_account(b: str) -> str:
    return resources._name(b, "edge")


def _meta(b: dict[str, Any], name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": b["metadata"]["namespace"],
            "labels": resources.labels(component, b),
            "ownerReferences": [resources.owner_ref(b)]}


def _identity(b: dict[str, Any], name: str, component: str, rules: list[dict[str, Any]]
              ) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(b, name, component),
         "automountServiceAccountToken": False},  # only the pods that name it mount a token
        {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": _meta(b, name, component),
         "rules": rules},
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": _meta(b, name, component),
         "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name,
                       "namespace": b["metadata"]["namespace"]}]},
    ]


def access_objects(b: dict[str, Any]) -> list[dict[str, Any]]:
    """ServiceAccount + Role + RoleBinding for the ingest, then for the edges."""
    name = b["metadata"]["name"]
    return [
        *_identity(b, ingest_account(name), "ingest", [
            {"apiGroups": [GROUP], "resources": ["broadcasts"], "resourceNames": [name],
             "verbs": list(INGEST_RULES)},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],  # its report
             "verbs": LEASE_VERBS},
            # meeting sources of this namespace (media-node/broadcast/meeting_access.py);
            # another namespace's owners grant theirs with a RoleBinding of their own
            {"apiGroups": [GROUP], "resources": ["meetings"], "verbs": ["get"]}]),
        *_identity(b, edge_account(name), "edge-relay", [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": LEASE_VERBS}]),
    ]


def run_as(dep: dict[str, Any], account: str) -> dict[str, Any]:
    """The pod template runs as ``account`` with its token mounted (in-cluster config)."""
    pod = dep["spec"]["template"]["spec"]
    pod["serviceAccountName"] = account
    pod["automountServiceAccountToken"] = True
    return dep

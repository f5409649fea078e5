"""May this ingest broadcast that Meeting? Asked of the apiserver, with the ingest's own
ServiceAccount, before every join of a meeting source and again while on air.

A Broadcast names its sources; a Meeting of another namespace
(``spec.sources[].meetingNamespace``) belongs to other people, whose consent is a RoleBinding in
their namespace that lets the Broadcast's ingest ServiceAccount ``get`` the Meeting (the chart
ships the ClusterRole ``{release}-meeting-source`` to bind). The check is a plain ``get`` of the
Meeting: RBAC decides on the apiserver, a withdrawn binding takes effect at the next check
(every ``meeting_source.RECHECK_S`` while joined), and a misspelt name says "not found" instead
of waiting for a call server that never has it. The operator grants the ingest ``get`` on the
Meetings of its own namespace, so a same-namespace source needs nothing more.
"""

from __future__ import annotations

import asyncio

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from parley import kubeapi

GROUP, VERSION, PLURAL = "parley.dev", "v1alpha1", "meetings"


class MeetingForbidden(PermissionError):
    """The apiserver refused the ingest the Meeting (no grant in its namespace)."""


async def authorize(meeting_key: str) -> None:
    """Raise unless the apiserver lets this process get the Meeting ``{namespace}.{name}``."""
    namespace, name = meeting_key.split(".", 1)
    api = client.CustomObjectsApi(kubeapi.api())
    try:
        await asyncio.to_thread(api.get_namespaced_custom_object, GROUP, VERSION, namespace,
                                PLURAL, name)
    except ApiException as exc:
        if exc.status == 403:
            raise MeetingForbidden(
                f"forbidden: this broadcast's ingest may not get Meeting {namespace}/{name}; "
                f"its owners grant it with a RoleBinding in {namespace} "
                "(ClusterRole {release}-meeting-source)") from None
        if exc.status == 404:
            raise LookupError(f"Meeting {namespace}/{name} not found") from None
        raise RuntimeError(f"apiserver answered {exc.status} for Meeting {namespace}/{name}"
                           ) from None

"""Leader election over a coordination.k8s.io Lease, so that running more than one operator
replica is safe: only the holder reconciles; the others wait and take over when its
heartbeat stops. (kopf's own peering would need an extra CRD; a Lease needs none.)

A restarted process with the same identity (the pod name) takes its lease back at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException

from parley.operator import kube, metrics

log = logging.getLogger("parley.operator.leader")


def _micro(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class LeaderElector:
    def __init__(self, namespace: str, identity: str, name: str = "parley-operator",
                 duration: float = 15.0, renew_every: float = 5.0):
        self.namespace, self.identity, self.name = namespace, identity, name
        self.duration, self.renew_every = duration, renew_every

    def _try(self) -> bool:
        """One attempt to acquire or renew; optimistic concurrency via resourceVersion."""
        api = kube.coordination()
        now = time.time()
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.duration),
                "renewTime": _micro(now)}
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**spec, "acquireTime": _micro(now), "leaseTransitions": 0}}
            try:
                api.create_namespaced_lease(self.namespace, body)
                return True
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
        holder = lease.spec.holder_identity
        renewed = lease.spec.renew_time.timestamp() if lease.spec.renew_time else 0.0
        expired = now - renewed > float(lease.spec.lease_duration_seconds or self.duration)
        if holder != self.identity and not expired:
            return False
        body: dict[str, Any] = {
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "resourceVersion": lease.metadata.resource_version},
            "spec": {**spec,
                     "acquireTime": (_micro(now) if holder != self.identity else
                                     _micro(lease.spec.acquire_time.timestamp())
                                     if lease.spec.acquire_time else _micro(now)),
                     "leaseTransitions": (lease.spec.lease_transitions or 0)
                     + (holder != self.identity)}}
        try:
            api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        if holder != self.identity:
            log.info("took over lease %s/%s from %s", self.namespace, self.name, holder)
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Block until leader (True) or ``stop`` is set (False)."""
        waiting = False
        while not stop.is_set():
            try:
                if self._try():
                    metrics.LEADER.set(1)
                    log.info("leader as %s", self.identity)
                    return True
                if not waiting:
                    waiting = True
                    log.info("standby as %s: lease %s/%s is held", self.identity,
                             self.namespace, self.name)
            except ApiException as exc:
                log.warning("lease %s: %s", self.name, exc.reason)
            stop.wait(min(self.renew_every, 2.0))
        return False

    def keep(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew until ``stop``; call ``on_lost`` if the lease cannot be renewed in time."""
        last = time.monotonic()
        while not stop.wait(self.renew_every):
            try:
                if self._try():
                    last = time.monotonic()
                    continue
            except Exception as exc:
                log.warning("renewing lease failed: %s", exc)
            if time.monotonic() - last > self.duration * 0.8:
                metrics.LEADER.set(0)
                log.error("lost leadership; stopping")
                on_lost()
                return

    def release(self) -> None:
        """Hand the lease over at once on a clean shutdown: no holder, renewed long ago, so a
        standby's next attempt (every 2 s) takes it instead of waiting out the duration."""
        try:
            lease = kube.coordination().read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                kube.coordination().replace_namespaced_lease(self.name, self.namespace, {
                    "metadata": {"name": self.name, "namespace": self.namespace,
                                 "resourceVersion": lease.metadata.resource_version},
                    "spec": {"leaseDurationSeconds": int(self.duration),
                             "renewTime": _micro(time.time() - 3600),
                             "leaseTransitions": lease.spec.lease_transitions or 0}})
                log.info("released lease %s/%s", self.namespace, self.name)
        except ApiException as exc:  # a 409 means someone else already moved it on
            log.warning("releasing lease %s: %s", self.name, exc.reason)
        metrics.LEADER.set(0)

"""Fixtures for the operator tests: the CRDs installed once, and `parley operator` run as a
real subprocess against the test bed's apiserver, scoped to the test's namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Kube, free_port, wait_until


@pytest.fixture(scope="session")
def crds(kube: Kube) -> None:
    # Tests publish media-node reports with the same client code a media node uses.
    os.environ["KUBECONFIG"] = kube.kubeconfig
    kube.kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in ("meetings.parley.dev", "broadcasts.parley.dev"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")


class Operator:
    """One `parley operator` process (restartable) with its own log file."""

    def __init__(self, kube: Kube, namespace: str, tmp: Path, identity: str = "op-0",
                 env: dict[str, str] | None = None, also: tuple[str, ...] = ()):
        """``also``: more namespaces it watches (its leases stay in ``namespace``)."""
        self.kube, self.namespace, self.tmp, self.identity = kube, namespace, tmp, identity
        self.also = also
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.tmp / f"operator-{self.identity}-{self.starts}.log"

    def start(self) -> Operator:
        self.starts += 1
        self.metrics_port = free_port()
        env = {**os.environ, "KUBECONFIG": self.kube.kubeconfig,
               "PARLEY_RESYNC_SECONDS": "1", "PARLEY_OPERATOR_ID": self.identity,
               "PARLEY_LEASE_NAMESPACE": self.namespace, "PARLEY_REPORT_TTL_SECONDS": "30",
               **self.extra_env}
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "operator", "--namespace", self.namespace,
             *(a for ns in self.also for a in ("--namespace", ns)),
             "--metrics-port", str(self.metrics_port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no lease hand-over (a crash)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.tmp.glob(f"operator-{self.identity}-*.log")))


@pytest.fixture
def operator(kube: Kube, namespace: str, crds: None, tmp_path: Path,
             redis_url: str) -> Iterator[Operator]:
    """The operator as the chart runs it: with the Redis directory signaling reads."""
    op = Operator(kube, namespace, tmp_path, env={
        "PARLEY_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/12"}).start()
    yield op
    op.stop()


POOL = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: call-server-{region}
  labels: {{app.kubernetes.io/component: call-server, parley.dev/region: {region}}}
  annotations:
    parley.dev/participants-per-pod: "{per_pod}"
    parley.dev/headroom-pods: "{headroom}"
    parley.dev/min-replicas: "1"
    parley.dev/max-replicas: "{max_replicas}"
    parley.dev/drain-deadline-seconds: "{drain}"
spec:
  replicas: 1
  selector:
    matchLabels: {{app.kubernetes.io/component: call-server, parley.dev/region: {region}}}
  template:
    metadata:
      labels: {{app.kubernetes.io/component: call-server, parley.dev/region: {region}}}
    spec:
      containers: [{{name: media, image: ghcr.io/parley/media-node:0.1.0}}]
"""


def make_pool(kube: Kube, namespace: str, region: str = "eu", per_pod: int = 100,
              headroom: int = 1, max_replicas: int = 10, drain: int = 600) -> str:
    """A call-server pool as the chart creates it (the operator only scales it)."""
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=POOL.format(
        region=region, per_pod=per_pod, headroom=headroom, max_replicas=max_replicas,
        drain=drain))
    return f"call-server-{region}"


def apply(kube: Kube, namespace: str, obj: dict[str, Any]) -> None:
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def meeting(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "parley.dev/v1alpha1", "kind": "Meeting",
            "metadata": {"name": name}, "spec": spec}


def get(kube: Kube, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return kube.json("get", kind, name, "-n", namespace)


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", [])
                 if c["type"] == type_), {})


def pool_state(kube: Kube, namespace: str, name: str) -> tuple[int, int, list[dict[str, Any]]]:
    """(spec.replicas, Ready pods, live pods) of a Deployment."""
    dep = get(kube, namespace, "deployment", name)
    sel = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
    pods = [p for p in kube.json("get", "pods", "-n", namespace, "-l", sel)["items"]
            if not p["metadata"].get("deletionTimestamp")]
    ready = sum(1 for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in p["status"].get("conditions", [])))
    return dep["spec"]["replicas"], ready, pods


def wait_pool(kube: Kube, namespace: str, name: str, replicas: int, timeout: float = 60) -> None:
    def ok() -> bool:
        spec, ready, pods = pool_state(kube, namespace, name)
        return spec == replicas and ready == replicas and len(pods) == replicas

    wait_until(ok, timeout, 0.5,
               what=f"pool {name} at {replicas} Ready replicas "
                    f"(now {pool_state(kube, namespace, name)[:2]})")


def settle(seconds: float) -> None:
    time.sleep(seconds)

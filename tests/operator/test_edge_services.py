"""Per-region playback: the operator gives each region of a Broadcast its own edge Service
(selector by the region label), the status names the region's playback URL and playlist, and the
Service's endpoints are exactly that region's edge pods as they scale (kwok pods on the test-bed
apiserver, EndpointSlices from the real controller-manager)."""

from __future__ import annotations

import copy

import pytest

from parley.operator import reports
from tests.conftest import Kube, wait_until
from tests.operator.conftest import Operator, apply, get

pytestmark = pytest.mark.k8s

SHOW = {"apiVersion": "parley.dev/v1alpha1", "kind": "Broadcast", "metadata": {"name": "show"},
        "spec": {"sources": [{"name": "cam1"}],
                 "renditions": [{"name": "360p", "height": 360, "bitrateKbps": 800}],
                 "edge": {"viewersPerReplica": 100,
                          "regions": [{"name": "eu", "minReplicas": 1, "maxReplicas": 4},
                                      {"name": "us", "minReplicas": 1, "maxReplicas": 4}]}}}


def _pod_ips(kube: Kube, ns: str, region: str) -> set[str]:
    pods = kube.json("get", "pods", "-n", ns, "-l", f"parley.dev/workload=show-edge-{region}")
    return {p["status"].get("podIP") for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")}


def _endpoints(kube: Kube, ns: str, service: str) -> set[str]:
    slices = kube.json("get", "endpointslices", "-n", ns, "-l",
                       f"kubernetes.io/service-name={service}")["items"]
    return {a for s in slices for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") for a in e["addresses"]}


def test_each_region_has_an_edge_service_whose_endpoints_follow_its_pods(
        kube: Kube, namespace: str, operator: Operator) -> None:
    ns = namespace
    apply(kube, ns, SHOW)
    for region in ("eu", "us"):
        svc = wait_until(lambda r=region: _service(kube, ns, f"show-edge-{r}"), 60, 0.5,
                         what=f"the {region} edge Service")
        assert svc["spec"]["selector"] == {"app.kubernetes.io/component": "edge-relay",
                                           "parley.dev/broadcast": "show",
                                           "parley.dev/region": region}
        assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "media-udp"}
        assert [o["kind"] for o in svc["metadata"]["ownerReferences"]] == ["Broadcast"]

    def following(region: str, n: int) -> set[str] | None:
        ips = _pod_ips(kube, ns, region)
        eps = _endpoints(kube, ns, f"show-edge-{region}")
        return eps if len(ips) == n and None not in ips and eps == ips else None
    eu_one = wait_until(lambda: following("eu", 1), 60, 0.5, what="eu endpoints = its pod")
    us_one = wait_until(lambda: following("us", 1), 60, 0.5, what="us endpoints = its pod")
    assert not eu_one & us_one

    # 250 viewers in eu: three eu edges, all three behind the eu Service, none behind us
    reports.publish(ns, "edge-eu-0", role="edge-relay", region="eu",
                    broadcasts={f"{ns}/show": 250})
    eu = wait_until(lambda: following("eu", 3), 60, 0.5, what="eu endpoints = its 3 pods")
    assert eu >= eu_one and not eu & _endpoints(kube, ns, "show-edge-us")

    b = get(kube, ns, "bcast", "show")
    edges = {e["region"]: e for e in b["status"]["edges"]}
    for region in ("eu", "us"):
        url = f"http://show-edge-{region}.{ns}.svc:8080"  # no template: the Service itself
        assert (edges[region]["url"], edges[region]["service"], edges[region]["hls"]) == (
            url, f"show-edge-{region}", f"{url}/live/{ns}.show/index.m3u8"), edges[region]

    # a region taken out of the spec loses its Service with its Deployment
    fewer = copy.deepcopy(SHOW)
    fewer["spec"]["edge"]["regions"] = fewer["spec"]["edge"]["regions"][:1]
    apply(kube, ns, fewer)
    wait_until(lambda: _service(kube, ns, "show-edge-us") is None, 60, 0.5,
               what="the us edge Service deleted")
    assert _service(kube, ns, "show-edge-eu") is not None


def _service(kube: Kube, ns: str, name: str) -> dict | None:
    items = kube.json("get", "services", "-n", ns)["items"]
    return next((s for s in items if s["metadata"]["name"] == name), None)

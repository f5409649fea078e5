"""The identities the operator gives a Broadcast's pods (kube-operator/broadcast_access.py), judged
by the test-bed apiserver's real RBAC authorizer (it runs ``--authorization-mode=RBAC``).

The operator itself runs as a ServiceAccount bound to the chart's own operator ClusterRole, so
this also proves the chart lets it create those Roles (RBAC refuses granting what one lacks).
The ingest's token (TokenRequest API) may get and watch its own Broadcast, get the Meetings of
its namespace (meeting sources) and write its report Lease, nothing else; the edges' token may
write Leases (their viewer reports) and read no Broadcast."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import Kube, wait_until
from tests.operator.conftest import Operator, apply, get
from tests.operator.test_chart import CHART

pytestmark = pytest.mark.k8s
GROUP, VERSION = "parley.dev", "v1alpha1"


def broadcast(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Broadcast", "metadata": {"name": name},
            "spec": {"sources": [{"name": "cam1"}],
                     "renditions": [{"name": "360p", "height": 360, "bitrateKbps": 800}],
                     "edge": {"regions": [{"name": "eu", "minReplicas": 1, "maxReplicas": 2}]}}}


def token(kube: Kube, ns: str, account: str) -> str:
    return kube.kubectl("create", "token", account, "-n", ns, "--duration", "10m").stdout.strip()


def api_as(kube: Kube, bearer: str) -> client.ApiClient:
    """The test bed's apiserver, authenticated only by ``bearer``."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=kube.kubeconfig, client_configuration=cfg)
    cfg.refresh_api_key_hook = None  # it would put the kubeconfig's (admin) token back
    cfg.api_key = {"authorization": f"Bearer {bearer}"}
    cfg.api_key_prefix = {}
    cfg.cert_file = cfg.key_file = None
    return client.ApiClient(cfg)


def status_of(call: Any) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


@pytest.fixture
def chart_operator(kube: Kube, namespace: str, crds: None, tmp_path: Path
                   ) -> Iterator[Operator]:
    """`parley operator` with the chart's ClusterRole and nothing more."""
    docs = yaml.safe_load_all(kube.helm("template", "t", CHART, "-n", namespace,
                                        "--show-only", "templates/operator.yaml").stdout)
    role = next(d for d in docs if d and d["kind"] == "ClusterRole"
                and d["metadata"]["name"].endswith("-operator"))
    name = f"parley-op-{namespace}"
    role["metadata"] = {"name": name}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": "operator",
                             "namespace": namespace}]}
    kube.kubectl("create", "serviceaccount", "operator", "-n", namespace)
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": [role, binding]}))
    kubeconfig = yaml.safe_load(Path(kube.kubeconfig).read_text())
    for user in kubeconfig["users"]:
        user["user"] = {"token": token(kube, namespace, "operator")}
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    as_operator = Kube({"KUBECONFIG": str(path), "KUBECTL": kube.kubectl_bin,
                        "HELM": kube.helm_bin, "KUBE_VERSION": kube.version})
    op = Operator(as_operator, namespace, tmp_path).start()
    yield op
    op.stop()
    kube.kubectl("delete", "clusterrolebinding,clusterrole", name, "--wait=false", check=False)


def test_ingest_reads_only_its_broadcast_and_reports_edges_write_only_leases(
        kube: Kube, namespace: str, chart_operator: Operator) -> None:
    apply(kube, namespace, broadcast("show"))
    apply(kube, namespace, broadcast("other"))

    def made() -> bool:
        out = kube.kubectl("get", "deployment", "show-ingest", "show-edge-eu", "-n", namespace,
                           check=False)
        return out.returncode == 0
    wait_until(made, 60, 0.5, what=f"the operator's Deployments\n{chart_operator.logs()}")
    ingest = get(kube, namespace, "deployment", "show-ingest")["spec"]["template"]["spec"]
    edge = get(kube, namespace, "deployment", "show-edge-eu")["spec"]["template"]["spec"]
    assert (ingest["serviceAccountName"], ingest["automountServiceAccountToken"]) == (
        "show-ingest", True)
    assert (edge["serviceAccountName"], edge["automountServiceAccountToken"]) == (
        "show-edge", True)
    tx = get(kube, namespace, "deployment", "show-tx-360p")["spec"]["template"]["spec"]
    assert "serviceAccountName" not in tx and tx["automountServiceAccountToken"] is False

    crd = client.CustomObjectsApi(api_as(kube, token(kube, namespace, "show-ingest")))
    assert crd.get_namespaced_custom_object(GROUP, VERSION, namespace, "broadcasts",
                                            "show")["metadata"]["name"] == "show"
    # the watch spec_watch.py makes: a list+watch narrowed to the one name
    events = crd.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "broadcasts", field_selector="metadata.name=show",
        watch=True, timeout_seconds=1, _preload_content=False)
    assert events.status == 200
    assert status_of(lambda: crd.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "broadcasts", "other")) == 403
    assert status_of(lambda: crd.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "broadcasts", field_selector="metadata.name=other",
        watch=True, timeout_seconds=1)) == 403
    assert status_of(lambda: crd.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "broadcasts")) == 403
    # a meeting source of its namespace (meeting_access.py): it may get a Meeting (so a
    # missing one is 404, not 403), not list them
    assert status_of(lambda: crd.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meetings", "no-such-meeting")) == 404
    assert status_of(lambda: crd.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "meetings")) == 403
    # the ingest's report Lease (ingest_report.py), server-side applied; no pods
    ingest_api = api_as(kube, token(kube, namespace, "show-ingest"))
    own = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "parley-report-show-ingest-0"},
           "spec": {"holderIdentity": "show-ingest-0"}}
    client.CoordinationV1Api(ingest_api).patch_namespaced_lease(
        own["metadata"]["name"], namespace, own, field_manager="parley-media-ingest",
        force=True, _content_type="application/apply-patch+yaml")
    assert status_of(lambda: client.CoreV1Api(ingest_api).list_namespaced_pod(namespace)) == 403
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "parley-report-show-edge-eu-0"},
             "spec": {"holderIdentity": "show-edge-eu-0"}}

    # the edges: their report Lease, server-side applied as parley.reports.publish does
    edge_api = api_as(kube, token(kube, namespace, "show-edge"))
    leases = client.CoordinationV1Api(edge_api)
    leases.patch_namespaced_lease(lease["metadata"]["name"], namespace, lease,
                                  field_manager="parley-media-edge-relay", force=True,
                                  _content_type="application/apply-patch+yaml")
    assert leases.read_namespaced_lease(lease["metadata"]["name"], namespace)
    assert status_of(lambda: client.CustomObjectsApi(edge_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "broadcasts", "show")) == 403
    assert status_of(lambda: client.CoreV1Api(edge_api).list_namespaced_pod(namespace)) == 403
    assert status_of(lambda: client.CustomObjectsApi(edge_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meetings", "no-such-meeting")) == 403

"""The chart's analytics engine (docs/analytics.md): off by default; on, a hardened Deployment
running `parley analytics` against the release's Kafka and Redis, a metrics Service the
ServiceMonitor scrapes, a NetworkPolicy, and a Grafana dashboard of the aggregates beside the
existing one."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import ROOT, Kube

pytestmark = pytest.mark.k8s
CHART = str(ROOT / "charts" / "parley")
ON = ["--set", "analytics.enabled=true", "--set", "monitoring.grafanaDashboard.enabled=true",
      "--set", "monitoring.serviceMonitor.enabled=true", "--set", "networkPolicy.enabled=true"]


def _render(kube: Kube, *args: str) -> list[dict]:
    out = kube.helm("template", "t", CHART, "--kube-version", kube.version, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _named(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_analytics_is_off_by_default(kube: Kube) -> None:
    docs = _render(kube, "--set", "monitoring.grafanaDashboard.enabled=true")
    assert not [d for d in docs if "analytics" in d["metadata"]["name"]]


def test_analytics_deployment_dashboard_and_policy(kube: Kube) -> None:
    docs = _render(kube, *ON, "--set", "recording.store=s3://rec/parley",
                   "--set", "recording.s3Secret=s3keys", "--set", "analytics.replicas=3")
    engine = _named(docs, "Deployment", "t-parley-analytics")
    assert engine["spec"]["replicas"] == 3
    pod = engine["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and not pod.get("hostNetwork")
    (c,) = pod["containers"]
    assert c["args"][:3] == ["analytics", "--group", "parley-analytics"]
    assert c["args"][3:] == ["--metrics-port", "9102"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["readinessProbe"]["httpGet"]["port"] == "metrics" and c["livenessProbe"]
    env = {e["name"]: e for e in c["env"]}
    # the bundled broker by a name every namespace resolves, advertised as such; the operator
    # hands it to the broadcast ingests it runs in the namespaces it watches
    bootstrap = "t-parley-kafka.default.svc:9092"
    assert env["PARLEY_KAFKA_BOOTSTRAP"]["value"] == bootstrap
    op = {e["name"]: e.get("value") for e in _named(docs, "Deployment", "t-parley-operator")
          ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (op["PARLEY_KAFKA_BOOTSTRAP"], op["PARLEY_KAFKA_TOPIC"]) == (bootstrap, "parley.events")
    broker = {e["name"]: e.get("value") for e in _named(docs, "StatefulSet", "t-parley-kafka")
              ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert broker["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{bootstrap}"
    assert env["PARLEY_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "t-parley-secrets", "key": "redis-url"}  # never a literal password
    assert env["PARLEY_ANALYTICS_ARCHIVE"]["value"] == "s3://rec/parley/analytics"
    assert c["envFrom"] == [{"secretRef": {"name": "s3keys"}}]

    svc = _named(docs, "Service", "t-parley-analytics")
    assert svc["spec"]["ports"][0]["name"] == "metrics"  # the ServiceMonitor's port
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "analytics"
    policy = _named(docs, "NetworkPolicy", "t-parley-analytics")
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9102}]

    existing = _named(docs, "ConfigMap", "t-parley-dashboard")
    assert json.loads(existing["data"]["parley.json"])["panels"]
    dash = _named(docs, "ConfigMap", "t-parley-analytics-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dash["data"]["parley-analytics.json"])
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in ('"dropped"', '"joined"', "media_ms_(hd|sd|transcoded)", '"freezes"',
                   "parley_analytics_participants", "outcome"):
        assert metric in exprs, metric
    assert {p["title"] for p in board["panels"]} >= {
        "Participants now", "Drop rate (dropped / joined, 1 h)",
        "Media time: HD / SD / transcoded share (1 h)", "Freezes per media minute"}


def test_analytics_archive_override_and_lint(kube: Kube) -> None:
    docs = _render(kube, *ON, "--set", "analytics.archive=s3://lake/events")
    c = _named(docs, "Deployment", "t-parley-analytics")["spec"]["template"]["spec"][
        "containers"][0]
    assert {e["name"]: e.get("value") for e in c["env"]}[
        "PARLEY_ANALYTICS_ARCHIVE"] == "s3://lake/events"
    out = kube.helm("lint", "--strict", CHART, *ON)
    assert "0 chart(s) failed" in out.stdout, out.stdout
    bad = kube.helm("template", "t", CHART, "--set", "analytics.archive=ftp://x", check=False)
    assert bad.returncode != 0 and "/analytics/archive" in bad.stderr

"""The Helm chart: lint, server-side dry run against the test apiserver, a real install."""

from __future__ import annotations

import base64
import filecmp
import json

import pytest
import yaml

from tests.conftest import ROOT, Kube

pytestmark = pytest.mark.k8s
CHART = str(ROOT / "charts" / "parley")
ALL_ON = ["--set", "monitoring.serviceMonitor.enabled=true",
          "--set", "monitoring.prometheusRule.enabled=true",
          "--set", "monitoring.grafanaDashboard.enabled=true"]


def _render(kube: Kube, *args: str) -> list[dict]:
    out = kube.helm("template", "t", CHART, "--kube-version", kube.version, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_crds_are_the_repository_crds() -> None:
    for name in ("meeting.yaml", "broadcast.yaml"):
        assert filecmp.cmp(ROOT / "crds" / name, ROOT / "charts/parley/crds" / name,
                           shallow=False), f"charts/parley/crds/{name} differs from crds/"


def test_lint_strict(kube: Kube) -> None:
    for extra in ([], ALL_ON, ["--set", "operator.watchNamespaces={a,b}",
                              "--set", "redis.enabled=false",
                              "--set", "redis.url=redis://r:6379/0",
                              "--set", "kafka.enabled=false", "--set", "kafka.bootstrap=k:9092",
                              "--set", "callServer.udp.mode=hostPort"]):
        out = kube.helm("lint", "--strict", CHART, *extra)
        assert "0 chart(s) failed" in out.stdout, out.stdout


def test_schema_rejects_bad_values(kube: Kube) -> None:
    out = kube.helm("lint", "--strict", CHART, "--set", "redis.enabled=false", check=False)
    assert out.returncode != 0 and "/redis/url" in out.stdout + out.stderr
    out = kube.helm("template", "t", CHART, "--set", "callServer.udp.mode=hostNetwork",
                    check=False)
    assert out.returncode != 0 and "/callServer/udp/mode" in out.stderr


def test_rendered_pods_are_hardened(kube: Kube) -> None:
    docs = _render(kube, *ALL_ON)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "PodDisruptionBudget",
            "ClusterRole", "StatefulSet"} <= kinds
    dash = next(d for d in docs if d["kind"] == "ConfigMap"
                and d["metadata"]["name"].endswith("-dashboard"))
    assert json.loads(dash["data"]["parley.json"])["panels"]
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        assert not pod.get("hostNetwork")
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == [
                "ALL"]
            assert c.get("readinessProbe") and c.get("livenessProbe"), c["name"]
            if c["name"] != "kafka":
                assert sc["readOnlyRootFilesystem"] is True, c["name"]
    pool = next(d for d in docs if d["metadata"]["name"] == "t-parley-call-server-default")
    assert "replicas" not in pool["spec"]  # the operator owns the size
    assert pool["metadata"]["labels"]["app.kubernetes.io/component"] == "call-server"
    role = next(d for d in docs if d["kind"] == "ClusterRole"
                and d["metadata"]["name"] == "t-parley-operator")
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert "*" not in {v for vs in verbs.values() for v in vs}
    assert verbs[("", "pods")] == {"get", "list", "watch", "patch"}
    assert ("", "secrets") not in verbs


def test_template_passes_server_side_dry_run(kube: Kube, namespace: str) -> None:
    out = kube.helm("template", "t", CHART, "-n", namespace, "--include-crds",
                    "--kube-version", kube.version).stdout
    res = kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=out)
    assert "deployment.apps/t-parley-operator created (server dry run)" in res.stdout
    assert "statefulset.apps/t-parley-kafka created (server dry run)" in res.stdout


def test_helm_install_waits_until_deployed(kube: Kube, namespace: str, crds: None) -> None:
    release = "pt"
    try:
        # The test bed has no load-balancer controller: --wait would wait forever for the
        # TURN Service's external address, so expose it as a NodePort here.
        kube.helm("install", release, CHART, "-n", namespace, "--wait", "--timeout", "180s",
                  "--set", "coturn.serviceType=NodePort", timeout=240)
        status = json.loads(kube.helm("status", release, "-n", namespace, "-o",
                                      "json").stdout)
        assert status["info"]["status"] == "deployed"
        assert "kubectl apply -f -" in status["info"]["notes"]
        pods = kube.json("get", "pods", "-n", namespace)["items"]
        components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
        assert {"operator", "signaling", "call-server", "turn", "redis", "kafka"} <= components
        for p in pods:
            assert any(c["type"] == "Ready" and c["status"] == "True"
                       for c in p["status"]["conditions"]), p["metadata"]["name"]
    finally:
        kube.helm("uninstall", release, "-n", namespace, "--wait", check=False)


def test_recording_store_turns_on_file_creator_jobs(kube: Kube, namespace: str) -> None:
    """With a store, signaling leaves compiling to the operator, which may create Jobs in the
    release namespace only (a Role, not cluster-wide) and gets the store and its keys."""
    rec = ["--set", "recording.store=s3://parley-rec/prod", "--set", "recording.s3Secret=rec-s3"]
    out = kube.helm("lint", "--strict", CHART, *rec)
    assert "0 chart(s) failed" in out.stdout, out.stdout
    docs = _render(kube, "-n", namespace, *rec)
    containers = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
                  for d in docs if d["kind"] == "Deployment"}
    env = {name: ({e["name"]: e.get("value") for e in c.get("env", [])}, c.get("envFrom"))
           for name, c in containers.items()}
    op_env, op_from = env["t-parley-operator"]
    assert op_env["PARLEY_RECORDING_STORE"] == "s3://parley-rec/prod"
    assert op_env["PARLEY_RECORDER_SECRET"] == "rec-s3"
    assert op_env["PARLEY_RECORDER_NAMESPACE"] == namespace
    assert op_from == [{"secretRef": {"name": "rec-s3"}}]
    sig_env, sig_from = env["t-parley-signaling"]
    assert sig_env["PARLEY_FILE_CREATOR"] == "job" and sig_from == op_from
    role = next(d for d in docs if d["metadata"]["name"] == "t-parley-operator-file-creator"
                and d["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"],
                              "verbs": ["create", "get", "list", "watch"]}]
    cluster = next(d for d in docs if d["kind"] == "ClusterRole"
                   and d["metadata"]["name"] == "t-parley-operator")
    assert all("batch" not in r["apiGroups"] for r in cluster["rules"])
    res = kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                       input=kube.helm("template", "t", CHART, "-n", namespace,
                                       "--kube-version", kube.version, *rec).stdout)
    assert "role.rbac.authorization.k8s.io/t-parley-operator-file-creator created" in res.stdout
    # without a store nothing of it is rendered, and signaling compiles inline
    plain = _render(kube)
    assert not any(d["metadata"]["name"].endswith("file-creator") for d in plain)
    sig = next(d for d in plain if d["metadata"]["name"] == "t-parley-signaling"
               and d["kind"] == "Deployment")
    assert "PARLEY_FILE_CREATOR" not in {
        e["name"] for e in sig["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_call_servers_register_where_signaling_places_meetings(kube: Kube) -> None:
    """Signaling places meetings from the node directory in Redis, so every call-server pool
    must register in the same Redis, bundled or external (the URL, with its password, comes
    from the release's Secret: tests/security/test_chart.py)."""
    for args, url in (((), "@t-parley-redis:6379/0"),
                      (("--set", "redis.enabled=false", "--set", "redis.url=redis://r.ext:6380/2"),
                       "redis://r.ext:6380/2")):
        docs = _render(kube, *args)
        env = {d["metadata"]["name"]: {e["name"]: e.get("valueFrom") for e in
                                       d["spec"]["template"]["spec"]["containers"][0]["env"]}
               for d in docs if d["kind"] == "Deployment"
               and d["metadata"]["labels"].get("app.kubernetes.io/component")
               in ("call-server", "signaling", "operator")}
        pools = [n for n in env if "call-server" in n]
        assert pools, env.keys()
        ref = {"secretKeyRef": {"name": "t-parley-secrets", "key": "redis-url"}}
        assert env["t-parley-signaling"]["PARLEY_REDIS_URL"] == ref
        assert env["t-parley-operator"]["PARLEY_REDIS_URL"] == ref  # Meeting placements
        for pool in pools:
            assert env[pool]["PARLEY_REDIS_URL"] == ref, pool
        secret = next(d for d in docs if d["kind"] == "Secret")
        assert base64.b64decode(secret["data"]["redis-url"]).decode().endswith(url)


def test_broadcast_host_and_secret_reach_signaling_and_the_operator(kube: Kube) -> None:
    """Signaling's /golive and /watch/{b} and the operator's status.playback share one base,
    publicUrl unless broadcast.url is set; the operator names the release's Secret to the
    broadcast pods, and that Secret holds every key they read from it."""
    from parley.operator.broadcasts import INGEST_SECRETS

    def env(docs: list[dict], name: str) -> dict[str, str | None]:
        dep = next(d for d in docs if d["kind"] == "Deployment"
                   and d["metadata"]["name"] == name)
        return {e["name"]: e.get("value") for e in
                dep["spec"]["template"]["spec"]["containers"][0]["env"]}

    docs = _render(kube, "--set", "publicUrl=https://parley.example.com/")
    sig, op = env(docs, "t-parley-signaling"), env(docs, "t-parley-operator")
    assert sig["PARLEY_BROADCAST_URL"] == op["PARLEY_BROADCAST_URL"] == (
        "https://parley.example.com")
    assert op["PARLEY_BROADCAST_SECRET"] == "t-parley-secrets"
    assert "PARLEY_EDGE_URL_TEMPLATE" not in op
    secret = next(d for d in docs if d["kind"] == "Secret"
                  and d["metadata"]["name"] == "t-parley-secrets")
    assert {key for _, key, _ in INGEST_SECRETS} <= set(secret["data"])
    docs = _render(kube, "--set", "broadcast.url=https://live.example.com",
                   "--set", "broadcast.edgeUrlTemplate=https://{region}.live.example.com")
    sig, op = env(docs, "t-parley-signaling"), env(docs, "t-parley-operator")
    assert sig["PARLEY_BROADCAST_URL"] == op["PARLEY_BROADCAST_URL"] == "https://live.example.com"
    assert op["PARLEY_EDGE_URL_TEMPLATE"] == "https://{region}.live.example.com"
    for bad, field in (("broadcast.url=live.example.com", "/broadcast/url"),
                       ("broadcast.edgeUrlTemplate=https://eu.example.com",
                        "/broadcast/edgeUrlTemplate")):
        out = kube.helm("template", "t", CHART, "--set", bad, check=False)
        assert out.returncode != 0 and field in out.stderr, out.stderr

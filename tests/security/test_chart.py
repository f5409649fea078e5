"""The chart's doors, read from what the real `helm template` renders: coturn's relay denials,
quotas and bandwidth caps; Redis's password wiring (bundled, kept across upgrades, external);
NetworkPolicies per component (checked by evaluating their selectors against the rendered pods'
labels, and validated by the test apiserver); the bundled Redis, started from its rendered
arguments with the test bed's redis-server, refuses a client without the password."""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import ROOT, Kube, free_port, port_open, provision, wait_until

pytestmark = pytest.mark.k8s
CHART = str(ROOT / "charts" / "parley")
# Item 6 of the Trust issue: coturn never relays into these.
MUST_DENY = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
             "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10", "::ffff:0:0/96"]
PODS = ("Deployment", "StatefulSet")


def _render(kube: Kube, *args: str) -> list[dict[str, Any]]:
    out = kube.helm("template", "t", CHART, "--kube-version", kube.version, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _get(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _conf(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    text = _get(docs, "ConfigMap", "t-parley-coturn")["data"]["turnserver.conf"]
    return [(line.partition("=")[0], line.partition("=")[2]) for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def _range(text: str) -> tuple[ipaddress._BaseAddress, ipaddress._BaseAddress]:
    first, _, last = text.partition("-")
    return ipaddress.ip_address(first), ipaddress.ip_address(last or first)


def _covered(net: str, ranges: list[str]) -> bool:
    n = ipaddress.ip_network(net)
    return any(lo.version == n.version and lo <= n[0] and n[-1] <= hi
               for lo, hi in map(_range, ranges))


def test_coturn_denies_internal_ranges_and_has_quotas(kube: Kube) -> None:
    docs = _render(kube, "--set", "coturn.allowedPeerRanges={10.244.0.0-10.244.255.255}",
                   "--set", "coturn.extraDeniedPeerRanges={203.0.113.0-203.0.113.255}")
    conf = _conf(docs)
    denied = [v for k, v in conf if k == "denied-peer-ip"]
    for net in MUST_DENY:
        assert _covered(net, denied), f"{net} is not denied: {denied}"
    assert "203.0.113.0-203.0.113.255" in denied
    assert [v for k, v in conf if k == "allowed-peer-ip"] == ["10.244.0.0-10.244.255.255"]
    options = dict(conf)
    assert {k: options[k] for k in ("user-quota", "total-quota", "max-bps", "bps-capacity")} == {
        "user-quota": "12", "total-quota": "1200", "max-bps": "1250000",
        "bps-capacity": "62500000"}
    assert {"no-tcp-relay", "no-multicast-peers", "use-auth-secret"} <= options.keys()
    assert "static-auth-secret" not in options  # the secret stays in the Secret
    # the Deployment runs this file, not an inline list that could drift from it
    pod = _get(docs, "Deployment", "t-parley-coturn")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[:2] == ["-c", "/etc/coturn/turnserver.conf"]
    assert not any(a.startswith(("--denied-peer-ip", "--allowed-peer-ip", "-n")) for a in args)
    assert {"name": "config", "configMap": {"name": "t-parley-coturn"}} in pod["volumes"]
    # with nothing allowed in values, no internal range is open; quotas follow values
    plain = dict(_conf(_render(kube, "--set", "coturn.userQuota=3", "--set", "coturn.maxBps=0")))
    assert "allowed-peer-ip" not in plain
    assert (plain["user-quota"], plain["max-bps"]) == ("3", "0")


def test_schema_refuses_cidr_and_bad_quotas(kube: Kube) -> None:
    """coturn ignores a CIDR it cannot parse (it logs and goes on): the schema refuses it."""
    for args, path in ((["--set", "coturn.allowedPeerRanges={10.244.0.0/16}"],
                        "/coturn/allowedPeerRanges/0"),
                       (["--set", "coturn.userQuota=0"], "/coturn/userQuota"),
                       (["--set", "redis.password=short"], "/redis/password")):
        out = kube.helm("template", "t", CHART, "--kube-version", kube.version, *args,
                        check=False)
        assert out.returncode != 0 and path in out.stderr, (args, out.stderr)


def _secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    data = _get(docs, "Secret", "t-parley-secrets")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _redis_envs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """PARLEY_REDIS_URL of every container that has one, by workload name."""
    found = {}
    for d in docs:
        if d["kind"] in PODS:
            for c in d["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    if e["name"] == "PARLEY_REDIS_URL":
                        found[d["metadata"]["name"]] = e
    return found


def test_bundled_redis_has_a_password_every_consumer_uses(kube: Kube) -> None:
    docs = _render(kube)
    secret = _secret(docs)
    password = secret["redis-password"]
    assert len(password) >= 32
    assert secret["redis-url"] == f"redis://:{password}@t-parley-redis:6379/0"
    envs = _redis_envs(docs)
    assert {"t-parley-signaling", "t-parley-operator", "t-parley-call-server-default"} <= \
        envs.keys()
    for name, env in envs.items():  # never a plain value in the pod spec
        assert env == {"name": "PARLEY_REDIS_URL", "valueFrom": {"secretKeyRef": {
            "name": "t-parley-secrets", "key": "redis-url"}}}, name
    redis_pod = _get(docs, "Deployment", "t-parley-redis")["spec"]["template"]["spec"]
    c = redis_pod["containers"][0]
    assert c["args"][:3] == ["redis-server", "--requirepass", "$(REDIS_PASSWORD)"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert env["REDIS_PASSWORD"] == env["REDISCLI_AUTH"] == {"name": "t-parley-secrets",
                                                            "key": "redis-password"}
    given = _secret(_render(kube, "--set", "redis.password=given-password-0123456789"))
    assert given["redis-url"] == "redis://:given-password-0123456789@t-parley-redis:6379/0"


def test_external_redis_url_comes_from_a_secret(kube: Kube) -> None:
    docs = _render(kube, "--set", "redis.enabled=false", "--set", "redis.urlSecret.name=ext-redis",
                   "--set", "redis.urlSecret.key=url")
    assert not any(d["metadata"]["name"] == "t-parley-redis" for d in docs)
    assert "redis-url" not in _secret(docs) and "redis-password" not in _secret(docs)
    for env in _redis_envs(docs).values():
        assert env["valueFrom"]["secretKeyRef"] == {"name": "ext-redis", "key": "url"}
    url = "rediss://:pw@r.example:6380/2"
    docs = _render(kube, "--set", "redis.enabled=false", "--set", f"redis.url={url}")
    assert _secret(docs)["redis-url"] == url
    assert all(e["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
               for e in _redis_envs(docs).values())


def test_redis_password_survives_an_upgrade(kube: Kube, namespace: str) -> None:
    """The generated password is kept (lookup of the installed Secret), so an upgrade does not
    lock every pod out of Redis."""
    kept = "kept-password-abcdefghijklmnopqrstuvwxyz"
    kube.kubectl("create", "secret", "generic", "t-parley-secrets", "-n", namespace,
                 f"--from-literal=redis-password={kept}", "--from-literal=token-secret=x",
                 "--from-literal=turn-secret=y")
    docs = _render(kube, "-n", namespace, "--dry-run=server")
    secret = _secret(docs)
    assert secret["redis-password"] == kept
    assert secret["redis-url"] == f"redis://:{kept}@t-parley-redis:6379/0"


@pytest.fixture
def bundled_redis(kube: Kube, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """redis-server (the test bed's package) started with the chart's rendered arguments, the
    password substituted as Kubernetes does; (port, rendered PARLEY_REDIS_URL)."""
    docs = _render(kube)
    secret = _secret(docs)
    c = _get(docs, "Deployment", "t-parley-redis")["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace("$(REDIS_PASSWORD)", secret["redis-password"]) for a in c["args"][1:]]
    args[args.index("--dir") + 1] = str(tmp_path)
    port = free_port()
    proc = subprocess.Popen([provision.APT_PACKAGES["redis-server"], *args, "--port", str(port),
                             "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 10, what="redis-server")
        assert proc.poll() is None
        yield port, secret["redis-url"].replace("t-parley-redis:6379", f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)


def test_bundled_redis_refuses_clients_without_the_password(
        bundled_redis: tuple[int, str]) -> None:
    port, url = bundled_redis
    once = Retry(NoBackoff(), 0)  # a refusal is the answer: no retries
    anonymous = redis.Redis(host="127.0.0.1", port=port, protocol=2, retry=once)
    with pytest.raises(redis.AuthenticationError, match="Authentication required"):
        anonymous.set("presence:alice", "replica-1")
    wrong = redis.Redis(host="127.0.0.1", port=port, password="guess", retry=once)
    with pytest.raises(redis.AuthenticationError, match="invalid username-password"):
        wrong.ping()
    client = redis.Redis.from_url(url)
    assert client.ping() and client.set("presence:alice", "replica-1")
    for c in (anonymous, wrong, client):
        c.close()


# -- NetworkPolicies -----------------------------------------------------------------------

def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        has, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": has and value in e.get("values", []),
              "NotIn": not has or value not in e.get("values", []),
              "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not ok:
            return False
    return True


def _pod_labels(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]:
            d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in PODS}


def _admits(rule: dict[str, Any], labels: dict[str, str], namespace: str = "same") -> bool:
    """Whether an ingress rule's ``from`` admits a pod (labels, in the release namespace or
    in another)."""
    if "from" not in rule:
        return True
    for peer in rule["from"]:
        if "ipBlock" in peer:
            continue
        ns = peer.get("namespaceSelector")
        if ns is None and namespace != "same":
            continue
        if ns is not None and not _selects(ns, {"kubernetes.io/metadata.name": namespace}):
            continue
        if _selects(peer.get("podSelector") or {}, labels):
            return True
    return False


def _ports(rule: dict[str, Any]) -> set[tuple[str, int, int]]:
    return {(p["protocol"], p["port"], p.get("endPort", p["port"])) for p in rule["ports"]}


def _ingress(docs: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """Every ingress rule that applies to a pod with these labels (the union of policies)."""
    rules: list[dict[str, Any]] = []
    for d in docs:
        if d["kind"] == "NetworkPolicy" and _selects(d["spec"]["podSelector"], labels):
            assert d["spec"]["policyTypes"] == ["Ingress"]
            rules += d["spec"].get("ingress", [])
    return rules


FILE_CREATOR = {"app.kubernetes.io/name": "parley", "app.kubernetes.io/part-of": "parley",
                "app.kubernetes.io/component": "file-creator"}  # labels of the operator's Jobs
STRANGER = {"app": "something-else"}


def test_network_policies_close_every_component(kube: Kube) -> None:
    docs = _render(kube)
    pods = _pod_labels(docs)
    assert set(pods) == {"signaling", "call-server", "operator", "turn", "redis", "kafka"}
    open_to_all = set()
    for component, labels in {**pods, "file-creator": FILE_CREATOR}.items():
        rules = _ingress(docs, labels)
        assert any(d["kind"] == "NetworkPolicy" and _selects(d["spec"]["podSelector"], labels)
                   for d in docs), f"{component} has no policy (all ingress would be open)"
        for rule in rules:
            if _admits(rule, STRANGER, namespace="internet"):
                open_to_all |= {(component, *p) for p in _ports(rule)}
    assert open_to_all == {("signaling", "TCP", 8080, 8080), ("turn", "UDP", 3478, 3478),
                           ("turn", "TCP", 3478, 3478), ("turn", "UDP", 49160, 49200),
                           ("call-server", "UDP", 7882, 7882)}

    def who(component: str, port: tuple[str, int, int]) -> set[str]:
        rules = [r for r in _ingress(docs, pods[component]) if port in _ports(r)]
        everyone = {**pods, "file-creator": FILE_CREATOR, "stranger": STRANGER}
        return {name for name, labels in everyone.items() if any(_admits(r, labels)
                                                                 for r in rules)}

    data_clients = {"signaling", "call-server", "operator", "file-creator", "redis", "kafka"}
    assert who("redis", ("TCP", 6379, 6379)) == data_clients  # never turn, never a stranger
    assert who("kafka", ("TCP", 9092, 9092)) == data_clients
    assert who("call-server", ("TCP", 8080, 8080)) == {"signaling", "operator"}
    assert who("operator", ("TCP", 9090, 9090)) == {"signaling", "operator"}
    assert not _ingress(docs, FILE_CREATOR)  # default deny: nothing reaches the Jobs
    assert not [d for d in _render(kube, "--set", "networkPolicy.enabled=false")
                if d["kind"] == "NetworkPolicy"]


def test_network_policies_follow_values(kube: Kube, namespace: str) -> None:
    """Watched namespaces reach Redis (the operator's pods there), metricsFrom reaches the
    metrics ports, and the apiserver accepts every policy (server-side dry run)."""
    monitoring = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}
    args = ["--set", "operator.watchNamespaces={team-a}",
            "--set-json", f"networkPolicy.metricsFrom={json.dumps([monitoring])}",
            "--set", "coturn.port=3479", "--set", "signaling.port=8081"]
    docs = _render(kube, *args)
    pods = _pod_labels(docs)
    redis_rules = _ingress(docs, pods["redis"])
    assert any(_admits(r, FILE_CREATOR, namespace="team-a") for r in redis_rules)
    assert not any(_admits(r, FILE_CREATOR, namespace="team-b") for r in redis_rules)
    control = [r for r in _ingress(docs, pods["call-server"]) if ("TCP", 8080, 8080) in _ports(r)]
    assert monitoring in control[0]["from"]
    assert any(("TCP", 8081, 8081) in _ports(r) for r in _ingress(docs, pods["signaling"]))
    assert any(("UDP", 3479, 3479) in _ports(r) for r in _ingress(docs, pods["turn"]))
    out = kube.helm("template", "t", CHART, "-n", namespace, "--kube-version", kube.version,
                    *args, "--show-only", "templates/networkpolicy.yaml").stdout
    res = kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=out)
    assert res.stdout.count("created (server dry run)") == 7, res.stdout

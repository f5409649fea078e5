"""One smoke test per test-bed service, each proving the service is real and usable."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from parley.turn import credential_for
from tests.conftest import Kube, free_port, wait_until


@pytest.mark.k8s
def test_deployment_gets_ready_pods_on_kwok_nodes(kube: Kube, namespace: str) -> None:
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "smoke", "namespace": namespace},
        "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "smoke"}},
            "template": {"metadata": {"labels": {"app": "smoke"}},
                         "spec": {"containers": [{"name": "c", "image": "example/smoke:1"}]}},
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def ready_pods() -> list[dict]:
        pods = kube.json("get", "pods", "-n", namespace, "-l", "app=smoke")["items"]
        return [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in p["status"].get("conditions", []))]

    pods = wait_until(lambda: len(ready_pods()) == 2 and ready_pods(), 90, 1, "2 Ready pods")
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert nodes <= {"kwok-node-0", "kwok-node-1"}, nodes
    dep = kube.json("get", "deployment", "smoke", "-n", namespace)
    assert dep["status"]["readyReplicas"] == 2


@pytest.mark.k8s
def test_helm_install_of_a_tiny_chart_is_deployed(kube: Kube, namespace: str,
                                                  tmp_path: Path) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n"
                                      "kubeVersion: '>=1.30.0-0'\n")
    (chart / "templates/cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  hello: world\n")
    kube.helm("install", "tiny", str(chart), "-n", namespace, "--wait", "--timeout", "60s")
    status = json.loads(kube.helm("status", "tiny", "-n", namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    cm = kube.json("get", "configmap", "tiny-cm", "-n", namespace)
    assert cm["data"] == {"hello": "world"}


@pytest.mark.kafka
def test_kafka_message_is_consumed(kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer

    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    payload = uuid.uuid4().hex.encode()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, payload)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        def received() -> bytes | None:
            msg = consumer.poll(1.0)
            return msg.value() if msg is not None and msg.error() is None else None

        assert wait_until(received, 60, 0, "the produced message") == payload
    finally:
        consumer.close()


@pytest.mark.redis
def test_redis_pubsub_delivers(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe("smoke")
    wait_until(lambda: pubsub.get_message(timeout=0.5), 5, 0, "subscribe confirmation")
    assert client.publish("smoke", b"hello") == 1
    msg = wait_until(lambda: pubsub.get_message(timeout=0.5), 5, 0, "the published message")
    assert msg["data"] == b"hello"
    pubsub.close()


@pytest.mark.turn
def test_aiortc_connects_relay_only_through_coturn(turn: tuple[str, str]) -> None:
    from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection

    uri, secret = turn
    cred = credential_for(secret, "smoke-user", ttl_s=600)

    async def scenario() -> tuple[str, list[str]]:
        config = RTCConfiguration(
            iceServers=[RTCIceServer(urls=[uri], username=cred.username,
                                     credential=cred.credential)],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        a, b = RTCPeerConnection(config), RTCPeerConnection(config)
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        channel = a.createDataChannel("smoke")
        channel.on("open", lambda: channel.send("through the relay"))

        @b.on("datachannel")
        def on_channel(ch: Any) -> None:
            ch.on("message", lambda m: got.done() or got.set_result(m))

        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        try:
            message = await asyncio.wait_for(got, 20)
            candidates = [c.type for c in a.sctp.transport.transport.iceGatherer
                          .getLocalCandidates()]
        finally:
            await a.close()
            await b.close()
        return message, candidates

    message, candidates = asyncio.run(scenario())
    assert message == "through the relay"
    assert candidates and set(candidates) == {"relay"}, candidates


@pytest.mark.browser
def test_chromium_loads_a_local_page_and_runs_js(browser: Any) -> None:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>smoke</title><p id=p>static</p>" \
                   b"<script>document.getElementById('p').textContent = 'ran ' + (6 * 7)</script>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.server_port}/")
        assert page.text_content("#p") == "ran 42"
        assert page.evaluate("() => typeof RTCPeerConnection") == "function"
        page.close()
    finally:
        server.shutdown()


@pytest.mark.prometheus
def test_prometheus_scrapes_a_local_target(prometheus: tuple[str, Path]) -> None:
    import httpx
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    url, targets = prometheus
    registry = CollectorRegistry()
    name = f"parley_smoke_{uuid.uuid4().hex[:8]}_total"
    Counter(name.removesuffix("_total"), "smoke counter", registry=registry).inc(7)
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    target = targets / f"smoke-{port}.json"
    target.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"],
                                   "labels": {"component": "smoke"}}]))
    try:
        def series() -> list[dict]:
            r = httpx.get(f"{url}/api/v1/query", params={"query": name}, timeout=5)
            return r.json()["data"]["result"]

        result = wait_until(series, 60, 0.5, f"series {name}")
        assert float(result[0]["value"][1]) == 7.0
        assert result[0]["metric"]["component"] == "smoke"
    finally:
        target.unlink()
        server.shutdown()


@pytest.mark.s3
def test_s3_object_round_trip(s3: dict[str, str]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["access_key"],
                          aws_secret_access_key=s3["secret_key"], region_name=s3["region"])
    bucket = f"smoke-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    body = uuid.uuid4().bytes * 1000
    client.put_object(Bucket=bucket, Key="a/b.bin", Body=body)
    assert client.get_object(Bucket=bucket, Key="a/b.bin")["Body"].read() == body
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["a/b.bin"]

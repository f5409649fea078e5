"""Install and start Parley's test bed of real services on 127.0.0.1.

Every service the tests talk to is a real process built or installed from the package registries
this machine reaches (Debian, the Go module proxy, Maven Central): a Kubernetes v1.34 control plane
with kwok nodes, Helm, Kafka (KRaft), Redis, coturn, Prometheus, Chromium and an S3-compatible
object store (versitygw over a local folder).

Artifacts are cached by version under ``$PARLEY_TESTBED_CACHE`` (default
``~/.cache/parley/testbed``), linked as ``.testbed/cache``, so a fresh clone on the same machine
starts warm. Runtime state (pids, logs, data, ``env``) lives in the git-ignored ``.testbed/``.

Usage: ``python3 testbed/provision.py up|down|status|install``. Standard library only: it runs
before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".testbed"
CACHE = Path(os.environ.get("PARLEY_TESTBED_CACHE", Path.home() / ".cache/parley/testbed"))
GO_DIR = ROOT / "testbed" / "go"

KUBE_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.7"
KWOK_VERSION = "v0.7.0"
HELM_VERSION = "v3.19.5"
KAFKA_VERSION = "3.9.1"
VERSITYGW_VERSION = "v1.8.0"
APT_PACKAGES = {
    "redis-server": "/usr/bin/redis-server",
    "coturn": "/usr/bin/turnserver",
    "prometheus": "/usr/bin/prometheus",
    "chromium": "/usr/lib/chromium/chromium",
    "chromium-driver": "/usr/bin/chromedriver",
    "ffmpeg": "/usr/bin/ffmpeg",
    "openssl": "/usr/bin/openssl",
    "iproute2": "/usr/sbin/ip",
    "janus": "/usr/bin/janus",
    "nftables": "/usr/sbin/nft",  # tests cut a live peer-to-peer path (loopback only)
    # an independent WHIP publisher (GStreamer webrtcbin) and what its libnice is rebuilt with
    "simple-whip-client": "/usr/bin/whip-client",
    "gstreamer1.0-nice": "/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstnice.so",
    "meson": "/usr/bin/meson",
    "libglib2.0-dev": "/usr/include/glib-2.0/glib.h",
    "libgnutls28-dev": "/usr/include/gnutls/gnutls.h",
}
LIBNICE_VERSION = "0.1.21-1"  # bookworm's, rebuilt without UPnP for whip-client
KWOK_NODES = ("kwok-node-0", "kwok-node-1")


class StepFailed(RuntimeError):
    """A provisioning step failed; carries what a user needs to act on it."""

    def __init__(self, step: str, command: Sequence[str] | str, log: Path | None, detail: str = ""):
        tail = ""
        if log is not None and log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        cmd = command if isinstance(command, str) else " ".join(map(str, command))
        super().__init__(f"step '{step}' failed: {detail}\n  command: {cmd}\n  log: {log}\n{tail}")


def say(msg: str) -> None:
    print(f"[testbed] {msg}", flush=True)


def run(step: str, cmd: Sequence[str], *, cwd: Path | None = None, env: dict | None = None) -> None:
    """Run a provisioning command, its output into a log; raise StepFailed on a non-zero exit."""
    log = STATE / "logs" / f"{step}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            list(map(str, cmd)), cwd=cwd, env={**os.environ, **(env or {})},
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )
    if proc.returncode != 0:
        raise StepFailed(step, cmd, log, f"exit code {proc.returncode}")
    say(f"{step}: done in {time.monotonic() - started:.0f}s")


def cached(name: str, version: str, build: Callable[[Path], None]) -> Path:
    """Return the cache folder of an artifact, building it once per version."""
    target = CACHE / f"{name}-{version}"
    stamp = target / ".complete"
    if stamp.exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    say(f"building {name} {version} (cached afterwards in {target})")
    build(target)
    stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    return target


# --------------------------------------------------------------------------- install


def install_apt() -> None:
    missing = [pkg for pkg, path in APT_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise StepFailed("apt", "apt-get", None, f"apt-get not found; install {missing} by hand")
    run("apt-update", ["apt-get", "update", "-q"])
    run(
        "apt-install",
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


def _version_ldflags() -> str:
    major, minor = KUBE_VERSION.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBE_VERSION}", f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=2026-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def build_kube(out: Path) -> None:
    cmds = [f"k8s.io/kubernetes/cmd/{c}" for c in
            ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")]
    run("build-kube", ["go", "build", "-trimpath", "-ldflags", f"-s -w {_version_ldflags()}",
                       "-o", str(out) + "/", *cmds],
        cwd=GO_DIR / "kube", env={"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"})


def build_etcd(out: Path) -> None:
    run("build-etcd", ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out / "etcd", "."],
        cwd=GO_DIR / "etcd", env={"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"})


def build_kwok(out: Path) -> None:
    run("build-kwok", ["go", "install", "-trimpath", "-ldflags", "-s -w",
                       f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
        env={"CGO_ENABLED": "0", "GOBIN": str(out), "GOFLAGS": ""})


def build_helm(out: Path) -> None:
    major, minor = KUBE_VERSION.lstrip("v").split(".")[:2]
    ld = (f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION} "
          f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major} "
          f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}")
    run("build-helm", ["go", "install", "-trimpath", "-ldflags", ld,
                       f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
        env={"CGO_ENABLED": "0", "GOBIN": str(out), "GOFLAGS": ""})


def build_versitygw(out: Path) -> None:
    run("build-versitygw", ["go", "install", "-trimpath", "-ldflags", "-s -w",
                            f"github.com/versity/versitygw/cmd/versitygw@{VERSITYGW_VERSION}"],
        env={"CGO_ENABLED": "0", "GOBIN": str(out), "GOFLAGS": ""})


def build_kafka(out: Path) -> None:
    run("build-kafka", ["mvn", "-q", "-B", "-f", ROOT / "testbed/kafka/pom.xml",
                        f"-Dkafka.version={KAFKA_VERSION}",
                        "dependency:copy-dependencies", "-DincludeScope=runtime",
                        f"-DoutputDirectory={out / 'lib'}"])


def build_libnice(out: Path) -> None:
    """Debian's libnice source built without UPnP, for ``whip-client`` (LD_LIBRARY_PATH).

    bookworm's simple-whip-client links libsoup 2.4; its libnice links gupnp-igd, which links
    libsoup 3, and libsoup aborts a process holding both ("libsoup2 symbols detected"). Without
    gupnp-igd libnice pulls in no libsoup. The source comes through apt (a private deb-src list,
    the system's sources are untouched)."""
    work = Path(tempfile.mkdtemp(prefix="parley-libnice-"))
    work.chmod(0o755)  # apt downloads as its sandbox user, _apt
    (work / "lists" / "partial").mkdir(parents=True)
    (work / "parts").mkdir()
    (work / "parts" / "deb-src.sources").write_text(
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    (work / "empty.list").write_text("")
    apt = ["apt-get", "-q", "-o", f"Dir::Etc::SourceParts={work / 'parts'}",
           "-o", f"Dir::Etc::SourceList={work / 'empty.list'}",
           "-o", f"Dir::State::Lists={work / 'lists'}"]
    run("libnice-sources", [*apt, "update"])
    run("libnice-source", [*apt, "source", "--download-only", f"libnice={LIBNICE_VERSION}"],
        cwd=work)
    upstream = LIBNICE_VERSION.split("-")[0]
    run("libnice-unpack", ["tar", "xzf", f"libnice_{upstream}.orig.tar.gz"], cwd=work)
    src = work / f"libnice-{upstream}"
    run("libnice-setup", ["meson", "setup", "build", f"--prefix={out}", "--libdir=lib",
                          "-Dgupnp=disabled", "-Dgstreamer=disabled", "-Dtests=disabled",
                          "-Dexamples=disabled", "-Dintrospection=disabled",
                          "-Dcrypto-library=gnutls"], cwd=src)
    run("libnice-build", ["ninja", "-C", "build", "install"], cwd=src)
    shutil.rmtree(work)


def install() -> dict[str, Path]:
    """Install every artifact (cached); return their folders."""
    STATE.mkdir(exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    link = STATE / "cache"
    if not link.exists():
        link.symlink_to(CACHE)
    install_apt()
    return {
        "kube": cached("kube", KUBE_VERSION, build_kube),
        "etcd": cached("etcd", ETCD_VERSION, build_etcd),
        "kwok": cached("kwok", KWOK_VERSION, build_kwok),
        "helm": cached("helm", HELM_VERSION, build_helm),
        "kafka": cached("kafka", KAFKA_VERSION, build_kafka),
        "versitygw": cached("versitygw", VERSITYGW_VERSION, build_versitygw),
        "libnice": cached("libnice-nogupnp", LIBNICE_VERSION, build_libnice),
    }


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return stat[0] != "Z"
    except OSError:
        return False


def start(name: str, cmd: Sequence[str | Path], *, cwd: Path | None = None,
          env: dict | None = None) -> int:
    """Start a long-running service in its own session, so it outlives this script."""
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids = STATE / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    log = (logs / f"{name}.log").open("w")
    proc = subprocess.Popen(
        list(map(str, cmd)), cwd=cwd, env={**os.environ, **(env or {})},
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (pids / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def wait_for(name: str, check: Callable[[], bool], timeout: float, cmd: str = "") -> None:
    """Poll ``check`` until it holds; on timeout or the process dying, fail with its log tail."""
    log = STATE / "logs" / f"{name}.log"
    pidfile = STATE / "pids" / f"{name}.pid"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        if pidfile.exists() and not pid_alive(int(pidfile.read_text())):
            raise StepFailed(f"start-{name}", cmd or name, log, "process exited")
        time.sleep(0.3)
    raise StepFailed(f"start-{name}", cmd or name, log, f"not ready after {timeout:.0f}s")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_all() -> None:
    """Stop exactly the processes this script started, by pid, newest first."""
    pids = STATE / "pids"
    if not pids.exists():
        return
    files = sorted(pids.glob("*.pid"), key=lambda p: p.stat().st_mtime, reverse=True)
    for f in files:
        pid = int(f.read_text())
        if pid_alive(pid):
            say(f"stopping {f.stem} (pid {pid})")
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 15
    for f in files:
        pid = int(f.read_text())
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        f.unlink()
    (STATE / "env").unlink(missing_ok=True)


# --------------------------------------------------------------------------- kubernetes


def make_certs(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "apiserver.crt").exists():
        return
    ossl = "openssl"
    run("pki-ca", [ossl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                   "-subj", "/CN=parley-testbed-ca", "-keyout", pki / "ca.key",
                   "-out", pki / "ca.crt"])
    ext = pki / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
                   "DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\n")
    run("pki-server-key", [ossl, "req", "-newkey", "rsa:2048", "-nodes", "-subj",
                           "/CN=kube-apiserver", "-keyout", pki / "apiserver.key",
                           "-out", pki / "apiserver.csr"])
    run("pki-server-sign", [ossl, "x509", "-req", "-in", pki / "apiserver.csr", "-CA",
                            pki / "ca.crt", "-CAkey", pki / "ca.key", "-CAcreateserial",
                            "-days", "3650", "-extfile", ext, "-out", pki / "apiserver.crt"])
    run("pki-sa", [ossl, "genrsa", "-out", pki / "sa.key", "2048"])
    run("pki-sa-pub", [ossl, "rsa", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub"])


def write_kubeconfig(path: Path, port: int, token: str, ca: Path) -> None:
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "parley-testbed",
        "clusters": [{"name": "parley-testbed", "cluster": {
            "server": f"https://127.0.0.1:{port}", "certificate-authority-data": ca_data}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "parley-testbed", "context": {
            "cluster": "parley-testbed", "user": "admin", "namespace": "default"}}],
    }, indent=2))


def apiserver_ready(port: int, token: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{port}/readyz",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
        return resp.status == 200


def kwok_node(name: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "kubernetes.io/role": "agent",
                       "node-role.kubernetes.io/agent": "", "type": "kwok",
                       "topology.kubernetes.io/region": "local"},
        },
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "phase": "Running",
        },
    }


def start_kubernetes(art: dict[str, Path], env: dict[str, str]) -> None:
    k8s = STATE / "k8s"
    pki = k8s / "pki"
    make_certs(pki)
    token = secrets.token_hex(16)
    (k8s / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    kubeconfig = k8s / "admin.kubeconfig"

    etcd_client, etcd_peer = free_port(), free_port()
    shutil.rmtree(k8s / "etcd-data", ignore_errors=True)
    start("etcd", [art["etcd"] / "etcd", "--data-dir", k8s / "etcd-data", "--unsafe-no-fsync",
                   "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                   "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                   "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                   "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                   "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
                   "--log-level", "warn"])
    wait_for("etcd", lambda: port_open(etcd_client), 30)

    port = free_port()
    start("kube-apiserver", [
        art["kube"] / "kube-apiserver", f"--etcd-servers=http://127.0.0.1:{etcd_client}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={k8s / 'tokens.csv'}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=RBAC",
        "--allow-privileged=true", "--enable-priority-and-fairness=false",
        "--disable-admission-plugins=ServiceAccount", "--v=1",
    ])
    wait_for("kube-apiserver", lambda: apiserver_ready(port, token), 120)
    write_kubeconfig(kubeconfig, port, token, pki / "ca.crt")

    start("kube-controller-manager", [
        art["kube"] / "kube-controller-manager", f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
        "--controllers=*,-nodeipam,-service,-route,-cloud-node-lifecycle",
        "--concurrent-deployment-syncs=10", "--v=1",
    ])
    start("kube-scheduler", [
        art["kube"] / "kube-scheduler", f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
        "--v=1",
    ])
    start("kwok", [
        art["kwok"] / "kwok", f"--kubeconfig={kubeconfig}", "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        "--manage-nodes-with-label-selector=", "--disregard-status-with-annotation-selector=",
        "--disregard-status-with-label-selector=", "--cidr=10.0.0.1/16", "--node-ip=10.0.0.1",
        f"--server-address=127.0.0.1:{free_port()}", "--node-lease-duration-seconds=40",
    ])
    kubectl = [str(art["kube"] / "kubectl"), f"--kubeconfig={kubeconfig}"]
    nodes = STATE / "k8s" / "nodes.json"
    nodes.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                 "items": [kwok_node(n) for n in KWOK_NODES]}))
    run("kwok-nodes", [*kubectl, "apply", "-f", nodes])

    def nodes_ready() -> bool:
        out = subprocess.run([*kubectl, "get", "nodes", "-o", "json"], capture_output=True,
                             text=True, check=True).stdout
        ready = [n for n in json.loads(out)["items"]
                 if not n["spec"].get("taints")
                 and any(c["type"] == "Ready" and c["status"] == "True"
                         for c in n.get("status", {}).get("conditions", []))]
        return len(ready) >= len(KWOK_NODES)

    wait_for("kwok", nodes_ready, 60, "kubectl get nodes")

    def default_sa() -> bool:
        return subprocess.run([*kubectl, "get", "serviceaccount", "default", "-n", "default"],
                              capture_output=True, check=False).returncode == 0

    wait_for("kube-controller-manager", default_sa, 60, "kubectl get sa default")
    env.update({
        "KUBECONFIG": str(kubeconfig), "KUBECTL": str(art["kube"] / "kubectl"),
        "HELM": str(art["helm"] / "helm"), "KUBE_VERSION": KUBE_VERSION,
    })


# --------------------------------------------------------------------------- other services


def start_redis(env: dict[str, str]) -> None:
    port = free_port()
    start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"])
    wait_for("redis", lambda: port_open(port), 20)
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"


def start_kafka(art: dict[str, Path], env: dict[str, str]) -> None:
    kdir = STATE / "kafka"
    shutil.rmtree(kdir, ignore_errors=True)
    kdir.mkdir(parents=True)
    port, ctrl = free_port(), free_port()
    props = kdir / "server.properties"
    props.write_text("\n".join([
        "process.roles=broker,controller", "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{ctrl}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={kdir / 'data'}", "num.partitions=1",
        "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1", "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true", "log.flush.interval.messages=100000",
    ]) + "\n")
    (kdir / "log4j.properties").write_text(
        "log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.server.KafkaServer=INFO\nlog4j.logger.kafka.server.KafkaRaftServer=INFO\n")
    classpath = f"{art['kafka'] / 'lib'}/*"
    java = ["java", "-Xms256m", "-Xmx768m", "-XX:+UseSerialGC",
            f"-Dlog4j.configuration=file:{kdir / 'log4j.properties'}", "-cp", classpath]
    cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
    run("kafka-format", [*java, "kafka.tools.StorageTool", "format",
                         f"--cluster-id={cluster_id}", "--config", props])
    start("kafka", [*java, "kafka.Kafka", props])

    def ready() -> bool:
        return port_open(port) and "started" in (STATE / "logs/kafka.log").read_text().lower()

    wait_for("kafka", ready, 120)
    env["KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"


def start_coturn(env: dict[str, str]) -> None:
    port = free_port()
    secret = secrets.token_hex(16)
    lo = 49152 + (port % 8000)
    start("coturn", [
        "turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
        f"--listening-port={port}", f"--min-port={lo}", f"--max-port={lo + 400}",
        "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=parley.local",
        "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
        "--no-multicast-peers", "--log-file=stdout", "--simple-log",
        f"--pidfile={STATE / 'coturn.pid'}",
    ])
    wait_for("coturn", lambda: port_open(port), 20)
    env.update({"TURN_URI": f"turn:127.0.0.1:{port}", "TURN_SECRET": secret})


def start_prometheus(env: dict[str, str]) -> None:
    pdir = STATE / "prometheus"
    shutil.rmtree(pdir / "data", ignore_errors=True)
    (pdir / "targets").mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = pdir / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        "  - job_name: parley\n    file_sd_configs:\n"
        f"      - files: ['{pdir / 'targets'}/*.json']\n        refresh_interval: 1s\n"
    )
    start("prometheus", ["prometheus", f"--config.file={cfg}",
                         f"--storage.tsdb.path={pdir / 'data'}",
                         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"])

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
            return r.status == 200

    wait_for("prometheus", ready, 60)
    env.update({"PROMETHEUS_URL": f"http://127.0.0.1:{port}",
                "PROMETHEUS_TARGETS_DIR": str(pdir / "targets")})


def start_s3(art: dict[str, Path], env: dict[str, str]) -> None:
    root = STATE / "s3"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = free_port()
    access, secret = "parley-" + secrets.token_hex(4), secrets.token_hex(16)
    start("s3", [art["versitygw"] / "versitygw", "--port", f"127.0.0.1:{port}",
                 "--access", access, "--secret", secret, "--region", "us-east-1",
                 "posix", "--nometa", root])

    def ready() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
        except urllib.error.HTTPError:
            return True  # an S3 error document (403) means it is serving
        return True

    wait_for("s3", ready, 30)
    env.update({"S3_ENDPOINT": f"http://127.0.0.1:{port}", "S3_ACCESS_KEY": access,
                "S3_SECRET_KEY": secret, "S3_REGION": "us-east-1"})


# --------------------------------------------------------------------------- up / status


def read_env() -> dict[str, str]:
    path = STATE / "env"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def running() -> bool:
    """True when a previous ``up`` completed and every service it started is still alive."""
    env = read_env()
    pids = list((STATE / "pids").glob("*.pid")) if (STATE / "pids").exists() else []
    return bool(env) and bool(pids) and all(pid_alive(int(p.read_text())) for p in pids)


# Each service: the env key that proves it was started, and how to start it.
SERVICES: tuple[tuple[str, Callable[[dict[str, Path], dict[str, str]], None]], ...] = (
    ("REDIS_URL", lambda art, env: start_redis(env)),
    ("TURN_URI", lambda art, env: start_coturn(env)),
    ("PROMETHEUS_URL", lambda art, env: start_prometheus(env)),
    ("S3_ENDPOINT", start_s3),
    ("KAFKA_BOOTSTRAP", start_kafka),
    ("KUBECONFIG", start_kubernetes),
    ("WHIP_CLIENT_LIBS", lambda art, env: env.update(
        {"WHIP_CLIENT": APT_PACKAGES["simple-whip-client"],
         "WHIP_CLIENT_LIBS": str(art["libnice"] / "lib")})),
)


def up() -> dict[str, str]:
    """Start the test bed; when it runs already, start only services it lacks (a newer
    version of this script may have added some), keeping the running ones and their ports.

    Serialized by a file lock: two pytest processes starting at once (a developer's parallel
    runs) must not both stop and start the services under each other."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "up.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up()


def _up() -> dict[str, str]:
    if running():
        env = read_env()
        missing = [(key, starter) for key, starter in SERVICES if key not in env]
        if not missing:
            say(f"already running; environment in {STATE / 'env'}")
            return env
    else:
        stop_all()
        env, missing = {}, list(SERVICES)
    t0 = time.monotonic()
    art = install()
    say(f"artifacts ready in {time.monotonic() - t0:.0f}s")
    t1 = time.monotonic()
    try:
        for _, starter in missing:
            starter(art, env)
    except BaseException:
        stop_all()
        raise
    env["CHROMIUM"] = APT_PACKAGES["chromium"]
    (STATE / "env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    say(f"services started in {time.monotonic() - t1:.0f}s; environment in {STATE / 'env'}")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status", "install"])
    args = parser.parse_args(argv)
    try:
        if args.action == "install":
            install()
        elif args.action == "up":
            up()
            print((STATE / "env").read_text(), end="")
        elif args.action == "down":
            stop_all()
        else:
            alive = running()
            print("running" if alive else "stopped")
            return 0 if alive else 1
    except StepFailed as exc:
        print(f"[testbed] ERROR {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

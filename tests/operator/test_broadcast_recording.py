"""The Broadcast's recording as observed (issue 11 item 5), on the test-bed apiserver: the
operator makes `{name}-recorder` (a kwok pod); a real `parley media-node --role recorder` process
runs with that Deployment's environment resolved as the kubelet would (downward-API pod fields,
its ServiceAccount's token as its only apiserver credential) and archives a real broadcast
(`parley up`: WHIP ingest from an aiortc publisher and its 180p and 144p LL-HLS, both recorded:
``spec.recording.renditions: all``) into the operator's recording store, a local folder here.
It reports what it archives in its Lease; the operator's ``status.recording`` (each rung's
counts) and ``Recording`` condition follow: NoReport while only the Deployment is
available, True while segments arrive, Stalled while the recorder is frozen (SIGSTOP, as on a
hung store write) longer than its idle time, True again after SIGCONT with the same recording
going on, Finished after SIGTERM (the recording ready). The
numbers in status are checked against the store's own files; the test writes none."""

from __future__ import annotations

import asyncio
import calendar
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parley.recorder import state
from parley.recorder.store import LocalStore
from tests.broadcast.clients import Publisher
from tests.broadcast.test_parley_up import SECRET, key
from tests.conftest import ROOT, Kube, eventually, free_port, port_open, wait_until
from tests.operator.conftest import Operator, apply, cond, get
from tests.operator.test_broadcast_access import token
from tests.operator.test_broadcast_wiring import kubeconfig_for, resolve

pytestmark = pytest.mark.k8s
STALLED_AFTER_S = 15.0  # kube-operator/broadcast_recorder.py
# Shorter than the ~17 s freeze below: the recorder's own clock runs while it is frozen, yet the
# upstream went on meanwhile, so the same recording goes on after SIGCONT (one archive per run).
IDLE_S = 5


def broadcast() -> dict[str, Any]:
    return {"apiVersion": "parley.dev/v1alpha1", "kind": "Broadcast",
            "metadata": {"name": "show"},
            "spec": {"sources": [{"name": "cam1"}],
                     "renditions": [{"name": "144p", "height": 144, "bitrateKbps": 100},
                                    {"name": "180p", "height": 180, "bitrateKbps": 200}],
                     "edge": {"regions": [{"name": "eu", "minReplicas": 1, "maxReplicas": 1}]},
                     "recording": {"enabled": True, "renditions": "all"}}}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def recording_operator(kube: Kube, namespace: str, crds: None, tmp_path: Path,
                       store: LocalStore) -> Iterator[Operator]:
    """The operator with a recording store and the broadcast Secret (the link secret)."""
    kube.kubectl("create", "secret", "generic", "parley-secrets", "-n", namespace,
                 f"--from-literal=token-secret={SECRET}")
    op = Operator(kube, namespace, tmp_path, env={
        "PARLEY_RECORDING_STORE": store.url, "PARLEY_BROADCAST_SECRET": "parley-secrets"}).start()
    yield op
    op.stop()


@pytest.fixture
def recorder_process(tmp_path: Path) -> Iterator[Callable[[dict[str, str]],
                                                          subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "recorder.log"

    def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "media-node", "--role", "recorder",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
            env={k: v for k, v in {**os.environ, **env}.items()
                 if k != "PARLEY_TOKEN_SECRET" or k in env})
        procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what="recorder")
        assert proc.poll() is None, log.read_text()
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def archived(store: LocalStore, recording: str, rendition: str) -> list[float]:
    """Durations (s) of the segments in the store, in archive order (the keys carry them)."""
    prefix = f"recordings/{recording}/files/{rendition}/"
    names = sorted(k[len(prefix):] for k in store.list(prefix) if k.endswith(".m4s"))
    return [int(n[:-4].split("_")[4]) / 1e6 for n in names]


async def test_a_real_recorder_reports_what_it_archives_and_the_operator_shows_it(
        kube: Kube, namespace: str, recording_operator: Operator, store: LocalStore,
        recorder_process: Callable[[dict[str, str]], subprocess.Popen[bytes]],
        parley_server: Callable[..., str], tmp_path: Path) -> None:
    ns, bkey = namespace, f"{namespace}.show"
    apply(kube, ns, broadcast())

    def bcast() -> dict[str, Any]:
        return get(kube, ns, "bcast", "show")

    # the Deployment is available (a kwok pod) but nothing reported: not "Recording"
    b = wait_until(lambda: (lambda b: b if cond(b, "Recording").get("reason") == "NoReport"
                            else None)(bcast()), 60, 0.5,
                   what=f"Recording NoReport\n{recording_operator.logs()[-2000:]}")
    assert cond(b, "Recording")["status"] == "False" and "recording" not in b["status"]
    pod = wait_until(lambda: kube.json("get", "pods", "-n", ns, "-l",
                                       "parley.dev/workload=show-recorder")["items"],
                     60, 0.5, what="the recorder pod")[0]
    spec = get(kube, ns, "deployment", "show-recorder")["spec"]["template"]["spec"]
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == (
        "show-recorder", True)
    env = resolve(kube, ns, spec["containers"][0], pod)
    assert (env["POD_NAME"], env["POD_NAMESPACE"]) == (pod["metadata"]["name"], ns)
    assert env["PARLEY_RECORDING_STORE"] == store.url and env["PARLEY_TOKEN_SECRET"] == SECRET
    assert env["PARLEY_RECORD_RENDITIONS"] == "180p,144p"  # every rung, the programme first

    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET,
                          "PARLEY_BROADCAST_LADDER": "180p:200,144p:100",
                          "PARLEY_X264_PRESET": "ultrafast"})
    cam = Publisher(base, bkey, key(bkey, "cam1"), (320, 240))
    assert (await cam.publish()).status_code == 201
    bearer = token(kube, ns, "show-recorder")
    # the Deployment's environment; the upstream is the real one on loopback (the transcoder
    # Service's name does not resolve here)
    rec = await asyncio.to_thread(recorder_process, {
        **env, "PARLEY_UPSTREAM_URL": f"{base}/live/{bkey}/{{rendition}}.m3u8",
        "PARLEY_REPORT_INTERVAL": "0.5", "PARLEY_RECORDER_IDLE_S": str(IDLE_S),
        "KUBECONFIG": kubeconfig_for(kube, bearer, tmp_path / "recorder.kubeconfig")})
    t0 = time.monotonic()

    async def status_where(check: Callable[[dict[str, Any]], bool], limit: float, what: str
                           ) -> dict[str, Any]:
        async def one() -> dict[str, Any] | None:
            b = await asyncio.to_thread(bcast)
            return b if check(b) else None
        return await eventually(one, limit, what)

    try:
        b = await status_where(lambda b: cond(b, "Recording").get("status") == "True" and
                               b["status"]["recording"].get("segments", 0) >= 3, 40,
                               "Recording True with 3 segments archived")
        t_true = time.monotonic() - t0
        r, c = b["status"]["recording"], cond(b, "Recording")
        assert c["observedGeneration"] == b["metadata"]["generation"] and c["reason"] == \
            "Recording", c
        assert (r["state"], r["rendition"]) == ("recording", "180p"), r
        assert r["location"] == f"{store.url}/recordings/{r['id']}/files/", r
        assert r["location"] in c["message"] and "error" not in r, (c, r)
        [m] = state.for_room(store, f"broadcast:{bkey}")
        assert (m["id"], m["state"]) == (r["id"], "recording")
        durations = archived(store, r["id"], "180p")
        # the store holds at least what was reported, and the reported seconds are its files'
        assert len(durations) >= r["segments"], (durations, r)
        assert abs(sum(durations[:r["segments"]]) - r["seconds"]) < 0.01, (durations, r)
        assert [x["name"] for x in r["renditions"]] == ["180p", "144p"], r
        assert (r["renditions"][0]["segments"], r["renditions"][0]["seconds"]) == (
            r["segments"], r["seconds"])
        for x in r["renditions"]:  # each rung's count is its own files'
            theirs = archived(store, r["id"], x["name"])
            assert len(theirs) >= x["segments"] > 0, (x, theirs)
            assert abs(sum(theirs[:x["segments"]]) - x["seconds"]) < 0.01, (x, theirs)
        last = calendar.timegm(time.strptime(r["lastSegmentAt"], "%Y-%m-%dT%H:%M:%SZ"))
        assert -1 <= time.time() - last < STALLED_AFTER_S, r["lastSegmentAt"]

        # frozen (a hung store write): its Lease is still fresh, its last segment gets old
        rec.send_signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        b = await status_where(lambda b: cond(b, "Recording").get("reason") == "Stalled",
                               STALLED_AFTER_S + 10, "Recording Stalled")
        t_stalled = time.monotonic() - t_stop
        assert cond(b, "Recording")["status"] == "False"
        assert b["status"]["recording"]["state"] == "recording"
        assert t_stalled >= STALLED_AFTER_S - 5, t_stalled  # not before the last segment aged
        frozen_at = b["status"]["recording"]["segments"]
        rec.send_signal(signal.SIGCONT)
        t_cont = time.monotonic()
        b = await status_where(lambda b: cond(b, "Recording").get("status") == "True" and
                               b["status"]["recording"]["segments"] > frozen_at, 20,
                               "Recording True again after SIGCONT")
        t_again = time.monotonic() - t_cont
        assert b["status"]["recording"]["id"] == r["id"]  # the same recording goes on

        # SIGTERM (a rollout, recording turned off) ends the recording; its last report says
        # it is ready (the source's leaving is tests/broadcast/test_recorder.py's end)
        rec.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        assert await asyncio.to_thread(rec.wait, 30) == 0
        b = await status_where(lambda b: cond(b, "Recording").get("reason") == "Finished",
                               10, "Recording Finished")
        t_finished = time.monotonic() - t_term
        done = b["status"]["recording"]
        [m] = state.for_room(store, f"broadcast:{bkey}")
        assert (done["state"], done["id"], m["state"]) == ("ready", r["id"], "ready"), done
        assert done["segments"] == m["segments"]["180p"] == len(archived(store, r["id"], "180p"))
        assert done["seconds"] == m["duration"], (done, m)
        assert done["renditions"] == [
            {"name": n, "segments": len(archived(store, r["id"], n)),
             "seconds": m["seconds"][n]} for n in ("180p", "144p")], (done, m)
        for x in done["renditions"]:
            assert abs(sum(archived(store, r["id"], x["name"])) - x["seconds"]) < 0.01, x
        assert store.get(f"recordings/{r['id']}/files/programme.mp4")
        print(f"Recording True {t_true:.1f} s after the recorder started; Stalled "
              f"{t_stalled:.1f} s after SIGSTOP; True again {t_again:.1f} s after SIGCONT; "
              f"Finished {t_finished:.1f} s after SIGTERM; {done['segments']} segments, "
              f"{done['seconds']} s")

        # turned off, the recorder gone: the finished recording stays shown
        kube.kubectl("patch", "bcast", "show", "-n", ns, "--type=merge", "-p",
                     '{"spec":{"recording":{"enabled":false}}}')
        b = await status_where(lambda b: cond(b, "Recording").get("reason") == "Disabled", 30,
                               "Recording Disabled")
        assert b["status"]["recording"] == done, b["status"]["recording"]
    finally:
        await cam.stop()

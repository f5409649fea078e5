"""The file creator as a Job: the operator turns a pending recording in the real S3 store into
exactly one Job (also across kill -9), the Job's command compiles it, and the operator clears the
marker once the manifest is final.

kwok nodes run no containers (they mark a Job's pod Completed at once), so the test runs the
container's command from the created Job as a local process, with the env of the Secret the Job
takes it from.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from parley.operator.recordings import job_name
from parley.recorder import state
from tests.conftest import Kube, wait_until
from tests.operator.conftest import Operator, apply
from tests.recording.jobs import new_bucket, run_job_command, s3_env, stopped_recording

pytestmark = [pytest.mark.k8s, pytest.mark.s3]

SECRET = "parley-recorder-s3"
IMAGE = "ghcr.io/parley/media-node:test"


def _jobs(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    return kube.json("get", "jobs", "-n", namespace, "-l",
                     "app.kubernetes.io/component=file-creator")["items"]


def _events(kube: Kube, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.json("get", "events", "-n", namespace)["items"]
            if e["reason"] == reason]


def _metric(op: Operator, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics",
                                  timeout=5).read().decode()
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(name + " "))


def _operator(kube: Kube, namespace: str, tmp: Path, store_url: str, s3: dict[str, str]
              ) -> Operator:
    """The operator with the store, as the chart runs it: S3 keys in its env, the Secret's
    name for the Jobs, Jobs in the test namespace."""
    return Operator(kube, namespace, tmp, env={
        **s3_env(s3), "PARLEY_RECORDING_STORE": store_url, "PARLEY_RECORDER_NAMESPACE": namespace,
        "PARLEY_RECORDER_SECRET": SECRET, "PARLEY_RECORDER_IMAGE": IMAGE,
        "PARLEY_RECORDING_POLL_SECONDS": "1"})


def _secret(kube: Kube, namespace: str, s3: dict[str, str]) -> None:
    apply(kube, namespace, {"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": SECRET}, "stringData": s3_env(s3)})


def _secret_env(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    data = kube.json("get", "secret", name, "-n", namespace)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_one_job_per_pending_recording_survives_restart_and_compiles(
        kube: Kube, namespace: str, crds: None, tmp_path: Path, s3: dict[str, str]) -> None:
    store = new_bucket(s3)
    _secret(kube, namespace, s3)
    rid = stopped_recording(store, "room-fc")
    op = _operator(kube, namespace, tmp_path, store.url, s3).start()
    try:
        jobs = wait_until(lambda: _jobs(kube, namespace), 60, 0.5, what="file-creator Job")
        assert len(jobs) == 1
        job = jobs[0]
        assert job["metadata"]["name"] == f"parley-rec-{rid}" == job_name(rid)
        assert job["metadata"]["labels"]["parley.dev/recording"] == rid
        spec, pod = job["spec"], job["spec"]["template"]["spec"]
        assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"],
                spec["activeDeadlineSeconds"]) == (3, 86400, 3600)
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
        assert job["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"] == "file-creator"
        (container,) = pod["containers"]
        assert container["image"] == IMAGE
        assert container["command"] == ["python", "-m", "parley.recorder.job", "--store",
                                        store.url, "--recording", rid]
        assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
        assert container["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        started = wait_until(lambda: _events(kube, namespace, "FileCreatorStarted"), 30, 0.5,
                             what="FileCreatorStarted event")
        assert started[0]["involvedObject"]["kind"] == "Job"
        assert started[0]["involvedObject"]["name"] == job["metadata"]["name"]
        assert _metric(op, "parley_operator_file_creator_jobs_total") == 1

        # kill -9 and restart: the marker is still there, the Job is not created twice
        op.kill()
        op.start()
        wait_until(lambda: "file creator: Jobs in" in op.log_path.read_text(), 30, 0.2,
                   what="the restarted operator's file-creator loop")
        time.sleep(4)  # four passes at 1 s
        assert [j["metadata"]["uid"] for j in _jobs(kube, namespace)] == [job["metadata"]["uid"]]
        assert len(_events(kube, namespace, "FileCreatorStarted")) == 1
        assert _metric(op, "parley_operator_file_creator_jobs_total") == 0
        assert state.pending_ids(store) == [rid]  # still processing: the marker stays

        # what the Job's pod runs, with the env its Secret gives it
        env = {}
        for source in container["envFrom"]:
            env.update(_secret_env(kube, namespace, source["secretRef"]["name"]))
        done = run_job_command(container["command"], env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.strip().splitlines()[-1])["state"] == "ready"
        manifest = state.load(store, rid)
        assert manifest["state"] == "ready" and manifest["progress"] == 1.0
        files = manifest["files"]
        assert store.exists(f"recordings/{rid}/files/{files['composite']}")
        assert len(files["tracks"]) == 4
        for t in files["tracks"]:
            assert store.exists(f"recordings/{rid}/files/{t['file']}")

        # the operator (the marker's only owner) clears it, and starts nothing more
        wait_until(lambda: not state.pending_ids(store), 30, 0.5, what="marker cleared")
        assert len(_jobs(kube, namespace)) == 1
        assert state.load(store, rid)["state"] == "ready"
    finally:
        op.stop()


def test_a_job_that_gave_up_fails_the_recording(
        kube: Kube, namespace: str, crds: None, tmp_path: Path, s3: dict[str, str]) -> None:
    """A Job that ran out of retries or time never writes an end state itself (OOM-killed,
    say): the operator marks the recording failed with the Job's reason, so nobody waits on a
    recording stuck in processing. Here the Job (its name taken before the operator starts)
    can never be scheduled and hits its deadline."""
    store = new_bucket(s3)
    rid = stopped_recording(store, "room-fc")
    apply(kube, namespace, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job_name(rid)},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 2, "template": {"spec": {
            "restartPolicy": "Never", "nodeSelector": {"parley.dev/no-such-node": "x"},
            "containers": [{"name": "file-creator", "image": IMAGE}]}}}})
    wait_until(lambda: any(c["type"] == "Failed" and c["status"] == "True" for c in kube.json(
        "get", "job", job_name(rid), "-n", namespace).get("status", {}).get("conditions", [])),
        60, 0.5, what="the Job to fail")
    op = _operator(kube, namespace, tmp_path, store.url, s3).start()
    try:
        wait_until(lambda: not state.pending_ids(store), 60, 0.5, what="marker cleared")
        manifest = state.load(store, rid)
        assert manifest["state"] == "failed", manifest
        assert "DeadlineExceeded" in manifest["error"], manifest["error"]
        (warning,) = wait_until(lambda: _events(kube, namespace, "FileCreatorFailed"), 30, 0.5,
                                what="FileCreatorFailed event")
        assert warning["type"] == "Warning" and warning["involvedObject"]["kind"] == "Job"
        assert [j["metadata"]["name"] for j in kube.json("get", "jobs", "-n", namespace)[
            "items"]] == [job_name(rid)]  # the operator made no second one
    finally:
        op.stop()

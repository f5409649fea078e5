"""The file creator as a Kubernetes Job per stopped recording (docs/recording.md).

Level-triggered from the recording store, not from events: signaling leaves a ``pending/<id>``
marker when a recording stops, and every pass lists the markers, so nothing depends on an event
that Kafka may drop, and a restarted operator sees exactly what is still to do. The Job has a
deterministic name and a create that finds it already there (409) is a no-op, so passes, retries
and restarts never start a second compilation. The Job writes the manifest (``ready`` or
``failed``); the operator is the only one that clears the marker, after it sees that end state.

Runs on the leader only (started after the lease is held) and only when the operator knows the
store (``PARLEY_RECORDING_STORE``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from parley.operator import kube, metrics
from parley.operator.config import COMPONENT, MANAGED_BY, RECORDING_LABEL, OperatorConfig
from parley.recorder import state
from parley.recorder.store import Store, open_store

log = logging.getLogger("parley.operator.recordings")

COMPONENT_NAME = "file-creator"
RECORDING_ID = "parley.dev/recording-id"  # the exact id, when the label had to be shortened
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def _digest(recording: str) -> str:
    return hashlib.sha256(recording.encode()).hexdigest()[:10]


def job_name(recording: str) -> str:
    """``parley-rec-<id>`` as a DNS label (<= 63). Recording ids are 32 hex digits and fit as
    they are; an id that had to be changed gets a hash suffix, so two never share a Job."""
    slug = re.sub(r"[^a-z0-9-]+", "-", recording.lower()).strip("-")
    name = f"parley-rec-{slug}"
    if slug == recording and len(name) <= 63:
        return name
    return "-".join(p for p in ("parley-rec", slug[:41].rstrip("-"), _digest(recording)) if p)


def recording_label(recording: str) -> str:
    """The id itself when it is a valid label value, else the hashed form of the Job name."""
    if _LABEL_VALUE.match(recording):
        return recording
    return job_name(recording).removeprefix("parley-rec-")


def job_command(store_url: str, recording: str) -> list[str]:
    """The container's command (it replaces the images' ``parley`` entrypoint)."""
    return ["python", "-m", "parley.recorder.job", "--store", store_url,
            "--recording", recording]


def file_creator_job(config: OperatorConfig, recording: str) -> dict[str, Any]:
    """One compilation, hardened like the chart's pods: non-root, read-only root filesystem
    (the creator writes only to an emptyDir /tmp), no API token, bounded time and retries."""
    assert config.recording_store is not None
    lbl = {"app.kubernetes.io/name": "parley", "app.kubernetes.io/part-of": "parley",
           COMPONENT: COMPONENT_NAME, MANAGED_BY: "parley-operator",
           RECORDING_LABEL: recording_label(recording)}
    container: dict[str, Any] = {
        "name": COMPONENT_NAME,
        "image": config.recorder_image,
        "command": job_command(config.recording_store, recording),
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if config.recorder_secret:  # S3 endpoint and keys, without the operator reading them
        container["envFrom"] = [{"secretRef": {"name": config.recorder_secret}}]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(recording), "namespace": config.recorder_namespace,
                     "labels": lbl, "annotations": {RECORDING_ID: recording}},
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 3600,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": lbl},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                        "runAsGroup": 10001, "fsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def _failed(job: client.V1Job) -> str | None:
    """Why the Job gave up (retries or deadline exhausted), or None while it may still work."""
    for c in (job.status.conditions if job.status else None) or []:
        if c.type == "Failed" and c.status == "True":
            return f"{c.reason or 'Failed'}: {c.message or 'no message'}"
    return None


class FileCreatorJobs:
    """Turns pending markers into Jobs and clears them once the manifest is final."""

    def __init__(self, config: OperatorConfig, store: Store | None = None) -> None:
        assert config.recording_store, "PARLEY_RECORDING_STORE is not set"
        self.config = config
        self.store = store or open_store(config.recording_store)
        self.batch = client.BatchV1Api(kube.api())

    def run(self, stop: threading.Event) -> None:
        """Pass every ``recording_poll_seconds`` until ``stop``; a failed pass is retried."""
        log.info("file creator: Jobs in %s for pending recordings of %s",
                 self.config.recorder_namespace, self.store.url)
        while not stop.is_set():
            try:
                with metrics.reconciling("Recording"):
                    self.reconcile()
            except Exception:
                log.exception("file-creator pass failed")
            stop.wait(self.config.recording_poll_seconds)

    def reconcile(self) -> None:
        pending = state.pending_ids(self.store)
        metrics.RECORDINGS_PENDING.set(len(pending))
        for recording in pending:
            try:
                self.reconcile_one(recording)
            except Exception:  # one bad recording must not hold up the others
                log.exception("recording %s: file-creator pass failed", recording)

    def reconcile_one(self, recording: str) -> None:
        try:
            manifest = state.load(self.store, recording)
        except KeyError:
            log.warning("recording %s: pending without a manifest; clearing", recording)
            state.clear_pending(self.store, recording)
            return
        if manifest["state"] in state.DONE:
            state.clear_pending(self.store, recording)
            log.info("recording %s: %s; marker cleared", recording, manifest["state"])
            return
        name, ns = job_name(recording), self.config.recorder_namespace
        try:
            job = self.batch.read_namespaced_job(name, ns)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.create(recording)
            return
        reason = _failed(job)
        if reason:  # the Job gave up without writing an end state (OOM, deadline, ...)
            manifest.update(state="failed", error=f"file-creator Job {name} failed: {reason}")
            state.save(self.store, manifest)
            state.clear_pending(self.store, recording)
            kube.event(self._ref(job), "FileCreatorFailed", manifest["error"], "Warning")
            log.warning("recording %s: %s", recording, manifest["error"])

    def create(self, recording: str) -> bool:
        """Create the Job; False when it exists already (another pass, or before a restart)."""
        body = file_creator_job(self.config, recording)
        try:
            job = self.batch.create_namespaced_job(self.config.recorder_namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        metrics.FILE_CREATOR_JOBS.inc()
        kube.event(self._ref(job), "FileCreatorStarted",
                   f"compiling recording {recording} from {self.store.url}")
        log.info("recording %s: created Job %s/%s", recording, job.metadata.namespace,
                 job.metadata.name)
        return True

    @staticmethod
    def _ref(job: client.V1Job) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job.metadata.name, "namespace": job.metadata.namespace,
                             "uid": job.metadata.uid}}

"""The broadcast recorder's Deployment and the Broadcast's ``Recording`` condition.

With ``spec.recording.enabled`` the operator runs ``{name}-recorder`` (``--role recorder``,
docs/broadcast.md): it follows the top rendition's LL-HLS playlist on that rendition's
transcoder Service and copies each segment into the meeting recordings' store
(``PARLEY_RECORDING_STORE``, the one the file-creator Jobs use). S3 keys, the webhook and the
link secret come from the Secret ``PARLEY_RECORDER_SECRET`` names (envFrom), as for the Jobs: the
operator never reads them. One replica with the ``Recreate`` strategy, so two recorders never
append to one archive during a rollout.

What it archives is observed, not assumed: the recorder reports its recording in a Lease
(media-node/broadcast/recorder_report.py, as the ingest reports its sources), under its own
ServiceAccount ``{name}-recorder`` (Lease verbs only). ``status.recording`` copies that report;
the ``Recording`` condition is True only while its last segment is at most
:data:`STALLED_AFTER_S` old by the operator's clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from parley import reports
from parley.operator import broadcast_access as access
from parley.operator import kube, resources
from parley.operator.config import OperatorConfig
from parley.operator.status import condition

# A segment every GOP (2 s) and a report every PARLEY_REPORT_INTERVAL (5 s): an archiving
# recorder's last segment is at most ~7 s old when the operator reads it; 15 s is two more
# segments missed past that.
STALLED_AFTER_S = 15.0


def recorder_account(b: str) -> str:
    return resources.broadcast_recorder_name(b)


def top_rendition(b: dict[str, Any]) -> dict[str, Any]:
    """The programme as recorded: the tallest rung (the CRD's "top rendition")."""
    return max(b["spec"]["renditions"], key=lambda r: int(r["height"]))


def recorded(b: dict[str, Any]) -> list[str]:
    """The rungs the recorder archives, the programme (tallest) first: ``spec.recording.
    renditions`` ``top`` (the default) or ``all`` (every rung, tallest to shortest)."""
    rungs = sorted(b["spec"]["renditions"], key=lambda r: -int(r["height"]))
    which = (b["spec"].get("recording") or {}).get("renditions") or "top"
    return [r["name"] for r in (rungs if which == "all" else rungs[:1])]


def recorder_objects(b: dict[str, Any], config: OperatorConfig, image: str
                     ) -> list[dict[str, Any]]:
    """The recorder's identity (ServiceAccount, Role, RoleBinding: its report Lease) and its
    Deployment; nothing when recording is off or the store is unknown. The identity stays
    when recording is turned off (no pod mounts it; it goes with the Broadcast)."""
    dep = recorder_object(b, config, image)
    if dep is None:
        return []
    name = b["metadata"]["name"]
    identity = access._identity(b, recorder_account(name), "recorder", [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": access.LEASE_VERBS}])
    return [*identity, access.run_as(dep, recorder_account(name))]


def recorder_object(b: dict[str, Any], config: OperatorConfig, image: str
                    ) -> dict[str, Any] | None:
    """The recorder Deployment, or None when recording is off or the store is unknown."""
    if not (b["spec"].get("recording") or {}).get("enabled") or not config.recording_store:
        return None
    ns, name = b["metadata"]["namespace"], b["metadata"]["name"]
    bkey = f"{ns}.{name}"
    env = {"PARLEY_BROADCAST": bkey, "PARLEY_RECORD_RENDITIONS": ",".join(recorded(b)),
           "PARLEY_RECORDING_STORE": config.recording_store,
           "PARLEY_PUBLIC_URL": config.public_url,  # the links in its notification
           "PARLEY_UPSTREAM_URL": f"http://{name}-tx-{{rendition}}.{ns}.svc:"
                                  f"{resources.HTTP_PORT}/live/{bkey}/{{rendition}}.m3u8"}
    dep = resources.media_deployment(b, resources.broadcast_recorder_name(name), "recorder",
                                     "recorder", image, 1, env)
    dep["spec"]["strategy"] = {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 60  # the end: last parts, playlists, programme.mp4
    resources.secret_env(dep, config.broadcast_secret,  # signs the recording's links
                         (("PARLEY_TOKEN_SECRET", "token-secret", False),))
    if config.recorder_secret:
        pod["containers"][0]["envFrom"] = [{"secretRef": {"name": config.recorder_secret}}]
    resources.pod_identity(dep)  # its report: what it archives
    return dep


def recording_status(report: dict[str, Any] | None, old: dict[str, Any] | None
                     ) -> dict[str, Any] | None:
    """``status.recording`` from the recorder's report; without a fresh report a finished
    recording (``ready``/``failed``) stays shown (its archive is still there), anything else
    is no longer claimed."""
    if report is None:
        return old if old and old.get("state") in ("ready", "failed") else None
    return reports.recording_view(report)


def recording_patch(new: dict[str, Any] | None, old: dict[str, Any] | None
                    ) -> dict[str, Any] | None:
    """``new`` as a merge patch over ``old``: a field the report no longer has is removed
    (null) instead of kept from an earlier report."""
    if new is None:
        return None
    return {**{k: None for k in old or {} if k not in new}, **new}


def _age(at: str | None, now: dt.datetime) -> float | None:
    t = kube.parse_time(at)
    return None if t is None else (now - t).total_seconds()


def recording_condition(b: dict[str, Any], config: OperatorConfig, available: bool,
                        rec: dict[str, Any] | None, old: list[dict[str, Any]] | None,
                        generation: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """``rec``: the recorder's fresh report (:func:`recording_status`), or None.
    True only while the recorder reports a recording whose last segment is recent;
    otherwise the reason says why not (``Disabled``, ``NoStore``, ``RecorderStarting``,
    ``NoReport``, ``Waiting``, ``Stalled``, ``Finished``, ``Failed``)."""
    name = b["metadata"]["name"]
    dname = resources.broadcast_recorder_name(name)
    top = top_rendition(b)["name"]

    def cond(status: bool, reason: str, message: str) -> dict[str, Any]:
        return condition(old, "Recording", status, reason, message, generation)

    if not (b["spec"].get("recording") or {}).get("enabled"):
        return cond(False, "Disabled", "recording is disabled")
    if not config.recording_store:
        return cond(False, "NoStore", "the operator has no PARLEY_RECORDING_STORE: nothing records")
    if rec is None:
        if not available:
            return cond(False, "RecorderStarting", f"waiting for {dname} to be available")
        return cond(False, "NoReport", f"{dname} is available but has not reported what it "
                    "archives (starting, or it runs outside a pod)")
    error = f" (last error: {rec['error']})" if rec.get("error") else ""
    state, rid = rec.get("state"), rec.get("id", "")
    if state == "recording":
        age = _age(rec.get("lastSegmentAt"), now or kube.now())
        if age is not None and age <= STALLED_AFTER_S:
            return cond(True, "Recording", f"recording {rid}: {dname} archives {top} into "
                        f"{rec.get('location', '')}")
        since = rec.get("lastSegmentAt") or "this recorder started"
        return cond(False, "Stalled", f"recording {rid}: no segment of {top} archived since "
                    f"{since} (more than {STALLED_AFTER_S:.0f} s){error}")
    if state == "ready":
        return cond(False, "Finished", f"recording {rid} is ready at {rec.get('location', '')}"
                    f" (the upstream stopped, or the recorder was stopped); the next segments "
                    f"start a new one")
    if state == "failed":
        return cond(False, "Failed", f"recording {rid} failed: {rec.get('error', '')}")
    return cond(False, "Waiting", f"{dname} waits for the first segment of {top}{error}")

"""The broadcast recorder's Deployment and the Broadcast's ``Recording`` condition.

With ``spec.recording.enabled`` the operator runs ``{name}-recorder`` (``--role recorder``,
docs/broadcast.md): it follows the top rendition's LL-HLS playlist on that rendition's
transcoder Service and copies each segment into the meeting recordings' store
(``PARLEY_RECORDING_STORE``, the one the file-creator Jobs use). S3 keys, the webhook and the
link secret come from the Secret ``PARLEY_RECORDER_SECRET`` names (envFrom), as for the Jobs: the
operator never reads them. One replica with the ``Recreate`` strategy, so two recorders never
append to one archive during a rollout.
"""

from __future__ import annotations

from typing import Any

from parley.operator import resources
from parley.operator.config import OperatorConfig
from parley.operator.status import condition


def top_rendition(b: dict[str, Any]) -> dict[str, Any]:
    """The programme as recorded: the tallest rung (the CRD's "top rendition")."""
    return max(b["spec"]["renditions"], key=lambda r: int(r["height"]))


def recorder_object(b: dict[str, Any], config: OperatorConfig, image: str
                    ) -> dict[str, Any] | None:
    """The recorder Deployment, or None when recording is off or the store is unknown."""
    if not (b["spec"].get("recording") or {}).get("enabled") or not config.recording_store:
        return None
    ns, name = b["metadata"]["namespace"], b["metadata"]["name"]
    bkey = f"{ns}.{name}"
    top = top_rendition(b)["name"]
    env = {"PARLEY_BROADCAST": bkey, "PARLEY_RECORD_RENDITIONS": top,
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
    return dep


def recording_condition(b: dict[str, Any], config: OperatorConfig, available: bool,
                        old: list[dict[str, Any]] | None, generation: int) -> dict[str, Any]:
    """True only while the recorder Deployment has an available replica."""
    name = b["metadata"]["name"]
    dname = resources.broadcast_recorder_name(name)
    if not (b["spec"].get("recording") or {}).get("enabled"):
        return condition(old, "Recording", False, "Disabled", "recording is disabled",
                         generation)
    if not config.recording_store:
        return condition(old, "Recording", False, "NoStore",
                         "the operator has no PARLEY_RECORDING_STORE: nothing records",
                         generation)
    if available:
        return condition(old, "Recording", True, "Recording",
                         f"{dname} archives {top_rendition(b)['name']} into "
                         f"{config.recording_store}", generation)
    return condition(old, "Recording", False, "RecorderStarting",
                     f"waiting for {dname} to be available", generation)

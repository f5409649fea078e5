"""Operator settings, from flags and ``PARLEY_*`` environment variables.

Everything a platform team may need to change without a rebuild lives here; the chart sets the
environment. Per-pool knobs (capacity per pod, headroom, bounds) are annotations on the pool's
Deployment instead, so each region can differ.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

GROUP = "parley.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "parley-operator"
COMPONENT = "app.kubernetes.io/component"
REGION = "parley.dev/region"
MEETING_LABEL = "parley.dev/meeting"
BROADCAST_LABEL = "parley.dev/broadcast"
MANAGED_BY = "app.kubernetes.io/managed-by"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DRAINING_SINCE = "parley.dev/draining-since"
PUBLIC_ENDPOINT = "parley.dev/public-endpoint"
RECORDING_LABEL = "parley.dev/recording"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value else default


@dataclass(frozen=True)
class OperatorConfig:
    """Knobs of one operator process."""

    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    pool_namespace: str | None = None  # fallback namespace of call-server pools
    lease_namespace: str = "default"
    identity: str = field(default_factory=socket.gethostname)
    resync_seconds: float = 10.0
    report_ttl_seconds: float = 30.0
    prescale_seconds: float = 600.0  # reserve capacity this long before schedule.start
    public_url: str = "http://localhost:8080"
    # Where browsers reach /live (status.playback's base; signaling's pages use the same,
    # PARLEY_BROADCAST_URL); unset: public_url
    broadcast_url: str | None = None
    # A region's edges under their own host: "https://{region}.live.example.com" (unset: none)
    edge_url_template: str | None = None
    media_image: str = "ghcr.io/parley/media-node:0.1.0"
    metrics_port: int = 9090
    # File creator: a Job per stopped recording, only when the operator knows the store.
    recording_store: str | None = None
    recording_poll_seconds: float = 5.0
    recorder_namespace: str = "default"
    recorder_image: str = "ghcr.io/parley/media-node:0.1.0"
    recorder_secret: str | None = None  # envFrom: PARLEY_S3_* for the Job
    # The call-server directory signaling places from: Meeting placements are written there.
    redis_url: str | None = None
    # Call servers' control API key (parley.tokens.control_key of the token secret; the
    # operator never holds the secret): drain requests carry it.
    control_key: str | None = None
    # Signaling's event stream (the chart gives the release's Kafka): pods that emit events
    # themselves (a broadcast's ingest: broadcast.*) get it through ``event_env``.
    kafka_bootstrap: str | None = None
    kafka_topic: str = "parley.events"
    # A Secret in each Broadcast's namespace that broadcast pods read by reference (the chart's
    # ``{release}-secrets``): ``token-secret`` (stream keys, recording links), ``control-key``
    # (the ingest joins meetings on their call servers), ``redis-url`` (optional: where it finds
    # a meeting's call server). The operator names it and never reads it.
    broadcast_secret: str | None = None

    @classmethod
    def from_env(cls, namespaces: list[str] | None = None, **overrides: object) -> OperatorConfig:
        values: dict[str, object] = {
            "namespaces": tuple(namespaces or ()),
            "pool_namespace": os.environ.get("PARLEY_POOL_NAMESPACE") or None,
            "lease_namespace": _env("PARLEY_LEASE_NAMESPACE",
                                    _env("POD_NAMESPACE", (namespaces or ["default"])[0])),
            "identity": _env("PARLEY_OPERATOR_ID", _env("POD_NAME", socket.gethostname())),
            "resync_seconds": float(_env("PARLEY_RESYNC_SECONDS", "10")),
            "report_ttl_seconds": float(_env("PARLEY_REPORT_TTL_SECONDS", "30")),
            "prescale_seconds": float(_env("PARLEY_PRESCALE_SECONDS", "600")),
            "public_url": _env("PARLEY_PUBLIC_URL", "http://localhost:8080").rstrip("/"),
            "broadcast_url": (os.environ.get("PARLEY_BROADCAST_URL") or "").rstrip("/") or None,
            "edge_url_template": os.environ.get("PARLEY_EDGE_URL_TEMPLATE") or None,
            "media_image": _env("PARLEY_MEDIA_IMAGE", "ghcr.io/parley/media-node:0.1.0"),
            "metrics_port": int(_env("PARLEY_METRICS_PORT", "9090")),
            "recording_store": os.environ.get("PARLEY_RECORDING_STORE") or None,
            "recording_poll_seconds": float(_env("PARLEY_RECORDING_POLL_SECONDS", "5")),
            "recorder_namespace": _env("PARLEY_RECORDER_NAMESPACE",
                                       _env("POD_NAMESPACE", "default")),
            "recorder_image": _env("PARLEY_RECORDER_IMAGE",
                                   _env("PARLEY_MEDIA_IMAGE", "ghcr.io/parley/media-node:0.1.0")),
            "recorder_secret": os.environ.get("PARLEY_RECORDER_SECRET") or None,
            "redis_url": os.environ.get("PARLEY_REDIS_URL") or None,
            "control_key": os.environ.get("PARLEY_CONTROL_KEY") or None,
            "kafka_bootstrap": os.environ.get("PARLEY_KAFKA_BOOTSTRAP") or None,
            "kafka_topic": _env("PARLEY_KAFKA_TOPIC", "parley.events"),
            "broadcast_secret": os.environ.get("PARLEY_BROADCAST_SECRET") or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def event_env(self) -> dict[str, str]:
        """The environment that makes a pod's events (``parley.events.Emitter``) go where
        signaling's go: Kafka when the operator knows it, else a JSONL file in the pod's
        writable /tmp (the root file system is read-only)."""
        env = {"PARLEY_DATA_DIR": "/tmp/parley"}
        if self.kafka_bootstrap:
            env |= {"PARLEY_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                    "PARLEY_KAFKA_TOPIC": self.kafka_topic}
        return env

    def watched(self) -> tuple[str, ...]:
        """Namespaces kopf watches: the asked ones plus the pool namespace (empty = all)."""
        if not self.namespaces:
            return ()
        extra = (self.pool_namespace,) if self.pool_namespace else ()
        return tuple(dict.fromkeys((*self.namespaces, *extra)))

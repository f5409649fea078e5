"""One shared Kubernetes API client for every Parley process that talks to the apiserver
(the operator, and media nodes publishing their reports)."""

from __future__ import annotations

import datetime as dt
import os
import threading

from kubernetes import client, config

_lock = threading.Lock()
_api: client.ApiClient | None = None


def api() -> client.ApiClient:
    """One shared ApiClient (thread-safe connection pool), configured on first use: the
    in-cluster service account in a pod, else ``$KUBECONFIG``."""
    global _api
    with _lock:
        if _api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                # Read $KUBECONFIG now, not when the kubernetes package was imported.
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
            cfg = client.Configuration.get_default_copy()
            cfg.connection_pool_maxsize = 32
            _api = client.ApiClient(cfg)
        return _api


def coordination() -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)

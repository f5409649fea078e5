"""The ingest role follows its Broadcast on the apiserver: ``spec.program`` is the programme
(``kubectl patch broadcast final --type merge -p '{"spec":{"program":{"video":"cam2"}}}'`` cuts
live) and ``spec.sources`` the names a stream key may publish as.

A watch on the one object (field selector on its name) in a daemon thread: the kubernetes client
is blocking, and a cut must not wait for the event loop's other work, nor the loop for the
apiserver. Events are handed to the loop with ``call_soon_threadsafe``. Only a change of the spec
applies (the operator's status writes also come as MODIFIED events, and must not undo a cut made
through ``PUT /live/{b}/program`` in between). A missing object, a forbidden or unreachable
apiserver, or a watch that expires (410) is retried after a short pause; the ingest keeps serving
with the last programme it had.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from parley import kubeapi

from ..tasks import spawn
from .whip import Ingest

GROUP, VERSION, PLURAL = "parley.dev", "v1alpha1", "broadcasts"
RETRY_S = 2.0  # after a failure; doubled per failure in a row up to RETRY_MAX_S
RETRY_MAX_S = 30.0
WATCH_S = 300  # a watch call's server-side timeout; it is renewed from the last resourceVersion

log = logging.getLogger("parley.broadcast.spec")


def watch_wanted() -> bool:
    """Watch only where an apiserver is configured (in a pod, or ``$KUBECONFIG``);
    ``PARLEY_WATCH_BROADCAST=0`` turns it off."""
    if os.environ.get("PARLEY_WATCH_BROADCAST", "1") == "0":
        return False
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST") or os.environ.get("KUBECONFIG"))


class SpecWatch:
    """Applies one Broadcast's spec.program and spec.sources to the ingest."""

    def __init__(self, key: str, ingest: Ingest) -> None:
        """``key`` is the served name, ``{namespace}.{name}`` (a namespace has no dot)."""
        self.key = key
        self.namespace, self.name = key.split(".", 1)
        self.ingest = ingest
        self.applied: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        threading.Thread(target=self._run, name=f"spec-watch {self.key}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    # -- in the watch thread -----------------------------------------------------------------
    def _run(self) -> None:
        api = client.CustomObjectsApi(kubeapi.api())
        pause = RETRY_S
        while not self._stop.is_set():
            try:
                obj = api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                       self.name)
                self._seen(obj)
                pause = RETRY_S
                self._follow(api, obj["metadata"]["resourceVersion"])
                continue
            except ApiException as exc:  # 403: the pod's service account may not read it
                if exc.status not in (404, 410):
                    log.warning("broadcast %s: apiserver answered %s", self.key, exc.status)
            except Exception as exc:  # unreachable apiserver, a broken stream: retry
                log.warning("broadcast %s: watch failed: %s", self.key, exc)
            self._stop.wait(pause)
            pause = min(pause * 2, RETRY_MAX_S)

    def _follow(self, api: client.CustomObjectsApi, version: str) -> None:
        """Watch from ``version`` until the object goes, the watch expires, or stop()."""
        while not self._stop.is_set():
            w = watch.Watch()
            started = time.monotonic()
            for event in w.stream(api.list_namespaced_custom_object, GROUP, VERSION,
                                  self.namespace, PLURAL,
                                  field_selector=f"metadata.name={self.name}",
                                  resource_version=version, timeout_seconds=WATCH_S,
                                  allow_watch_bookmarks=True):
                if self._stop.is_set():
                    w.stop()
                    return
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":  # typically 410 Gone: get the object again
                    self._stop.wait(0.2)
                    return
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if kind in ("ADDED", "MODIFIED"):
                    self._seen(obj)
                elif kind == "DELETED":
                    return
            if time.monotonic() - started < 1:  # a stream that ends at once: do not spin
                self._stop.wait(RETRY_S)

    def _seen(self, obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        program = spec.get("program") or {}
        video = program.get("video") or None
        audio = [a for a in program.get("audio") or [] if isinstance(a, str)]
        sources = sorted(s["name"] for s in spec.get("sources") or []
                         if isinstance(s, dict) and isinstance(s.get("name"), str))
        # a Meeting's call-server room is ``{namespace}.{name}``, as signaling and the
        # operator's directory entries name it; its namespace is this one unless
        # meetingNamespace names another (whose owners grant it: meeting_access.py)
        meetings = [{"name": s["name"], "participant": s.get("participant"),
                     "meeting": f"{s.get('meetingNamespace') or self.namespace}.{s['meeting']}"}
                    for s in spec.get("sources") or [] if isinstance(s, dict)
                    and isinstance(s.get("name"), str) and isinstance(s.get("meeting"), str)]
        state = (video, tuple(audio), tuple(sources),
                 tuple((m["name"], m["meeting"], m["participant"]) for m in meetings))
        changed, self.applied = state != self.applied, state
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply, version, changed, video, audio, sources,
                                            meetings)

    # -- on the event loop -------------------------------------------------------------------
    def _apply(self, version: str | None, changed: bool, video: str | None, audio: list[str],
               sources: list[str], meetings: list[dict[str, Any]]) -> None:
        programme = self.ingest.programme(self.key)
        if programme is not None:
            programme.spec_version = version  # GET /live/{b}: what the ingest has seen
        if not changed:
            return
        if sources:
            self.ingest.allowed_sources = set(sources)
        if programme is not None:
            programme.set_program(video, audio)
            if self.ingest.meetings is not None:  # spec.sources[].meeting (meeting_source.py)
                spawn(self.ingest.meetings.apply(programme, meetings))
        log.info("broadcast %s: programme video=%s audio=%s from the apiserver",
                 self.key, video, audio)

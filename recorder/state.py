"""A recording's metadata, kept in the store next to its chunks and files.

``recordings/<id>/manifest.json`` is the single source of truth (any signaling replica or file
creator reads it); ``rooms/<room>/<id>`` indexes recordings by room for listing. State moves
recording -> processing -> ready | failed.

``pending/<id>`` marks a stopped recording that still needs its file-creator Job. It is a level,
not an event: the operator lists the markers on every pass, so a compilation never depends on a
message that could be dropped (Kafka events may be, by design), and a restarted operator sees
the same list. Signaling writes the marker; only the operator clears it, once the manifest says
``ready`` or ``failed``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .store import Store

STATES = ("recording", "processing", "ready", "failed")
DONE = ("ready", "failed")
PENDING = "pending/"


def new(room: str, by: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "room": room, "state": "recording", "startedBy": by,
            "startedAt": time.time(), "participants": [], "progress": 0.0}


def save(store: Store, manifest: dict[str, Any]) -> None:
    store.put(f"recordings/{manifest['id']}/manifest.json", json.dumps(manifest).encode())
    store.put(f"rooms/{manifest['room']}/{manifest['id']}", b"")


def load(store: Store, recording: str) -> dict[str, Any]:
    return json.loads(store.get(f"recordings/{recording}/manifest.json"))


def mark_pending(store: Store, recording: str) -> None:
    store.put(f"{PENDING}{recording}", json.dumps({"markedAt": time.time()}).encode())


def pending_ids(store: Store) -> list[str]:
    """Recordings waiting for a file creator: one LIST, whose cost grows only with what is
    pending, not with every recording ever made."""
    return [key.removeprefix(PENDING) for key in store.list(PENDING)
            if "/" not in key.removeprefix(PENDING)]


def clear_pending(store: Store, recording: str) -> None:
    store.delete(f"{PENDING}{recording}")


def for_room(store: Store, room: str) -> list[dict[str, Any]]:
    out = []
    for key in store.list(f"rooms/{room}/"):
        try:
            out.append(load(store, key.rsplit("/", 1)[1]))
        except KeyError:
            continue
    return sorted(out, key=lambda m: m["startedAt"])

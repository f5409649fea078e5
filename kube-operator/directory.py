"""The operator's side of the shared directory in Redis (``parley.directory``).

Signaling places meetings itself (power of two choices over the registered nodes) and knows
nothing of Kubernetes. For a Meeting resource (room ``<namespace>.<name>``, the join URL's room)
the operator writes two things there: its placement under the meeting's key, so signaling sends
the participants to the pod in ``status.callServer`` (signaling follows a meeting's key while that
node is alive and not draining, and places it again otherwise); and the Meeting's policy, which
signaling enforces on join (size, topology, mesh threshold, recording). It reads back whether the
room is being recorded, for the Recording condition. Best effort: Redis being away never fails
a reconcile, and the next pass writes again.
"""

from __future__ import annotations

import logging
import threading
import time

from parley.directory import (
    MEETING_TTL_S,
    POLICY_TTL_S,
    MeetingPolicy,
    active_recording_key,
    meeting_key,
    policy_key,
)

log = logging.getLogger("parley.operator.directory")

# Place the meeting unless signaling already has it elsewhere: set when the key is missing or
# still holds the operator's own earlier placement, so a live meeting is never split in two.
_PLACE = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  return 1
end
return 0
"""

_CAS_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def room(namespace: str, name: str) -> str:
    """The signaling room (and directory meeting id) of a Meeting resource."""
    return f"{namespace}.{name}"


class MeetingDirectory:
    """Placements are written when they change (and all once after a restart); policies when
    they change and again before their TTL runs out, so a Meeting deleted while the operator
    was down loses its policy within the TTL."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2,
                                          decode_responses=True)
        self._placed: dict[str, str] = {}
        self._policies: dict[str, tuple[str, float]] = {}  # meeting -> (policy, written at)
        self._lock = threading.Lock()

    def publish(self, meeting: str, pod: str | None, policy: MeetingPolicy) -> None:
        doc, now = policy.to_json(), time.monotonic()
        with self._lock:
            before = self._placed.get(meeting)
            written = self._policies.get(meeting)
        moved = pod is not None and before != pod
        # a policy is rewritten when it changed or half its TTL has passed, not every pass
        stale = written is None or written[0] != doc or now - written[1] > POLICY_TTL_S / 2
        if not (moved or stale):
            if pod is None:
                self._unplace(meeting)
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            if stale:
                pipe.set(policy_key(meeting), doc, ex=POLICY_TTL_S)
            if moved:
                pipe.eval(_PLACE, 1, meeting_key(meeting), pod, before or "", MEETING_TTL_S)
            done = pipe.execute()
        except Exception as exc:  # any Redis failure: retried next pass
            log.warning("directory: %s not written: %s", meeting, exc)
            return
        with self._lock:
            if stale:
                self._policies[meeting] = (doc, now)
            if moved and done[-1] == 1:
                self._placed[meeting] = pod  # type: ignore[assignment]
        if moved and done[-1] != 1:
            log.debug("directory: %s is already live on another call server; signaling keeps "
                     "it there", meeting)
        if pod is None:
            self._unplace(meeting)

    def release(self, meeting: str) -> None:
        """The Meeting ended or is gone: no placement, no policy."""
        with self._lock:
            had_policy = self._policies.pop(meeting, None)
        if had_policy:
            try:
                self.redis.delete(policy_key(meeting))
            except Exception as exc:
                log.warning("directory: policy of %s not removed: %s", meeting, exc)
                with self._lock:
                    self._policies.setdefault(meeting, had_policy)
        self._unplace(meeting)

    def _unplace(self, meeting: str) -> None:
        with self._lock:
            pod = self._placed.pop(meeting, None)
        if pod is None:
            return
        try:
            self.redis.eval(_CAS_DELETE, 1, meeting_key(meeting), pod)
        except Exception as exc:
            log.warning("directory: placement of %s not removed: %s", meeting, exc)
            with self._lock:
                self._placed.setdefault(meeting, pod)

    def forget_missing(self, meetings: set[str]) -> None:
        """Release what was written for Meetings that are gone (a deleted Meeting gets no pass
        of its own); ``meetings`` are the rooms of every Meeting there is."""
        with self._lock:
            gone = (set(self._policies) | set(self._placed)) - meetings
        for m in gone:
            self.release(m)

    def observed(self, meetings: list[str], pods: set[str]) -> dict[str, str]:
        """Where the rooms run now, as signaling placed them, for those on one of ``pods``.

        Signaling re-places a room when its node dies or drains; the operator then follows the
        room instead of writing its own choice back (status is observation). A room on a node
        outside ``pods`` is left alone and never overwritten."""
        if not meetings:
            return {}
        try:
            values = self.redis.mget([meeting_key(m) for m in meetings])
        except Exception as exc:
            log.warning("directory: placements not read: %s", exc)
            return {}
        found = {m: v for m, v in zip(meetings, values, strict=True) if v in pods}
        with self._lock:
            self._placed.update(found)
        return found

    def recording(self, meeting: str) -> str | None:
        """The id of the recording signaling is making of the room, if any."""
        try:
            return self.redis.get(active_recording_key(meeting))
        except Exception as exc:
            log.warning("directory: recording of %s not read: %s", meeting, exc)
            return None

    def close(self) -> None:
        self.redis.close()

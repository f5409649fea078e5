"""A meeting on one call server: who publishes what, and who receives it."""

from __future__ import annotations

from .participant import Participant
from .publisher import UpTrack
from .subscriber import DownTrack


class Meeting:
    """Every participant receives every track published by the others (full mesh through the
    server: N publishers x (N-1) subscribers)."""

    def __init__(self, meeting_id: str) -> None:
        self.id = meeting_id
        self.participants: dict[str, Participant] = {}

    def uptracks(self) -> list[UpTrack]:
        return [up for p in self.participants.values() for up in p.uptracks]

    def add(self, p: Participant) -> None:
        """A joiner receives what is already published."""
        self.participants[p.id] = p
        for other in self.participants.values():
            if other is not p:
                for up in other.uptracks:
                    p.subscribe(up)

    def publish(self, owner: Participant, ups: list[UpTrack]) -> None:
        for other in self.participants.values():
            if other is not owner:
                for up in ups:
                    other.subscribe(up)

    def unpublish(self, up: UpTrack) -> list[DownTrack]:
        """A track its owner stopped: every subscriber's leg of it ends ("unpublished")."""
        ended: list[DownTrack] = []
        for other in self.participants.values():
            dt = other.unsubscribe(up)
            if dt is not None:
                ended.append(dt)
        return ended

    def remove(self, p: Participant) -> list[DownTrack]:
        """Take a participant out; returns the legs that ended (for final metrics)."""
        ended = list(p.downtracks.values())
        if self.participants.pop(p.id, None) is None:
            return []
        for up in p.uptracks:
            for other in self.participants.values():
                dt = other.unsubscribe(up)
                if dt is not None:
                    ended.append(dt)
        for dt in list(p.downtracks.values()):
            dt.close()
        return ended

    def subscriptions(self) -> int:
        return sum(len(p.downtracks) for p in self.participants.values())

"""A WHEP player that follows the viewer page's rule for a lost edge (signaling/static/watch.js,
docs/broadcast.md "Which edge a viewer plays from"), so tests exercise what a real player does:

- it plays from one of its region's edges (``edges()``: what the region's URL leads to);
- the session is lost when its connection is failed or closed, or when no video frame was
  decoded for ``SILENT_S`` and the edge no longer knows the session (``GET`` on the WHEP
  Location is not 200: the edge is gone, or restarted); a 200 means the edge is alive and the gap
  is upstream (a transcoder or relay restarting), so it stays and its decoder picks up the next
  keyframe;
- then it opens a session on the next edge of the region at once, and on the one after if that
  one refuses or decodes nothing within ``FIRST_FRAME_S``; after a whole round, 1 s pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx

from tests.broadcast.clients import Viewer

SILENT_S = 1.5
FIRST_FRAME_S = 10.0
PROBE_S = 1.0


class RegionViewer:
    """Plays ``path`` (``/live/{b}/{rendition}/whep``) from the edges ``edges()`` returns."""

    def __init__(self, edges: Callable[[], list[str]], path: str, first: int = 0) -> None:
        self.edges = edges
        self.path = path
        self.next = first
        self.session: Viewer | None = None
        self.edge = ""
        self.sessions: list[tuple[str, str]] = []  # (edge, Location) in the order opened
        self.frames: list[tuple[float, str]] = []  # decoded video frames: (arrival, edge)
        self.lost: list[tuple[float, str, str]] = []  # (when noticed, edge, why)
        self._task: asyncio.Task[None] | None = None
        self._counted = 0

    async def start(self) -> None:
        await self._move()
        self._task = asyncio.ensure_future(self._watch())

    def decoded_since(self, t: float, edge: str | None = None) -> int:
        self._collect()
        return sum(1 for at, e in self.frames if at >= t and (edge is None or e == edge))

    def first_frame_after(self, t: float, not_from: str) -> tuple[float, str] | None:
        """(arrival, edge) of the first frame decoded after ``t`` from an edge other than
        ``not_from`` (frames an edge sent before it died can still arrive after ``t``)."""
        self._collect()
        return next(((at, e) for at, e in self.frames if at > t and e != not_from), None)

    def _collect(self) -> None:
        """Move the current session's newly decoded frames into ``frames``, tagged by edge."""
        if self.session is not None:
            new = self.session.video[self._counted:]
            self.frames += [(at, self.edge) for at, _, _ in new]
            self._counted += len(new)

    async def _open(self, edge: str) -> Viewer | None:
        viewer = Viewer(edge + self.path)
        try:
            r = await viewer.play()
            if r.status_code == 201:
                deadline = time.monotonic() + FIRST_FRAME_S
                while time.monotonic() < deadline and viewer.pc.connectionState not in (
                        "failed", "closed"):
                    if viewer.video:
                        return viewer
                    await asyncio.sleep(0.05)
        except httpx.HTTPError:
            pass
        await viewer.close()
        return None

    async def _move(self) -> None:
        """Open a session on the next edge that plays; the old one is DELETEd (best effort)."""
        old, old_edge = self.session, self.edge
        self._collect()
        self.session = None
        if old is not None:
            if old.location:
                with contextlib.suppress(httpx.HTTPError):
                    async with httpx.AsyncClient(timeout=PROBE_S) as http:
                        await http.delete(old_edge + old.location)
            await old.close()
        while True:
            edges = self.edges()
            for _ in range(len(edges)):
                edge = edges[self.next % len(edges)]
                self.next += 1
                viewer = await self._open(edge)
                if viewer is not None:
                    self.session, self.edge, self._counted = viewer, edge, 0
                    self.sessions.append((edge, viewer.location or ""))
                    return
            await asyncio.sleep(1.0)

    async def _alive_at_edge(self) -> bool:
        assert self.session is not None
        try:
            async with httpx.AsyncClient(timeout=PROBE_S) as http:
                r = await http.get(self.edge + (self.session.location or ""))
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    async def _watch(self) -> None:
        probed = 0.0
        while True:
            await asyncio.sleep(0.1)
            session = self.session
            if session is None:
                continue
            state = session.pc.connectionState
            now = time.monotonic()
            silent = now - (session.video[-1][0] if session.video else 0.0) > SILENT_S
            why = ""
            if state in ("failed", "closed"):
                why = f"connection {state}"
            elif silent and now - probed >= PROBE_S / 2:  # at most 2 probes a second
                probed = now
                if not await self._alive_at_edge():
                    why = "silent and the edge does not know the session"
            if why:
                self.lost.append((time.monotonic(), self.edge, why))
                await self._move()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.session is not None:
            if self.session.location:
                with contextlib.suppress(httpx.HTTPError):
                    async with httpx.AsyncClient(timeout=PROBE_S) as http:
                        await http.delete(self.edge + self.session.location)
            await self.session.close()

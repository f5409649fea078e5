"""The web client's files served from memory: read once (again only when a file changes on
disk, so `make run` still shows an edit on reload), answered on the event loop without the
thread hop per file a file response takes. A meeting page loads about 25 files over the
browser's six connections per host before it can join, so the time per file is on the join's
critical path (docs/benchmarks.md, "Join time"). Every answer carries an ETag and
``Cache-Control: no-cache``: a returning browser revalidates (304, no body) and never runs a
stale client after an upgrade.

A page may take a small classic script inline, ``<script data-inline src="/static/X"></script>``:
the page is served with X's text in that tag (and a new ETag when X changes), so the script
runs as the parser reaches it instead of after a fetch that queues behind the page's other
files (client/boot.js: 30-40 ms, measured with bench/join_time)."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

_INLINE = re.compile(rb'<script data-inline src="/static/([^"]+)"></script>')
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".json": "application/json"}


@dataclass(frozen=True)
class ClientFile:
    stamp: tuple[int, int]  # (mtime_ns, size) when read
    body: bytes
    etag: str
    media_type: str
    inlined: tuple[tuple[str, tuple[int, int]], ...] = ()  # (name, stamp) of scripts inlined


class ClientFiles:
    """An ASGI app for ``/static`` (GET and HEAD), and the pages' responses for their routes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self._files: dict[str, ClientFile] = {}

    def get(self, name: str) -> ClientFile | None:
        """The file at ``name`` (relative, '/'-separated) under the directory, or None."""
        name = posixpath.normpath("/" + name).lstrip("/")
        if not name or "\x00" in name or any(p.startswith(".") for p in name.split("/")):
            return None
        path = self.directory / name
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):  # the one stat answers it: no second call
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._files.get(name)
        if cached is not None and cached.stamp == stamp and all(
                (f := self.get(n)) is not None and f.stamp == s for n, s in cached.inlined):
            return cached
        body = path.read_bytes()
        inlined: list[tuple[str, tuple[int, int]]] = []
        if path.suffix == ".html":
            def inline(m: re.Match[bytes]) -> bytes:
                script = self.get(m.group(1).decode())
                if script is None or b"</script" in script.body:
                    return m.group(0)  # left to the browser to fetch
                inlined.append((m.group(1).decode(), script.stamp))
                return b"<script>" + script.body + b"</script>"
            body = _INLINE.sub(inline, body)
        media_type = TYPES.get(path.suffix) or (
            mimetypes.guess_type(name)[0] or "application/octet-stream")
        entry = ClientFile(stamp, body, f'"{hashlib.sha256(body).hexdigest()[:20]}"', media_type,
                           tuple(inlined))
        self._files[name] = entry
        return entry

    def response(self, name: str, request: Request | None = None) -> Response:
        entry = self.get(name)
        if entry is None:
            return Response("not found", 404, media_type="text/plain")
        headers = {"etag": entry.etag, "cache-control": "no-cache"}
        if request is not None and entry.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if request is not None and request.method == "HEAD":
            return Response(status_code=200, media_type=entry.media_type,
                            headers={**headers, "content-length": str(len(entry.body))})
        return Response(entry.body, media_type=entry.media_type, headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if scope["type"] != "http" or request.method not in ("GET", "HEAD"):
            response = Response("method not allowed", 405, media_type="text/plain",
                                headers={"allow": "GET, HEAD"})
        else:
            root, path = scope.get("root_path", ""), scope["path"]
            response = self.response(path[len(root):] if path.startswith(root) else path,
                                     request)
        await response(scope, receive, send)

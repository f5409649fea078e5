"""The broadcast pages, ``/golive`` and ``/watch/{broadcast}``, served by every signaling app
(`parley up` and `parley signaling`).

They are static pages that talk to a broadcast base URL (where ``/live`` is served: an ingest
or an edge, over CORS). In `parley up` that is the page's own origin. A deployed `parley
signaling` serves no ``/live``: with ``PARLEY_BROADCAST_URL`` set it redirects a page request
without ``?base=`` to the same page with ``base`` filled in, so a shared link
(``/watch/final``) plays from the deployment's broadcast host; the page itself stays a file.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # as the ingest's (whip.py)


def add_routes(app: FastAPI, static: Path, broadcast_url: str | None) -> None:
    """``broadcast_url``: the base the pages use when the request names none (None: the
    page's own origin)."""
    base = broadcast_url.rstrip("/") if broadcast_url else None

    def page(request: Request, name: str) -> Response:
        if base is not None and "base" not in request.query_params:
            query = urlencode([*request.query_params.multi_items(), ("base", base)])
            return RedirectResponse(f"{request.url.path}?{query}", status_code=307)
        return FileResponse(static / name)

    @app.get("/watch", include_in_schema=False)
    @app.get("/watch/{broadcast}", include_in_schema=False)
    async def watch(request: Request, broadcast: str = "") -> Response:
        """The viewer page (WHEP, LL-HLS fallback); it reads the name from its own path (none:
        it asks for one)."""
        if broadcast and not NAME.match(broadcast):
            raise HTTPException(404, {"code": "broadcast_unknown", "message":
                                      "a broadcast name is lower-case letters, digits, - and ."})
        return page(request, "watch.html")

    @app.get("/golive", include_in_schema=False)
    async def golive(request: Request) -> Response:
        """The Go-live page: a browser camera or screen published over WHIP."""
        return page(request, "golive.html")

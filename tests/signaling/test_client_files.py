"""The web client served from memory (signaling/client_files.py): what a browser relies on
(types, ETag revalidation, HEAD), edits on disk showing on the next request, and no way out of
the directory. In-process ASGI over httpx, plus the real `parley up` for the client's files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from parley.signaling.client_files import ClientFiles


def client_for(directory: Path) -> httpx.AsyncClient:
    app = Starlette(routes=[Mount("/static", ClientFiles(directory))])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_files_revalidate_and_follow_edits(tmp_path: Path) -> None:
    (tmp_path / "client").mkdir()
    module = tmp_path / "client" / "core.js"
    module.write_text("export const a = 1;\n")
    async with client_for(tmp_path) as http:
        first = await http.get("/static/client/core.js")
        assert first.status_code == 200 and first.text == "export const a = 1;\n"
        assert first.headers["content-type"].startswith("text/javascript")
        assert first.headers["cache-control"] == "no-cache"
        etag = first.headers["etag"]
        again = await http.get("/static/client/core.js", headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        head = await http.head("/static/client/core.js")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(first.content))
        module.write_text("export const a = 22;\n")  # an edit during `make run`
        edited = await http.get("/static/client/core.js", headers={"if-none-match": etag})
        assert edited.status_code == 200 and edited.text == "export const a = 22;\n"
        assert edited.headers["etag"] != etag


async def test_a_page_takes_its_inline_script_and_follows_its_edits(tmp_path: Path) -> None:
    """``<script data-inline src=...>``: the page carries the script's text (boot.js runs as
    the parser reaches it); an edit of the script alone gives the page a new body and ETag."""
    (tmp_path / "client").mkdir()
    boot = tmp_path / "client" / "boot.js"
    boot.write_text("window.a = 1;\n")
    (tmp_path / "page.html").write_text(
        '<head><script data-inline src="/static/client/boot.js"></script></head>')
    async with client_for(tmp_path) as http:
        first = await http.get("/static/page.html")
        assert first.text == "<head><script>window.a = 1;\n</script></head>", first.text
        boot.write_text("window.a = 22;\n")
        edited = await http.get("/static/page.html",
                                headers={"if-none-match": first.headers["etag"]})
        assert edited.status_code == 200 and "window.a = 22;" in edited.text
        assert edited.headers["etag"] != first.headers["etag"]
        boot.unlink()  # gone: the page points at it instead (the browser's fetch gets a 404)
        assert 'src="/static/client/boot.js"' in (await http.get("/static/page.html")).text


async def test_nothing_outside_the_client_is_served(tmp_path: Path) -> None:
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "ok.css").write_text("body {}")
    (tmp_path / "static" / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("no")
    async with client_for(tmp_path / "static") as http:
        assert (await http.get("/static/ok.css")).status_code == 200
        for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/.env",
                     "/static/", "/static/missing.js", "/static/ok.css%00"):
            assert (await http.get(path)).status_code == 404, path
        refused = await http.post("/static/ok.css")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


async def test_parley_up_serves_the_meeting_page_and_its_modules(
        parley_server: Callable[..., str]) -> None:
    base = parley_server()
    async with httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/m/room-1")
        assert page.status_code == 200 and 'src="/static/client/early.js"' in page.text
        assert "window.parleyBoot = " in page.text  # boot.js, inline
        module = await http.get("/static/client/early.js")
        assert module.status_code == 200 and "openSocket" in module.text
        assert (await http.get("/static/client/early.js", headers={
            "if-none-match": module.headers["etag"]})).status_code == 304
        assert (await http.get("/m/bad%20room")).status_code == 404
        # the tab's icon: every page links it, and the conventional path answers it too
        assert 'rel="icon" href="/static/icon.png"' in page.text
        for path in ("/static/icon.png", "/favicon.ico"):
            icon = await http.get(path)
            assert icon.status_code == 200, path
            assert icon.headers["content-type"] == "image/png"
            assert icon.content.startswith(b"\x89PNG\r\n\x1a\n")

"""Driving the web client in the test bed's Chromium through its automation contract."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from tests.signaling.helpers import user_token


def as_user(url: str) -> str:
    """``?user=<identity>`` asks for a deployment-minted token for that identity (guests get
    server-made identities): it goes to the page in the fragment, with the grants the server
    gives its guests, as a deployment's login would hand it over."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if "user" not in query:
        return url
    base = f"{parts.scheme}://{parts.netloc}"
    room = unquote(parts.path[3:]) if parts.path.startswith("/m/") else "lobby"
    guest = httpx.post(f"{base}/api/v1/guest-token", json={"room": room})
    grants = tuple(guest.json()["grants"]) if guest.status_code == 200 else ("publish",
                                                                             "subscribe")
    token = user_token(base, query["user"][0], room, query.get("name", [None])[0], grants)
    return f"{url.split('#', 1)[0]}#token={token}"


def open_client(browser: Any, url: str) -> Any:
    """A fresh browser context (own cookies, fake camera/mic allowed) showing ``url``."""
    url = as_user(url)
    context = browser.new_context(permissions=["camera", "microphone"])
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and print("console:", m.text))
    return goto_identity(page, url)


def goto_identity(page: Any, url: str) -> Any:
    """Load ``url`` and wait until the client has its identity (the server's welcome); on a
    timeout, fail with what the page saw: its failed requests, errors and state."""
    seen: list[str] = []
    page.on("requestfailed", lambda r: seen.append(f"failed {r.url}: {r.failure}"))
    page.on("console", lambda m: m.type == "error" and seen.append(f"console {m.text}"))
    page.on("pageerror", lambda e: seen.append(f"pageerror {e}"))
    page.goto(url)
    try:
        page.wait_for_function("window.parley && window.parley.state.identity", timeout=15000)
    except Exception as e:
        state = page.evaluate("() => [document.readyState, !!window.parley, window.parley &&"
                              " JSON.stringify(window.parley.state.messages?.slice(-5))]")
        raise AssertionError(f"no identity within 15 s at {url}: {state}; {seen}") from e
    return page


def stats(page: Any) -> dict[str, Any]:
    return page.evaluate("window.parley.stats()")


def inbound(page: Any, participant: str | None = None, kind: str | None = None,
            source: str | None = None) -> list[dict[str, Any]]:
    return [s for s in stats(page)["inbound"]
            if (participant is None or s["participant"] == participant)
            and (kind is None or s["kind"] == kind) and (source is None or s["source"] == source)]


def wait_media(page: Any, expect: list[tuple[str, str, str]], timeout: float = 30,
               frames: int = 10, packets: int = 20) -> dict[str, Any]:
    """Wait until, for every (participant, kind, source), frames are decoded (video) or audio
    packets arrive; fail with the last stats otherwise."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = stats(page)
        ok = True
        for who, kind, source in expect:
            rows = [s for s in last["inbound"] if s["participant"] == who
                    and s["kind"] == kind and s["source"] == source]
            if kind == "video":
                ok &= any(r["framesDecoded"] >= frames for r in rows)
            else:
                ok &= any(r["packetsReceived"] >= packets for r in rows)
        if ok:
            return last
        time.sleep(0.5)
    messages = page.evaluate("window.parley.state.messages.slice(-30)")
    raise AssertionError(f"media {expect} did not arrive within {timeout}s; last stats {last}; "
                         f"last signaling messages {messages}")


def close(*pages: Any) -> None:
    for page in pages:
        page.context.close()

"""Attack: use a token past its life or outside its audience. An expired token's session ends
(close 4402) unless refreshed with a token for the same identity; tokens without our audience,
not valid yet or living longer than 24 h are refused; guest tokens are short and only a guest
token refreshes a guest; `parley token` refuses long lifetimes; the web client refreshes its guest
token before it expires (docs/signaling.md, "Token expiry and refresh")."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
import websockets

from parley import tokens
from tests.conftest import wait_until
from tests.security.signaling_attack import alive, refused_with, ws_url
from tests.signaling.browser import close, open_client
from tests.signaling.helpers import Client


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(24)


async def test_expiry_ends_the_session_unless_it_is_refreshed(
        parley_server: Callable[..., str], secret: str) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": secret})
    # 3 s: a token's expiry is in whole seconds, so a 2 s token minted late in a second has
    # just over 1 s left, and a welcome after a loaded connect said 0 (CI rehearsal 2026-12-04)
    short = await Client.connect(base, "short", token=tokens.mint(
        secret, identity="short", room="*", ttl_s=3))
    kept = await Client.connect(base, "kept", token=tokens.mint(
        secret, identity="kept", room="*", ttl_s=3))
    assert 1 <= short.welcome["expiresIn"] <= 3
    # refusals first: another identity's token, an expired one; the session stays
    err = await kept.request("token.refresh", "error", token=tokens.mint(
        secret, identity="someone-else", room="*"))
    assert err["code"] == "identity_mismatch"
    err = await kept.request("token.refresh", "error", token=tokens.mint(
        secret, identity="kept", room="*", ttl_s=5, now=time.time() - 60))
    assert err["code"] == "token_expired"
    done = await kept.request("token.refresh", "token.refreshed", token=tokens.mint(
        secret, identity="kept", room="*", ttl_s=60))
    assert 55 <= done["expiresIn"] <= 60

    started = time.monotonic()
    said, code = await refused_with(short.ws)
    assert code == 4402 and said[-1]["code"] == "token_expired"
    assert time.monotonic() - started < 5  # at its expiry, not at some later sweep
    await alive(kept)  # past the first token's expiry, the refreshed session lives on
    await kept.close()


async def test_tokens_outside_audience_not_yet_valid_or_too_long_are_refused(
        parley_server: Callable[..., str], secret: str) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": secret})
    now = int(time.time())
    good: dict[str, Any] = {"iss": "parley", "aud": "parley", "sub": "x", "room": "*",
                            "grants": ["publish", "subscribe"], "iat": now, "nbf": now,
                            "exp": now + 600}
    bad = {
        "another audience": {**good, "aud": "some-other-service"},
        "no audience": {k: v for k, v in good.items() if k != "aud"},
        "not valid yet": {**good, "nbf": now + 600, "exp": now + 1200},
        "no nbf": {k: v for k, v in good.items() if k != "nbf"},
        "48 h lifetime": {**good, "exp": now + 48 * 3600},
    }
    for why, claims in bad.items():
        token = jwt.encode(claims, secret, algorithm="HS256")
        async with websockets.connect(ws_url(base, token)) as ws:
            said, code = await refused_with(ws)
        assert (said[0]["code"], code) == ("token_invalid", 4401), why
    ok = await Client.connect(base, "x", token=jwt.encode(good, secret, algorithm="HS256"))
    await alive(ok)
    await ok.close()


async def test_guest_tokens_are_short_and_refresh_only_as_the_same_guest(
        parley_server: Callable[..., str], secret: str) -> None:
    base = parley_server({"PARLEY_TOKEN_SECRET": secret})
    async with httpx.AsyncClient(base_url=base) as http:
        first = (await http.post("/api/v1/guest-token", json={"room": "r"})).json()
        assert 0 < first["expiresIn"] <= 900
        claims = tokens.verify(secret, first["token"])
        assert claims.expires_at - time.time() <= 900
        again = (await http.post("/api/v1/guest-token", json={"identity": "alice"}, headers={
            "Authorization": f"Bearer {first['token']}"})).json()
        assert (again["identity"], again["room"]) == (first["identity"], "r")
        user = tokens.mint(secret, identity="alice", room="*")
        r = await http.post("/api/v1/guest-token", json={}, headers={
            "Authorization": f"Bearer {user}"})
        assert r.status_code == 403 and r.json()["detail"]["code"] == "not_a_guest_token"
        r = await http.post("/api/v1/guest-token", json={}, headers={
            "Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and r.json()["detail"]["code"] == "token_invalid"


def test_parley_token_caps_the_lifetime() -> None:
    for ttl in ("86401", "0", "-5"):
        out = subprocess.run([sys.executable, "-m", "parley.cli", "token", "--room", "r",
                              "--identity", "a", "--ttl", ttl], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PARLEY_TOKEN_SECRET": "x" * 32})
        assert out.returncode == 2 and out.stdout == "" and "24 h" in out.stderr, out


@pytest.mark.browser
def test_the_web_client_refreshes_its_guest_token_before_expiry(
        browser: Any, parley_server: Callable[..., str]) -> None:
    base = parley_server({"PARLEY_GUEST_TTL_S": "10"})
    page = open_client(browser, f"{base}/?name=G")
    try:
        assert page.evaluate("parley.state.identity").startswith("guest-")
        started = time.monotonic()
        wait_until(lambda: page.evaluate("parley.state.refreshes || 0") >= 2, 25, 0.5,
                   "two token refreshes")
        assert time.monotonic() - started > 10  # it outlived its first token ...
        assert page.evaluate("parley.state.closeCode") is None  # ... still connected
    finally:
        close(page)

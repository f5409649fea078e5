"""Signaling test fixtures: a known token secret so tests can mint tokens themselves."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import CHROMIUM_ARGS


@pytest.fixture
def token_secret() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def uniq() -> Callable[[str], str]:
    """Identities and rooms unique per test, since Redis is shared by every test."""
    tag = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{tag}"


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """The root fixture's Chromium, but per module: sync Playwright keeps an event loop running
    in the main thread while it is open, which would break the asyncio tests of later modules."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()

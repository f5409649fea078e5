"""Signaling test fixtures: a known token secret so tests can mint tokens themselves."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

import pytest


@pytest.fixture
def token_secret() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def uniq() -> Callable[[str], str]:
    """Identities and rooms unique per test, since Redis is shared by every test."""
    tag = uuid.uuid4().hex[:6]
    return lambda name: f"{name}-{tag}"

"""Runtime configuration shared by every component, read from ``PARLEY_*`` environment variables.

Unset services mean the embedded single-machine default: in-memory presence instead of Redis,
a local JSONL event log instead of Kafka, no TURN.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


FILE_CREATORS = ("inline", "job")


@dataclass(frozen=True)
class Settings:
    """What a component needs to know about its surroundings."""

    token_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    data_dir: Path = Path("var")
    redis_url: str | None = None
    kafka_bootstrap: str | None = None
    kafka_topic: str = "parley.events"
    turn_uris: tuple[str, ...] = ()
    turn_secret: str | None = None
    stun_uris: tuple[str, ...] = ()
    allow_guests: bool = True
    guest_grants: tuple[str, ...] = ("publish", "subscribe")
    public_url: str | None = None
    # Host names the HTTP/WebSocket server answers to (DNS rebinding): loopback names and the
    # public URL's host by default; "*" answers any (PARLEY_ALLOWED_HOSTS, comma-separated).
    allowed_hosts: tuple[str, ...] = ()
    guest_ttl_s: int = 900  # guest tokens are short; the web client refreshes them
    region: str = "local"
    # Where a stopped recording is compiled: "inline" (a signaling worker thread, `parley up`)
    # or "job" (the operator runs a Kubernetes Job; signaling only waits for the manifest).
    file_creator: str = "inline"
    # Where /live is served for the broadcast pages (/golive, /watch) of a `parley signaling`
    # that serves none itself: an ingest or edge host (PARLEY_BROADCAST_URL); None: this origin.
    broadcast_url: str | None = None

    def __post_init__(self) -> None:
        if not 10 <= self.guest_ttl_s <= 86400:
            raise ValueError("PARLEY_GUEST_TTL_S must be 10..86400 seconds")
        if self.file_creator not in FILE_CREATORS:
            raise ValueError(f"PARLEY_FILE_CREATOR must be one of {', '.join(FILE_CREATORS)}, "
                             f"not {self.file_creator!r}")

    def hosts(self) -> frozenset[str]:
        """The host names requests may carry (lower case, no port); contains "*" for any."""
        if self.allowed_hosts:
            return frozenset(h.strip().lower() for h in self.allowed_hosts if h.strip())
        out = {"127.0.0.1", "localhost", "::1"}
        if self.public_url:
            host = urlsplit(self.public_url).hostname
            if host:
                out.add(host.lower())
        return frozenset(out)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        def split(name: str) -> tuple[str, ...]:
            return tuple(x for x in (_env(name) or "").split(",") if x)

        values: dict[str, object] = {
            "data_dir": Path(_env("PARLEY_DATA_DIR", "var") or "var"),
            "redis_url": _env("PARLEY_REDIS_URL"),
            "kafka_bootstrap": _env("PARLEY_KAFKA_BOOTSTRAP"),
            "kafka_topic": _env("PARLEY_KAFKA_TOPIC", "parley.events"),
            "turn_uris": split("PARLEY_TURN_URIS"),
            "turn_secret": _env("PARLEY_TURN_SECRET"),
            "stun_uris": split("PARLEY_STUN_URIS"),
            "allow_guests": (_env("PARLEY_ALLOW_GUESTS", "1") or "1") not in ("0", "false", "no"),
            "guest_grants": split("PARLEY_GUEST_GRANTS") or ("publish", "subscribe"),
            "public_url": _env("PARLEY_PUBLIC_URL"),
            "allowed_hosts": split("PARLEY_ALLOWED_HOSTS"),
            "guest_ttl_s": int(_env("PARLEY_GUEST_TTL_S", "900") or 900),
            "region": _env("PARLEY_REGION", "local") or "local",
            "file_creator": _env("PARLEY_FILE_CREATOR", "inline"),
            "broadcast_url": _env("PARLEY_BROADCAST_URL"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["data_dir"] = Path(str(values["data_dir"]))  # a CLI override arrives as str
        if "token_secret" not in values:
            values["token_secret"] = _env("PARLEY_TOKEN_SECRET") or local_secret(
                values["data_dir"])
        return cls(**values)  # type: ignore[arg-type]


def local_secret(data_dir: Path) -> str:
    """The embedded default's token secret, kept in the data dir so `parley token` and a
    running `parley up` on the same machine agree without configuration."""
    path = data_dir / "token-secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret

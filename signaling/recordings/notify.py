"""Telling people about a recording: WebSocket messages to its participants (with signed,
expiring links) and the signed webhook for integrations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parley.config import Settings
from parley.recorder import links, webhook

if TYPE_CHECKING:
    from parley.signaling.hub import Hub


def public_view(m: dict[str, Any], secret: str, base: str, link_ttl_s: int) -> dict[str, Any]:
    """The API shape: signed links for whatever files exist. A link is fetched with a token of
    someone who may see the recording (``access.py``). Also what the broadcast recorder sends."""
    out = {k: m.get(k) for k in ("id", "room", "state", "startedAt", "stoppedAt",
                                 "progress", "error", "duration")}
    out["compositeUrl"], out["tracks"], out["expiresAt"] = None, [], None
    out["kind"] = m.get("kind") or "meeting"
    out["hlsUrl"] = None  # a broadcast archive: its multivariant VOD playlist (playback.py)
    files = m.get("files")
    if files and m.get("hlsIndex"):
        out["hlsUrl"] = links.link(secret, m["id"], m["hlsIndex"], link_ttl_s, base=base)[0]
    if files:
        url, exp = links.link(secret, m["id"], files["composite"], link_ttl_s, base=base)
        out["compositeUrl"], out["expiresAt"] = url, exp
        out["tracks"] = [{**{k: t[k] for k in ("participant", "track", "kind", "codec")},
                          "url": links.link(secret, m["id"], t["file"], link_ttl_s,
                                            base=base)[0]}
                         for t in files["tracks"]]
    return out


class Notifier:
    def __init__(self, settings: Settings, hub: Hub, link_ttl_s: int) -> None:
        self.settings, self.hub, self.link_ttl_s = settings, hub, link_ttl_s
        hook = webhook.from_env()  # a URL without a secret refuses to start
        self.webhook_url = hook.url if hook else None
        self.webhook_secret = hook.secret if hook else ""

    def public(self, m: dict[str, Any]) -> dict[str, Any]:
        return public_view(m, self.settings.token_secret, self.settings.public_url or "",
                           self.link_ttl_s)

    async def tell(self, identities: list[str], msg: dict[str, Any]) -> None:
        for identity in dict.fromkeys(identities):
            await self.hub.presence.deliver(identity, msg)

    async def ready(self, manifest: dict[str, Any] | None) -> None:
        """``recording.ready`` to every participant and the webhook; nothing for a failure."""
        if manifest is None or manifest["state"] != "ready":
            return
        public = self.public(manifest)
        await self.tell(manifest["participants"], {"type": "recording.ready", **public})
        if self.webhook_url:
            await webhook.send(self.webhook_url, self.webhook_secret,
                               {"type": "recording.ready", **public})

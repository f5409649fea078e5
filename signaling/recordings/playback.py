"""Playing a recording through the recordings API. A meeting recording is one compiled MP4; a
broadcast archive (media-node/broadcast/recorder.py) is also its HLS segments as the live
stream had them, with a VOD playlist per rung and a multivariant one (``index.m3u8``). The API
serves those files behind the same signed link and token check as a meeting's MP4: a playlist
is answered with each URI in it (segments, ``EXT-X-MAP`` inits, the rungs' playlists) replaced
by a signed link to the same API with the playlist link's own expiry, so a player (hls.js,
Safari, ffmpeg) follows the archive through the API alone, and a leaked segment URL still needs
the token of someone who may see the recording."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote

from parley.recorder import links


def file_name(name: str) -> bool:
    """A name a recording's ``files/`` folder can hold: a file (a meeting's
    ``<participant>~<track>.webm``, ``composite.mp4``), or one rung's folder and a file in it;
    never a dot-name (``..``), a backslash or a control character."""
    parts = name.split("/")
    return 0 < len(name) <= 512 and len(parts) <= 2 and all(
        p and not p.startswith(".") and "\\" not in p and p.isprintable() for p in parts)
_URI_ATTR = re.compile(r'URI="([^"]*)"')
TYPES = {".m3u8": "application/vnd.apple.mpegurl",  # RFC 8216 4
         ".m4s": "video/iso.segment",  # an fMP4 media segment (IANA)
         ".mp4": "video/mp4", ".webm": "video/webm"}


def content_type(name: str) -> str:
    return next((t for ext, t in TYPES.items() if name.endswith(ext)),
                "application/octet-stream")


def cache_control(name: str) -> str:
    """Never in a shared cache (it took a token to get); a segment or init never changes (its
    key is its number), a playlist is answered with links that expire."""
    if name.endswith(".m3u8"):
        return "private, no-cache"
    return "private, max-age=86400, immutable"


def signed_playlist(text: str, secret: str, recording: str, name: str, expires: int,
                    token: str | None) -> str:
    """``text`` (the playlist ``name``) with every relative URI signed to ``expires``; a
    ``token`` that came in the query goes on with it (a player that cannot set headers)."""
    folder = posixpath.dirname(name)
    tail = f"&token={quote(token)}" if token else ""

    def signed(uri: str) -> str:
        target = posixpath.normpath(posixpath.join(folder, uri))
        if "://" in uri or uri.startswith("/") or not file_name(target):
            raise ValueError(f"{name}: unexpected URI {uri!r}")
        sig = links.signature(secret, recording, target, expires)
        return (f"/api/v1/recordings/{quote(recording)}/files/{quote(target)}"
                f"?expires={expires}&sig={sig}{tail}")

    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            line = _URI_ATTR.sub(lambda m: f'URI="{signed(m.group(1))}"', line)
        elif line.strip():
            line = signed(line.strip())
        out.append(line)
    return "\n".join(out) + "\n"

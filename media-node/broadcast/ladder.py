"""The ladder: the renditions a transcoder makes, their names and the size each really gets.

A rung is named by its height (``720p``) and carries a video bitrate. Transcoding only goes down:
a rung above the source is made at the source's size (and the status says so), never upscaled.
Written ``720p:3000,360p:800`` (kbps) in ``PARLEY_LADDER`` and ``--broadcast-ladder``; a bare name
(``360p``) takes the default bitrate of its height.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_LADDER = "720p:3000,360p:800"
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
FAST_PRESET_ABOVE = 540  # lines: rungs above this get x264's superfast, the others veryfast


@dataclass(frozen=True)
class Rung:
    """One rendition of the ladder: ``name`` served at ``/live/{b}/{name}/whep``."""

    name: str
    height: int
    bitrate_kbps: int

    def size_for(self, src_w: int, src_h: int) -> tuple[int, int]:
        """(width, height) this rung makes from a ``src_w`` x ``src_h`` source: the rung's
        height or the source's, whichever is lower; width keeps the aspect, both even (4:2:0)."""
        h = min(self.height, src_h) & ~1
        w = max(2, round(src_w * h / src_h / 2) * 2)
        return w, max(2, h)


def default_bitrate_kbps(height: int) -> int:
    """A bitrate for a height when none is given (about 0.1 bit per pixel at 30 fps, 16:9)."""
    return max(100, int(height * height * 16 / 9 * 30 * 0.1 / 1000))


def rung_name(height: int) -> str:
    return f"{height}p"


def parse_rung(text: str) -> Rung:
    """``360p`` or ``360p:800`` -> Rung; ValueError with the reason otherwise."""
    name, _, rate = text.strip().partition(":")
    if not name.endswith("p") or not name[:-1].isdigit() or not 16 <= int(name[:-1]) <= 4320:
        raise ValueError(f"a rung is named by its height, like 360p (16..4320), not {name!r}")
    height = int(name[:-1])
    if rate and (not rate.isdigit() or not 50 <= int(rate) <= 50000):
        raise ValueError(f"{name}: the bitrate is kbps, 50..50000, not {rate!r}")
    return Rung(name, height, int(rate) if rate else default_bitrate_kbps(height))


def parse_ladder(text: str) -> list[Rung]:
    """``720p:3000,360p:800`` -> rungs, highest first; names unique."""
    rungs = [parse_rung(t) for t in text.split(",") if t.strip()]
    if not rungs:
        raise ValueError("the ladder has no rungs")
    if len({r.name for r in rungs}) != len(rungs):
        raise ValueError("rung names must be unique")
    return sorted(rungs, key=lambda r: -r.height)


def preset_for(rung: Rung) -> str:
    """The x264 preset a rung gets by default. Rungs above 540 lines (720p, 1080p) get
    ``superfast``: the 720p encode is about three quarters of the ladder's work, and veryfast
    there made the 720p+360p ladder from a noisy 1080p30 camera 1.15x real time on one core, under
    the 1.2x it needs to absorb bursts (docs/benchmarks.md, Transcoder). The smaller rungs cost
    little and serve the viewers with the least bandwidth, where quality per bit counts most:
    they keep ``veryfast``."""
    return "superfast" if rung.height > FAST_PRESET_ABOVE else "veryfast"


def parse_presets(text: str) -> str | dict[str, str] | None:
    """PARLEY_X264_PRESET: empty -> None (``preset_for`` each rung), ``veryfast`` -> every rung,
    ``720p:superfast,360p:veryfast`` -> per rung name; ValueError naming the bad part."""
    text = text.strip()
    if not text:
        return None
    if ":" not in text:
        if text not in X264_PRESETS:
            raise ValueError(f"PARLEY_X264_PRESET: {text!r} is not an x264 preset "
                             f"({', '.join(X264_PRESETS)})")
        return text
    out: dict[str, str] = {}
    for part in text.split(","):
        name, _, preset = part.strip().partition(":")
        if preset not in X264_PRESETS:
            raise ValueError(f"PARLEY_X264_PRESET: {preset!r} for {name!r} is not an x264 preset")
        out[name] = preset
    return out

"""The active speaker from real audio (issue 14): two Chromium processes, each with its own fake
microphone file (--use-file-for-fake-audio-capture; one is a 440 Hz tone, one silence). On the
silent participant's page the talker is highlighted within 2 s of unmuting; on the talker's page
the silent one never is, nor is the silent one's own tile, while the talker's own tile is. Two
processes, because the fake audio file is per browser process."""

from __future__ import annotations

import math
import struct
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHROMIUM_ARGS
from tests.signaling.browser import as_user, close, wait_media

pytestmark = pytest.mark.browser

RATE = 48000

# Every participant a page ever highlighted (class "speaking" on a tile), from its first frame.
WATCH_SPEAKING = """(() => {
  window.__spoke = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const el = r.target;
      if (el.classList?.contains('speaking') && !window.__spoke.includes(el.dataset.participant))
        window.__spoke.push(el.dataset.participant);
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ['class'] });
})()"""


def write_wav(path: Path, amplitude: float, seconds: float = 2.0) -> Path:
    """A mono 16-bit WAV: a 440 Hz tone at ``amplitude`` (0 = silence); Chromium loops it."""
    frames = b"".join(struct.pack("<h", int(amplitude * 32767 * math.sin(
        2 * math.pi * 440 * i / RATE))) for i in range(int(RATE * seconds)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(frames)
    return path


@pytest.fixture(scope="module")
def browsers(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Any, Any]]:
    """(talker, silent): one Chromium process per fake microphone file."""
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("audio")
    tone, silence = write_wav(tmp / "tone.wav", 0.5), write_wav(tmp / "silence.wav", 0.0)
    with sync_playwright() as pw:
        launched = [pw.chromium.launch(executable_path=chromium, headless=True, args=[
            *CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"]) for wav in (tone, silence)]
        yield launched[0], launched[1]
        for b in launched:
            b.close()


def join(browser: Any, url: str) -> Any:
    context = browser.new_context(permissions=["camera", "microphone"])
    context.add_init_script(WATCH_SPEAKING)
    page = context.new_page()
    page.goto(as_user(url))
    page.wait_for_function("window.parley && window.parley.state.room", timeout=15000)
    return page


def test_the_talker_is_highlighted_within_2_s_and_the_silent_one_never(
        browsers: tuple[Any, Any], parley_server: Callable[..., str],
        uniq: Callable[[str], str]) -> None:
    talker_browser, silent_browser = browsers
    base = parley_server()
    room = uniq("speaker")
    tom, sid = uniq("tom"), uniq("sid")
    talker = join(talker_browser, f"{base}/m/{room}?name=Tom&user={tom}")
    silent = join(silent_browser, f"{base}/m/{room}?name=Sid&user={sid}")
    tom_tile = f".tile[data-participant='{tom}'][data-source=camera]"
    try:
        wait_media(silent, [(tom, "audio", "microphone"), (tom, "video", "camera")])
        wait_media(talker, [(sid, "audio", "microphone"), (sid, "video", "camera")])
        silent.wait_for_selector(f"{tom_tile}.speaking", timeout=5000)
        # Tom mutes (silence is sent): the highlight goes; he unmutes: it is back within 2 s
        talker.keyboard.press("m")
        silent.wait_for_selector(f"{tom_tile}.speaking", state="detached", timeout=5000)
        started = time.monotonic()
        talker.keyboard.press("m")
        silent.wait_for_selector(f"{tom_tile}.speaking", timeout=2000)
        took = time.monotonic() - started
        print(f"active speaker highlighted {took:.2f} s after unmuting")
        assert took < 2.0
        # Sid's silence, received the whole time, never made Tom's page highlight him: only
        # Tom's own tile lit up there (he talks); Sid's own tile never did on his page
        assert talker.evaluate("window.__spoke") == [tom]
        assert silent.evaluate("window.__spoke") == [tom]
        assert talker.evaluate("window.parley.state.activeSpeaker") is None
    finally:
        close(talker, silent)

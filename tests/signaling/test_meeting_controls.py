"""In-meeting controls in real Chromium (issue 14): stopping a screen share from its button
(mesh and call server), switching camera and microphone mid-call (replaceTrack: the other side
keeps decoding), falling back when a device goes away, my own tile highlighted while I speak,
and each remote tile's HD / SD badge matching the height it receives.

One Chromium for the module, with three fake cameras (``device-count=3``: fake_device_1 is a
Y16 depth camera, fake_device_2 an ordinary MJPEG one to switch to) and a 440 Hz tone as every
page's microphone (``--use-file-for-fake-audio-capture``), so everyone is always talking."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import CHROMIUM_ARGS, wait_until
from tests.signaling.browser import close, inbound, open_client, wait_media
from tests.signaling.test_active_speaker import write_wav
from tests.signaling.test_meeting_ui import shot

pytestmark = pytest.mark.browser

CAM = "w=320&h=240&fps=15"  # small: two pages share two cores
BADGE = """b => ({text: b.textContent, label: b.getAttribute('aria-label'),
                height: Number(b.parentNode.dataset.height)})"""


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    tone = write_wav(tmp_path_factory.mktemp("audio") / "tone.wav", 0.5)
    args = [a for a in CHROMIUM_ARGS if a != "--use-fake-device-for-media-stream"]
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=[
            *args, "--use-fake-device-for-media-stream=device-count=3",
            f"--use-file-for-fake-audio-capture={tone}"])
        yield b
        b.close()


def meeting(browser: Any, base: str, room: str, topology: str,
            uniq: Callable[[str], str], cam: str = CAM) -> tuple[Any, Any, str, str]:
    """Ann and Ben in one room, each decoding the other's camera."""
    ann_id, ben_id = uniq("ann"), uniq("ben")
    ann = open_client(browser, f"{base}/m/{room}?name=Ann&user={ann_id}&topology={topology}&{cam}")
    ben = open_client(browser, f"{base}/m/{room}?name=Ben&user={ben_id}&topology={topology}&{cam}")
    wait_media(ann, [(ben_id, "video", "camera")])
    wait_media(ben, [(ann_id, "video", "camera"), (ann_id, "audio", "microphone")])
    return ann, ben, ann_id, ben_id


def local_media(page: Any) -> dict[str, Any]:
    return page.evaluate("window.parley.localMedia()")


def frames(page: Any, who: str) -> int:
    return max((r["framesDecoded"] for r in inbound(page, who, "video", "camera")), default=0)


@pytest.mark.parametrize("topology", ["p2p", "sfu"])
def test_stopping_a_share_from_its_button_removes_it_everywhere(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str],
        topology: str) -> None:
    base = parley_server()
    ann, ben, ann_id, _ = meeting(browser, base, uniq("share"), topology, uniq)
    screen_tile = f".tile[data-participant='{ann_id}'][data-source=screen]"
    try:
        ann.click("#share-screen")
        ann.wait_for_selector("#share-screen[aria-pressed=true]")
        assert ann.get_attribute("#share-screen", "aria-label") == "Stop sharing your screen"
        wait_media(ben, [(ann_id, "video", "screen")])
        ben.wait_for_selector(f"{screen_tile}.stage")  # a share takes the stage

        ann.click("#share-screen")
        ben.wait_for_selector(screen_tile, state="detached", timeout=10000)
        assert ben.get_attribute("#tiles", "data-stage") == "off"  # back to the grid
        assert ann.get_attribute("#share-screen", "aria-pressed") == "false"
        assert ann.locator(".tile[data-source=screen]").count() == 0
        mine = local_media(ann)
        assert [t for t in mine["tracks"] if t["source"] == "screen"] == []
        assert [s for s in mine["senders"] if s["source"] == "screen"] == [], mine["senders"]
        # sharing again works (a new m-line on the call server, a new track on the mesh)
        ann.click("#share-screen")
        ben.wait_for_function("(sel) => document.querySelector(sel)?.videoWidth > 0",
                              arg=f"{screen_tile} video", timeout=10000)
    finally:
        close(ann, ben)


@pytest.mark.parametrize("topology", ["p2p", "sfu"])
def test_switching_camera_and_microphone_mid_call_keeps_the_other_side_decoding(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str],
        topology: str) -> None:
    base = parley_server()
    ann, ben, ann_id, _ = meeting(browser, base, uniq("devices"), topology, uniq)
    try:
        before = {t["kind"]: t for t in local_media(ann)["tracks"]}
        ann.click("#devices")
        ann.wait_for_selector("#devices-dialog[open]")
        cameras = dict(ann.eval_on_selector_all(
            "#menu-camera option", "os => os.map(o => [o.textContent, o.value])"))
        mics = ann.eval_on_selector_all("#menu-mic option", "os => os.map(o => o.value)")
        assert before["video"]["label"] == "fake_device_0" and len(cameras) == 3, cameras
        camera = cameras["fake_device_2"]
        ann.select_option("#menu-camera", camera)
        ann.wait_for_function(
            "(id) => window.parley.localMedia().tracks.some(t => t.kind === 'video'"
            " && t.deviceId === id)", arg=camera)
        mic = next((m for m in mics if m != before["audio"]["deviceId"]), None)
        if mic:  # Chromium's fake audio input lists "default" and the device itself
            ann.select_option("#menu-mic", mic)
            ann.wait_for_function(
                "(id) => window.parley.localMedia().tracks.some(t => t.kind === 'audio'"
                " && t.deviceId === id)", arg=mic)
        shot(ann, f"devices-menu-{topology}")
        ann.click("#devices-close")

        after = local_media(ann)
        video = [t for t in after["tracks"] if t["kind"] == "video"]
        assert len(video) == 1 and video[0]["readyState"] == "live"
        assert video[0]["label"] != before["video"]["label"], (before, video)
        cam_senders = [s for s in after["senders"] if s["source"] == "camera"]
        assert cam_senders and all(s["id"] == video[0]["id"] for s in cam_senders), after
        mic_senders = [s for s in after["senders"] if s["kind"] == "audio"]
        assert mic_senders and all(s["readyState"] == "live" for s in mic_senders), after
        assert ann.evaluate("localStorage.getItem('parley.camera')") == camera
        # the other side keeps decoding the new camera (no renegotiation, same receiver)
        seen = frames(ben, ann_id)
        wait_until(lambda: frames(ben, ann_id) >= seen + 15, 15, what="frames after the switch")

        # the camera goes away (its track ends): the page falls back to the default one, says
        # so, and the other side still decodes
        ann.evaluate("""document.querySelector('.tile.self video').srcObject
            .getVideoTracks()[0].dispatchEvent(new Event('ended'))""")
        ann.wait_for_selector("#toast:not([hidden])")
        assert "camera was disconnected" in ann.inner_text("#toast")
        ann.wait_for_function(
            "(old) => window.parley.localMedia().tracks.some(t => t.kind === 'video'"
            " && t.id !== old && t.readyState === 'live')", arg=video[0]["id"])
        seen = frames(ben, ann_id)
        wait_until(lambda: frames(ben, ann_id) >= seen + 15, 15, what="frames after the fallback")
    finally:
        close(ann, ben)


def test_my_tile_lights_up_while_i_speak_and_badges_match_the_received_height(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server()
    ann, ben, ann_id, ben_id = meeting(browser, base, uniq("self"), "p2p", uniq,
                                       cam="w=1280&h=720&fps=10")
    try:
        # the tone: my own tile is outlined, as a remote speaker's is; muted, it is not
        ann.wait_for_selector(".tile.self.speaking", timeout=5000)
        ann.keyboard.press("m")
        ann.wait_for_selector(".tile.self.speaking", state="detached", timeout=5000)
        ann.keyboard.press("m")
        ann.wait_for_selector(".tile.self.speaking", timeout=5000)

        for page, other in ((ben, ann_id), (ann, ben_id)):
            tile = f".tile[data-participant='{other}'][data-source=camera]"
            page.wait_for_selector(f"{tile} .quality", timeout=5000)

            def consistent(page: Any = page, other: str = other, tile: str = tile) -> Any:
                height = max(r["frameHeight"] for r in inbound(page, other, "video", "camera"))
                badge = page.eval_on_selector(f"{tile} .quality", BADGE)
                return badge if badge["height"] == height else None

            badge = wait_until(consistent, 10, what="a badge of the received height")
            assert badge["text"] == ("HD" if badge["height"] >= 720 else "SD"), badge
            assert badge["label"] == f"Video quality {badge['text']}: {badge['height']}p", badge
        shot(ben, "ben-badges-1280x800")
    finally:
        close(ann, ben)

"""The meeting page as people use it, in real Chromium: the prejoin screen with a refused
camera still joins (audio only, with the reason shown); two participants see each other's
mute (keyboard m) and raised hand; the page fits a 390x844 phone and a 1280x800 laptop
(screenshots kept in $PARLEY_ARTIFACTS, default var/artifacts/meeting-ui); the front page's
people panel shows contacts' presence and sends direct messages."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CHROMIUM_ARGS
from tests.signaling.browser import as_user, close, goto_identity, open_client, stats, wait_media
from tests.signaling.helpers import user_token

pytestmark = pytest.mark.browser

ARTIFACTS = Path(os.environ.get("PARLEY_ARTIFACTS",
                                Path(__file__).parents[2] / "var" / "artifacts"), "meeting-ui")

# Everything that sticks out of the viewport: the page's own width, tiles, visible controls.
LAYOUT = """() => {
  const doc = document.documentElement, w = doc.clientWidth, h = window.innerHeight;
  const out = [];
  if (doc.scrollWidth > w) out.push(`page ${doc.scrollWidth} > ${w}`);
  for (const el of document.querySelectorAll('.tile, #controls button')) {
    const r = el.getBoundingClientRect(), control = el.matches('#controls button');
    if (!r.width) { if (control) out.push(`${el.id} hidden`); continue; }
    if (r.left < 0 || r.right > w + 0.5) out.push(`${el.id || el.className} x ${r.right}`);
    if (control && (r.top < 0 || r.bottom > h + 0.5)) out.push(`${el.id} y ${r.bottom} > ${h}`);
  }
  return out;
}"""


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """The test bed's Chromium without --use-fake-ui-for-media-stream: that flag grants every
    camera request, so only without it does a permission Playwright withholds get refused."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=[
            a for a in CHROMIUM_ARGS if a != "--use-fake-ui-for-media-stream"])
        yield b
        b.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_prejoin_with_the_camera_refused_joins_audio_only(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server()
    room = uniq("prejoin")
    host = open_client(browser, f"{base}/m/{room}?name=Host&user={uniq('host')}")
    # the camera is refused (Playwright grants the microphone only and rejects the rest)
    context = browser.new_context(permissions=["microphone"])
    guest = context.new_page()
    try:
        guest.goto(f"{base}/m/{room}")
        guest.wait_for_selector("#prejoin:not([hidden])", timeout=10000)
        guest.wait_for_selector("#prejoin-error:not([hidden])", timeout=10000)
        assert "camera was refused" in guest.inner_text("#prejoin-error")
        assert "can still join" in guest.inner_text("#prejoin-error")
        assert guest.evaluate("window.parley.state.identity") is None  # nothing before Join
        shot(guest, "prejoin-camera-refused")
        guest.fill("#prejoin-name", "Rita Prejoin")
        guest.click("#prejoin-join")
        guest.wait_for_function(f"window.parley.state.room === '{room}'", timeout=15000)
        assert guest.is_visible("#notice") and "camera was refused" in guest.inner_text("#notice")
        assert guest.evaluate("window.parley.state.mediaError.code") == "camera_refused"
        assert guest.evaluate("localStorage.getItem('parley.name')") == "Rita Prejoin"
        guest_id = guest.evaluate("window.parley.state.identity")
        got = wait_media(host, [(guest_id, "audio", "microphone")])
        assert not [r for r in got["inbound"] if r["participant"] == guest_id
                    and r["kind"] == "video"], "the refused camera sends no video"
        tile = f".tile[data-participant='{guest_id}'][data-source=camera]"
        host.wait_for_selector(f"{tile}[data-video=off]", timeout=10000)
        assert "Rita Prejoin" in host.inner_text(tile)
        host_id = host.evaluate("window.parley.state.identity")
        wait_media(guest, [(host_id, "video", "camera")])  # it still sees the others
    finally:
        close(host, guest)


def camera_after(message: str) -> str:
    """An init script: the camera's answer comes only once the page has sent ``message`` (the
    call-server join offer, a mesh offer): a person still looking at the permission prompt, or a
    slow camera. Deterministic, unlike racing the fake device. ``window.__sent`` lists the
    message types the page sent, with "camera" where getUserMedia answered."""
    return """(() => {
  const sent = window.__sent = [];
  let release; const due = new Promise((r) => { release = r; });
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try { const type = JSON.parse(data).type; sent.push(type); if (type === "MESSAGE") release(); }
    catch { /* not JSON */ }
    return send.call(this, data);
  };
  const md = navigator.mediaDevices; const gum = md.getUserMedia.bind(md);
  md.getUserMedia = (c) => due.then(() => gum(c)).then((s) => { sent.push("camera"); return s; });
})()""".replace("MESSAGE", message)


CAMERA_AFTER_SFU_JOIN = camera_after("sfu.join")


def test_a_call_server_link_joins_before_its_camera_opens(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    """A link that joins at once (?name=) joins and offers its camera's m-lines before the camera
    answers: allowed, the tracks go onto those m-lines and the others decode them; refused, the
    camera's m-line is unpublished: the others get its audio, no video, and see the camera off.
    Both still receive the others."""
    base = parley_server()
    room = uniq("early-camera")
    cam = "topology=sfu&w=320&h=240&fps=15"
    host = open_client(browser, f"{base}/m/{room}?name=Host&{cam}")
    pages = []
    try:
        # Sam asks for 360 lines: two simulcast layers, planned before the camera answers
        for name, permissions, size in (("Sam", ["camera", "microphone"], "w=640&h=360&"),
                                        ("Rita", ["microphone"], "")):
            context = browser.new_context(permissions=permissions)
            context.add_init_script(CAMERA_AFTER_SFU_JOIN)
            page = context.new_page()
            pages.append(page)
            page.goto(f"{base}/m/{room}?name={name}&{size}{cam}")
        slow, refused = pages
        refused.wait_for_function(
            "window.parley?.state?.mediaError?.code === 'camera_refused'", timeout=15000)
        host_id, slow_id, refused_id = (
            p.evaluate("window.parley.state.identity") for p in (host, slow, refused))
        for page in pages:
            wait_media(page, [(host_id, "video", "camera")])  # both see the others
        got = wait_media(host, [(slow_id, "video", "camera"), (slow_id, "audio", "microphone"),
                                (refused_id, "audio", "microphone")])
        assert not [r for r in got["inbound"] if r["participant"] == refused_id
                    and r["kind"] == "video"], "the refused camera sends no video"
        host.wait_for_selector(f".tile[data-participant='{refused_id}'][data-source=camera]"
                               "[data-video=off]", timeout=10000)
        # the refused camera's m-line is not in the host's view: never offered to it (refused
        # while its leg waited for the host's next offer) or offered, then inactive after the
        # call server's `sfu.unpublished` (refused after that offer), whichever came first
        host.wait_for_function(f"""async () => (await window.parley.stats()).callServer
            .sections.every((m) => !(m.stream === {refused_id!r} && m.kind === 'video'
                                     && m.direction !== 'inactive'))""", timeout=10000)
        sections = host.evaluate("window.parley.stats()")["callServer"]["sections"]
        assert any(m["stream"] == slow_id and m["kind"] == "video"
                   and m["direction"] != "inactive" for m in sections), sections
        # two layers planned from the 360 lines asked for; the fake camera, opened by the host
        # first at 240 lines, gives Sam 240 too, so Chromium never sends the top one: the host
        # got Sam's video on the lower layer all the same (the node does not wait on a layer
        # that never came)
        out = slow.evaluate("window.parley.stats()")["callServer"]["outbound"]
        assert sorted(o["rid"] for o in out) == ["f", "h"], out
        # a layer keeps its lines under pressure (set after the offer, off the join's path)
        params = slow.evaluate("window.parley.senderParameters()")
        assert [p["degradationPreference"] for p in params] == ["maintain-resolution"], params
    finally:
        close(host, *pages)


def test_a_mesh_link_offers_before_its_camera_opens(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    """A newcomer's mesh offer goes before its camera answers: its senders are offered without
    tracks, the tracks go onto them once open (no second offer), with the room's caps, and the
    other decodes them; the newcomer decodes the other meanwhile. Its own tile is first."""
    base = parley_server()
    room = uniq("early-mesh")
    cam = "topology=p2p&w=320&h=240&fps=15"
    host = open_client(browser, f"{base}/m/{room}?name=Host&{cam}")
    context = browser.new_context(permissions=["camera", "microphone"])
    context.add_init_script(camera_after("offer"))
    sam = context.new_page()
    try:
        goto_identity(sam, f"{base}/m/{room}?name=Sam&{cam}")
        host_id, sam_id = (p.evaluate("window.parley.state.identity") for p in (host, sam))
        wait_media(sam, [(host_id, "video", "camera")])
        wait_media(host, [(sam_id, "video", "camera"), (sam_id, "audio", "microphone")])
        sent = sam.evaluate("window.__sent")
        assert sent.index("offer") < sent.index("camera"), sent
        assert sent.count("offer") == 1, sent  # the tracks went on without renegotiation
        # the room's caps are on the camera's sender, set once its track came
        config = sam.evaluate("window.parley.state.config")
        params = sam.evaluate("window.parley.senderParameters()")
        assert [p["encodings"][0]["maxBitrate"] for p in params] == [
            config["bandwidthKbps"] * 1000], params
        host.wait_for_selector(f".tile[data-participant='{sam_id}'][data-source=camera]"
                               "[data-video=on]", timeout=10000)
        first = sam.evaluate("document.querySelector('#tiles .tile').dataset.participant")
        assert first == sam_id
    finally:
        close(host, sam)


def test_two_participants_see_mute_and_raised_hand_and_the_phone_layout_fits(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server()
    room = uniq("ui")
    ann_id, ben_id = uniq("ann"), uniq("ben")
    ann = open_client(browser, f"{base}/m/{room}?name=Ann&user={ann_id}")
    ben = open_client(browser, f"{base}/m/{room}?name=Ben&user={ben_id}")
    try:
        wait_media(ann, [(ben_id, "video", "camera")])
        wait_media(ben, [(ann_id, "video", "camera")])
        assert stats(ann)["topology"] == "p2p"
        # the fake microphones beep: each page highlights the other as the active speaker
        ben.wait_for_selector(f".tile[data-participant='{ann_id}'].speaking", timeout=5000)

        # m mutes: Ann's own button says so, Ben's tile of Ann shows the muted microphone
        # and stops highlighting her (a disabled track sends silence)
        ann.keyboard.press("m")
        assert ann.get_attribute("#toggle-audio", "aria-pressed") == "true"
        assert ann.get_attribute("#toggle-audio", "aria-label") == "Unmute the microphone (m)"
        ben.wait_for_selector(f".tile[data-participant='{ann_id}'][data-audio=off]", timeout=10000)
        ben.wait_for_selector(f".tile[data-participant='{ann_id}'].speaking", state="detached",
                              timeout=5000)
        ann.keyboard.press("m")
        ben.wait_for_selector(f".tile[data-participant='{ann_id}'][data-audio=on]", timeout=10000)

        # Ben raises his hand: it shows in Ann's participant list and on his tile
        ben.click("#raise-hand")
        ann.click("#people-toggle")
        ann.wait_for_selector(f"#roster li[data-identity='{ben_id}'][data-hand=on]", timeout=10000)
        assert ann.locator("#roster li").first.get_attribute("data-identity") == ann_id
        assert ann.locator(f".tile[data-participant='{ben_id}'][data-hand=on]").count() == 1
        assert ann.is_visible("#hands-count") and "1" in ann.inner_text("#hands-count")

        # every control has an accessible name
        unnamed = ann.evaluate("""[...document.querySelectorAll('button, input, select')]
          .filter(el => !el.closest('[hidden]') && !(el.getAttribute('aria-label')
                  || el.labels?.length || el.textContent.trim())).map(el => el.id)""")
        assert unnamed == []

        for page, who in ((ann, "ann"), (ben, "ben")):
            page.set_viewport_size({"width": 1280, "height": 800})
            assert page.evaluate(LAYOUT) == []
            shot(page, f"{who}-1280x800")
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_function("document.documentElement.clientWidth === 390")
            assert page.evaluate(LAYOUT) == []
            shot(page, f"{who}-390x844")
        # on the phone the open participant list covers the tiles, within the viewport
        box = ann.locator("#people-panel").bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
    finally:
        close(ann, ben)


def test_the_front_page_opens_no_camera_and_new_meeting_goes_to_the_prejoin(
        browser: Any, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    context = browser.new_context(permissions=["camera", "microphone"])
    page = context.new_page()
    page.add_init_script("""(() => { window.__gum = 0; const md = navigator.mediaDevices;
      const orig = md.getUserMedia.bind(md);
      md.getUserMedia = (c) => { window.__gum += 1; return orig(c); }; })()""")
    try:
        page.goto(as_user(f"{base}/"))
        page.wait_for_function("window.parley && window.parley.state.identity", timeout=15000)
        assert page.evaluate("window.__gum") == 0
        assert page.is_hidden("#people")  # a guest: meetings only, no 1:1 call box
        shot(page, "front-page")
        page.click("#new-meeting")
        page.wait_for_url("**/m/*", timeout=10000)
        page.wait_for_selector("#prejoin:not([hidden])", timeout=10000)
        page.wait_for_function("document.querySelector('#preview').srcObject", timeout=10000)
        page.wait_for_selector("#pick-camera option", state="attached", timeout=10000)
        shot(page, "prejoin")
        room = page.evaluate("location.pathname.slice(3)")
        # "Join" takes an invite link as well as a room name
        page.goto(f"{base}/")
        page.fill("#join-room", f"{base}/m/{room}")
        page.fill("#join-name", "Linda Link")
        page.click("#join-form button")
        page.wait_for_function(f"window.parley && window.parley.state.room === '{room}'",
                               timeout=15000)
    finally:
        context.close()


def test_a_signed_in_user_calls_a_contact_from_the_people_card(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    base = parley_server()
    alice_id, bob_id = uniq("alice"), uniq("bob")
    admin = user_token(base, "ops", "*", grants=("admin",))
    httpx.put(f"{base}/api/v1/users/{alice_id}", json={"contacts": [bob_id]},
              headers={"Authorization": f"Bearer {admin}"}).raise_for_status()
    alice = open_client(browser, f"{base}/?name=Alice&user={alice_id}")
    bob = open_client(browser, f"{base}/?name=Bob&user={bob_id}")
    try:
        assert alice.is_visible("#people")
        alice.click(f"#contacts li[data-identity='{bob_id}'] button")
        bob.wait_for_selector("#incoming:not([hidden])", timeout=10000)
        assert "Alice" in bob.inner_text("#incoming-from")
    finally:
        close(alice, bob)


def test_the_people_panel_shows_presence_and_sends_a_direct_message(
        browser: Any, parley_server: Callable[..., str], uniq: Callable[[str], str]) -> None:
    """Bob's people panel shows Alice online while her page is open and offline once it is
    closed; Alice messages Bob from her panel and Bob reads it as text, not HTML."""
    base = parley_server()
    alice_id, bob_id = uniq("alice"), uniq("bob")
    admin = user_token(base, "ops", "*", grants=("admin",))
    for me, other in ((alice_id, bob_id), (bob_id, alice_id)):
        httpx.put(f"{base}/api/v1/users/{me}", json={"contacts": [other]},
                  headers={"Authorization": f"Bearer {admin}"}).raise_for_status()
    bob = open_client(browser, f"{base}/?name=Bob&user={bob_id}")
    alice_row = f"#contacts li[data-identity='{alice_id}']"
    try:
        bob.wait_for_selector(f"{alice_row}[data-presence=offline]", timeout=10000)
        alice = open_client(browser, f"{base}/?name=Alice&user={alice_id}")
        bob.wait_for_selector(f"{alice_row}[data-presence=online]", timeout=5000)
        assert bob.inner_text(f"{alice_row} .presence-text") == "online"
        alice.wait_for_selector(
            f"#contacts li[data-identity='{bob_id}'][data-presence=online]", timeout=5000)

        text = '<img src=x onerror="window.__pwned=1"> hi Bob'
        alice.click(f"#contacts li[data-identity='{bob_id}'] button.message")
        alice.wait_for_selector("#dm-panel:not([hidden])")
        alice.fill("#dm-input", text)
        alice.click("#dm-form button")
        alice.wait_for_selector("#dm-log .chat-line.mine", timeout=5000)
        # Bob's panel is closed: an unread count on Alice's Message button, then the message
        bob.wait_for_selector(f"{alice_row} .unread:not([hidden])", timeout=5000)
        assert bob.inner_text(f"{alice_row} .unread") == "1"
        bob.click(f"{alice_row} button.message")
        bob.wait_for_selector("#dm-log .chat-line", timeout=5000)
        assert bob.inner_text("#dm-log .chat-text") == text
        assert bob.locator("#dm-log img").count() == 0
        assert bob.evaluate("window.__pwned") is None
        assert bob.is_hidden(f"{alice_row} .unread")
        # Bob's answer shows in Alice's open panel, after hers
        bob.fill("#dm-input", "hello Alice")
        bob.click("#dm-form button")
        alice.wait_for_selector("#dm-log .chat-line:nth-child(2)", timeout=5000)
        assert alice.locator("#dm-log .chat-text").all_inner_texts() == [text, "hello Alice"]
        shot(alice, "front-page-people")

        close(alice)  # Alice goes away
        bob.wait_for_selector(f"{alice_row}[data-presence=offline]", timeout=5000)
        # the conversation is kept on the server: it is still there after a reload
        bob.reload()
        bob.wait_for_selector(f"{alice_row} button.message", timeout=10000)
        bob.click(f"{alice_row} button.message")
        bob.wait_for_selector("#dm-log .chat-line:nth-child(2)", timeout=5000)
    finally:
        close(bob)

"""Meetings in real Chromium (fake camera and microphone) against a real `parley up`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.signaling.browser import as_user, close, goto_identity, inbound, open_client, wait_media

pytestmark = pytest.mark.browser


def test_one_to_one_room_decodes_video_and_receives_audio(
        browser, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    a = open_client(browser, f"{base}/m/duo?name=Alice&user=alice")
    b = open_client(browser, f"{base}/m/duo?name=Bob&user=bob")
    try:
        sa = wait_media(a, [("bob", "video", "camera"), ("bob", "audio", "microphone")])
        sb = wait_media(b, [("alice", "video", "camera"), ("alice", "audio", "microphone")])
        assert sa["topology"] == sb["topology"] == "p2p"
        assert all(r["bytesReceived"] > 0 for r in inbound(a, "bob"))
    finally:
        close(a, b)


# Every message type the page sends, in order (window.__sent).
SENT = """(() => {
  const sent = window.__sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try { sent.push(JSON.parse(data).type); } catch { /* not JSON */ }
    return send.call(this, data);
  };
})()"""
STOOD = "window.__sent.filter((t) => t === 'offer.standing').length"


def test_newcomers_answer_the_standing_offers_of_those_present(
        browser, parley_server: Callable[..., str]) -> None:
    """Each member stands an offer for whoever joins next (docs/signaling.md, "Standing
    offers"): a newcomer answers those in its `joined` and sends no offer of its own; the
    members stand again; a third newcomer answers both."""
    base = parley_server()

    def join(name: str) -> Any:
        context = browser.new_context(permissions=["camera", "microphone"])
        context.add_init_script(SENT)
        return goto_identity(context.new_page(),
                             as_user(f"{base}/m/standing?name={name}&user={name}&bw=1500"))

    ann = join("ann")
    pages = [ann]
    try:
        ann.wait_for_function(f"{STOOD} === 1", timeout=10000)
        ben = join("ben")
        pages.append(ben)
        wait_media(ben, [("ann", "video", "camera"), ("ann", "audio", "microphone")])
        wait_media(ann, [("ben", "video", "camera"), ("ben", "audio", "microphone")])
        sent = ben.evaluate("window.__sent")
        assert "offer" not in sent and sent.count("answer") == 1, sent
        assert "answer" not in ann.evaluate("window.__sent")  # her offer was answered
        ann.wait_for_function(f"{STOOD} === 2", timeout=10000)  # handed over: another
        ben.wait_for_function(f"{STOOD} === 1", timeout=10000)
        cat = join("cat")
        pages.append(cat)
        for me, page in (("ann", ann), ("ben", ben), ("cat", cat)):
            others = [o for o in ("ann", "ben", "cat") if o != me]
            wait_media(page, [(o, "video", "camera") for o in others]
                       + [(o, "audio", "microphone") for o in others])
        sent = cat.evaluate("window.__sent")
        assert "offer" not in sent and sent.count("answer") == 2, sent
    finally:
        close(*pages)


def test_three_party_mesh_everyone_decodes_everyone(
        browser, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    names = ["ann", "ben", "cat"]
    # each announces 1500 kbit/s (?bw): without it the client announces Chromium's own
    # navigator.connection.downlink estimate, which moves with the traffic it has seen (1550
    # once under load: 775 > 750)
    pages = [open_client(browser, f"{base}/m/trio?name={n.title()}&user={n}&bw=1500")
             for n in names]
    try:
        for me, page in zip(names, pages, strict=True):
            others = [n for n in names if n != me]
            wait_media(page, [(o, "video", "camera") for o in others]
                       + [(o, "audio", "microphone") for o in others])
        # in a mesh of 3 a sender uploads 2 streams: the per-stream budget is half
        assert pages[0].evaluate("window.parley.state.config.bandwidthKbps") == 1500 // 2
    finally:
        close(*pages)


def test_screen_share_arrives_as_a_second_video(
        browser, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    sharer = open_client(browser, f"{base}/m/share?name=Sharer&user=sharer&screen=1")
    viewer = open_client(browser, f"{base}/m/share?name=Viewer&user=viewer")
    try:
        wait_media(viewer, [("sharer", "video", "camera"), ("sharer", "video", "screen"),
                            ("sharer", "audio", "microphone")])
        videos = inbound(viewer, "sharer", "video")
        assert sorted(v["source"] for v in videos if v["framesDecoded"] > 0) == [
            "camera", "screen"]
        assert viewer.locator("[data-participant=sharer][data-source=screen] video").count() == 1
    finally:
        close(sharer, viewer)


def test_audio_only_call_carries_audio_and_no_video(
        browser, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    a = open_client(browser, f"{base}/m/voice?name=A&user=va&video=0")
    b = open_client(browser, f"{base}/m/voice?name=B&user=vb&video=0")
    try:
        wait_media(a, [("vb", "audio", "microphone")], packets=50)
        wait_media(b, [("va", "audio", "microphone")], packets=50)
        assert not any(r["framesDecoded"] for r in inbound(a, kind="video"))
        assert not any(r["packetsReceived"] for r in inbound(b, kind="video"))
    finally:
        close(a, b)


def test_join_over_the_mesh_threshold_is_refused_with_a_clear_error(
        browser, parley_server: Callable[..., str]) -> None:
    """Low announced bandwidth (600 kbps) makes the mesh limit 2; without a call server the
    third join is refused, never half-connected, and the two inside keep their call. (With one,
    the meeting moves there: tests/sfu/test_meeting.py.)"""
    base = parley_server({"PARLEY_EMBED_CALL_SERVER": "0"})
    a = open_client(browser, f"{base}/m/tight?name=A&user=ta&bw=600")
    b = open_client(browser, f"{base}/m/tight?name=B&user=tb&bw=600")
    c = open_client(browser, f"{base}/m/tight?name=C&user=tc&bw=600")
    d = open_client(browser, f"{base}/m/tight2?name=D&user=td&topology=sfu")
    try:
        c.wait_for_function("window.parley.state.error", timeout=10000)
        assert c.evaluate("window.parley.state.error.code") == "sfu_unavailable"
        assert "peer-to-peer limit of 2" in c.locator("#error").inner_text()
        assert c.evaluate("window.parley.stats()")["inbound"] == []
        d.wait_for_function("window.parley.state.error", timeout=10000)
        assert d.evaluate("window.parley.state.error.code") == "sfu_unavailable"
        wait_media(a, [("tb", "video", "camera")])
        assert {r["participant"] for r in inbound(a)} == {"tb"}
    finally:
        close(a, b, c, d)


@pytest.mark.turn
@pytest.mark.parametrize("transports", [("udp", "tcp"), ("tcp",)], ids=["udp+tcp", "tcp-only"])
def test_relay_only_ice_through_coturn_connects_and_decodes(
        browser, parley_server: Callable[..., str], turn: tuple[str, str],
        transports: tuple[str, ...]) -> None:
    """Relay-only ICE through coturn; with TCP as the only TURN URI (a firewall that passes
    only TCP) the media is relayed over TCP and still decodes."""
    uri, secret = turn
    base = parley_server({"PARLEY_TURN_URIS": ",".join(f"{uri}?transport={t}"
                                                      for t in transports),
                          "PARLEY_TURN_SECRET": secret})
    room = "relay-" + "-".join(transports)
    a = open_client(browser, f"{base}/m/{room}?name=A&user=ra&relay=1")
    b = open_client(browser, f"{base}/m/{room}?name=B&user=rb&relay=1")
    try:
        sa = wait_media(a, [("rb", "video", "camera"), ("rb", "audio", "microphone")])
        wait_media(b, [("ra", "video", "camera")])
        assert sa["candidatePairs"], sa
        assert all(p["local"] == "relay" and p["relayProtocol"] in transports
                   for p in sa["candidatePairs"]), sa["candidatePairs"]
        if transports == ("tcp",):
            assert {p["relayProtocol"] for p in sa["candidatePairs"]} == {"tcp"}
    finally:
        close(a, b)


def test_bandwidth_drop_mid_call_recomputes_and_applies_the_config(
        browser, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    a = open_client(browser, f"{base}/m/adapt?name=A&user=aa&bw=2000")
    b = open_client(browser, f"{base}/m/adapt?name=B&user=ab&bw=2000")
    try:
        wait_media(a, [("ab", "video", "camera")])
        wait_media(b, [("aa", "video", "camera")])
        assert a.evaluate("window.parley.state.config.bandwidthKbps") == 2000
        b.evaluate("window.parley.announce({bandwidthKbps: 300, maxHeight: 240, maxFps: 15})")
        a.wait_for_function("window.parley.state.config.bandwidthKbps === 300", timeout=10000)
        config = a.evaluate("window.parley.state.config")
        assert (config["maxHeight"], config["maxFps"]) == (240, 15)

        def applied() -> bool:
            params = a.evaluate("window.parley.senderParameters()")
            enc = params[0]["encodings"][0] if params and params[0]["encodings"] else {}
            return (enc.get("maxBitrate") == 300_000 and enc.get("maxFramerate") == 15
                    and enc.get("scaleResolutionDownBy") == 2)  # 480 -> 240

        wait_until(applied, 10, what="sender parameters applied")
        frames = max(r["framesDecoded"] for r in inbound(b, "aa", "video"))
        wait_media(b, [("aa", "video", "camera")], frames=frames + 20)  # still flowing
    finally:
        close(a, b)


def test_codec_change_mid_call_renegotiates(
        browser, parley_server: Callable[..., str]) -> None:
    """B announces it now takes only VP9 (and Opus): the room's codec list changes, the call
    is renegotiated at once without rejoining, and both directions switch to VP9."""
    base = parley_server()
    a = open_client(browser, f"{base}/m/codecs?name=A&user=ca")
    b = open_client(browser, f"{base}/m/codecs?name=B&user=cb")
    try:
        for me, them in ((a, "cb"), (b, "ca")):
            got = wait_media(me, [(them, "video", "camera")])
            assert {r["codec"] for r in got["inbound"] if r["kind"] == "video"} == {"VP8"}, got
        b.evaluate("window.parley.announce({codecs: ['VP9', 'opus']})")
        a.wait_for_function("window.parley.state.config.codecs.join() === 'VP9,opus'",
                            timeout=10000)

        def on_vp9(page, them: str) -> bool:
            rows = [r for r in inbound(page, them, "video") if r["framesDecoded"] > 0]
            return bool(rows) and all(r["codec"] == "VP9" for r in rows)

        wait_until(lambda: on_vp9(a, "cb") and on_vp9(b, "ca"), 15, what="VP9 both ways")
        frames = max(r["framesDecoded"] for r in inbound(a, "cb", "video"))
        wait_media(a, [("cb", "video", "camera")], frames=frames + 15)  # still decoding
        for page in (a, b):
            assert page.evaluate("window.parley.state.messages.filter(m => m.type === "
                                 "'joined').length") == 1  # nobody rejoined
    finally:
        close(a, b)


def test_camera_and_microphone_toggles_show_on_everyone_s_tile(
        browser, parley_server: Callable[..., str]) -> None:
    """A mute or camera-off reaches everyone (late joiners too); unmute restores it; the
    muted side's media keeps flowing (a disabled track sends silence / black frames)."""
    base = parley_server()
    a = open_client(browser, f"{base}/m/toggles?name=A&user=ta")
    b = open_client(browser, f"{base}/m/toggles?name=B&user=tb")
    pages = [a, b]
    tile = "[data-participant=ta][data-source=camera]"
    try:
        wait_media(b, [("ta", "video", "camera"), ("ta", "audio", "microphone")])
        assert a.evaluate("window.parley.toggleAudio()") is False
        assert a.evaluate("window.parley.toggleVideo()") is False
        b.wait_for_selector(f"{tile}[data-audio=off][data-video=off]", timeout=10000)
        assert b.evaluate("window.parley.state.participants.ta") == {
            "identity": "ta", "name": "A", "audio": False, "video": False, "hand": False}
        assert a.locator(f"{tile}[data-audio=off]").count() == 1  # my own tile too

        c = open_client(browser, f"{base}/m/toggles?name=C&user=tc")
        pages.append(c)
        wait_media(c, [("ta", "video", "camera")])
        c.wait_for_selector(f"{tile}[data-audio=off][data-video=off]", timeout=10000)

        packets = max(r["packetsReceived"] for r in inbound(b, "ta", "audio"))
        wait_media(b, [("ta", "audio", "microphone")], packets=packets + 20)
        assert a.evaluate("window.parley.toggleAudio()") is True
        for page in (b, c):
            page.wait_for_selector(f"{tile}[data-audio=on][data-video=off]", timeout=10000)
    finally:
        close(*pages)

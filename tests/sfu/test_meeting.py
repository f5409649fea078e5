"""Call-server meetings in real Chromium against `parley up` (its embedded call server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.signaling.browser import close, inbound, open_client, stats, wait_media

pytestmark = [pytest.mark.browser]

KEYFRAME_ASKED_S = 5  # far below any natural keyframe interval of Chromium
CAM = "w=320&h=240&fps=15"  # the fake camera, small: five pages share two cores


def everyone_else(names: list[str], me: str) -> list[tuple[str, str, str]]:
    others = [n for n in names if n != me]
    return ([(o, "video", "camera") for o in others]
            + [(o, "audio", "microphone") for o in others])


def test_five_browsers_in_one_call_server_meeting_decode_everyone(
        browser, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    names = ["s1", "s2", "s3", "s4", "s5"]
    pages = [open_client(browser, f"{base}/m/five?name={n}&user={n}&topology=sfu&{CAM}")
             for n in names]
    try:
        for me, page in zip(names, pages, strict=True):
            got = wait_media(page, everyone_else(names, me), timeout=60)
            assert got["topology"] == "sfu"
            assert got["callServer"]["node"] == "embedded"
            assert got["connections"] == {o: "connected" for o in names if o != me}
            rows = {(r["participant"], r["kind"]) for r in got["inbound"]
                    if r["bytesReceived"] > 0}
            assert rows == {(o, k) for o in names if o != me for k in ("video", "audio")}
    finally:
        close(*pages)


# Runs in the page: wait until video from every other participant decoded, then report how long
# after the call-server connection came up (and after the session started) that was.
LATE = """async (others) => {
  for (;;) {
    const s = await window.parley.stats();
    const ok = others.every((o) => s.inbound.some((r) => r.participant === o
        && r.kind === "video" && r.framesDecoded > 0));
    const st = window.parley.state.sfu;
    if (ok && st && st.connectedAt !== null) {
      return {afterConnected: performance.now() - st.connectedAt,
              afterStart: performance.now() - st.startedAt};
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}"""


def test_late_joiner_gets_keyframes_from_every_publisher_at_once(
        browser, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    names = ["e1", "e2", "e3"]
    pages = [open_client(browser, f"{base}/m/late?name={n}&user={n}&topology=sfu&{CAM}")
             for n in names]
    late = None
    try:
        for me, page in zip(names, pages, strict=True):
            wait_media(page, everyone_else(names, me), timeout=60)
        late = open_client(browser, f"{base}/m/late?name=Late&user=late&topology=sfu&{CAM}")
        took = late.evaluate(LATE, names)
        print(f"late joiner: first frames from all {len(names)} "
              f"{took['afterConnected']:.0f} ms after connected, "
              f"{took['afterStart']:.0f} ms after the session started")
        # Chromium sends no periodic keyframes: without the node asking every publisher for
        # one (PLI) the late joiner would wait indefinitely. How fast is a benchmark's question
        # (bench/join_time; 514-1844 ms here under load), not a timed test's.
        assert took["afterConnected"] <= KEYFRAME_ASKED_S * 1000, took
        wait_media(late, everyone_else(names, "late"))
    finally:
        close(*pages, *([late] if late else []))


def test_screen_share_through_the_call_server(
        browser, parley_server: Callable[..., str]) -> None:
    """One sharer joins sharing; another starts sharing mid-call (sfu.publish)."""
    base = parley_server()
    sharer = open_client(browser, f"{base}/m/scr?name=Sharer&user=sharer&screen=1"
                                  f"&topology=sfu&{CAM}")
    later = open_client(browser, f"{base}/m/scr?name=Later&user=later&topology=sfu&{CAM}")
    viewer = open_client(browser, f"{base}/m/scr?name=Viewer&user=viewer&topology=sfu&{CAM}")
    try:
        wait_media(viewer, [("sharer", "video", "camera"), ("sharer", "video", "screen"),
                            ("sharer", "audio", "microphone"), ("later", "video", "camera")])
        later.evaluate("window.parley.startScreen()")
        got = wait_media(viewer, [("later", "video", "screen"), ("later", "video", "camera")])
        assert got["topology"] == "sfu"
        for who in ("sharer", "later"):
            videos = inbound(viewer, who, "video")
            assert sorted(v["source"] for v in videos if v["framesDecoded"] > 0) == [
                "camera", "screen"], videos
            tile = viewer.locator(f"[data-participant={who}][data-source=screen] video")
            assert tile.count() == 1
        wait_media(sharer, [("later", "video", "screen")])
    finally:
        close(sharer, later, viewer)


def test_auto_meeting_past_the_threshold_moves_to_the_call_server(
        browser, parley_server: Callable[..., str]) -> None:
    """600 kbps makes the mesh limit 2: the third joiner moves the meeting to the call server;
    nobody rejoins, mesh connections close and every tile keeps decoding."""
    base = parley_server()
    a = open_client(browser, f"{base}/m/grow?name=A&user=ga&bw=600&{CAM}")
    b = open_client(browser, f"{base}/m/grow?name=B&user=gb&bw=600&{CAM}")
    pages = [a, b]
    try:
        assert wait_media(a, everyone_else(["ga", "gb"], "ga"))["topology"] == "p2p"
        wait_media(b, everyone_else(["ga", "gb"], "gb"))
        welcome = a.evaluate("window.parley.state.instance")
        pages.append(open_client(browser, f"{base}/m/grow?name=C&user=gc&bw=600&{CAM}"))
        names = ["ga", "gb", "gc"]
        for me, page in zip(names, pages, strict=True):
            got = wait_media(page, everyone_else(names, me), timeout=30)
            assert got["topology"] == "sfu", got
            assert got["callServer"]["connectionState"] == "connected"
            # the mesh is gone: media arrives only over the call-server connection
            assert [p["participant"] for p in got["candidatePairs"]] == ["call-server"]
        # the move was for the threshold; a loaded machine may add a recovery move (a node
        # closing a leg whose ICE failed), which must itself end on the call server
        reasons = a.evaluate("window.parley.state.sfu.reasons")
        assert reasons[0] == "threshold", reasons
        assert set(reasons[1:]) <= {"closed", "ice_failed"}, reasons
        assert a.evaluate("window.parley.state.instance") == welcome  # same connection
        assert a.evaluate("window.parley.state.messages.filter(m => m.type === 'joined')"
                          ".length") == 1  # nobody rejoined
        before = {r["participant"]: r["framesDecoded"] for r in stats(a)["inbound"]
                  if r["kind"] == "video"}
        wait_media(a, [("gb", "video", "camera"), ("gc", "video", "camera")],
                   frames=max(before.values()) + 15)
        assert a.locator(".tile[data-participant=gb] video").count() == 1
    finally:
        close(*pages)


def test_the_weakest_receivers_config_no_longer_caps_what_publishers_send_to_the_call_server(
        browser, parley_server: Callable[..., str]) -> None:
    """Issue 12: a receiver's bandwidth drop lowers the room's config, but on the call server
    nobody else's sender is capped to it any more (the call server gives each receiver a
    layer it can take; bench/layer_drop.py measures the layers on a throttled link)."""
    base = parley_server()
    a = open_client(browser, f"{base}/m/cap?name=A&user=ca&topology=sfu&bw=2000&{CAM}")
    b = open_client(browser, f"{base}/m/cap?name=B&user=cb&topology=sfu&bw=2000&{CAM}")
    try:
        wait_media(a, [("cb", "video", "camera")])
        wait_media(b, [("ca", "video", "camera")])
        b.evaluate("window.parley.announce({bandwidthKbps: 250, maxHeight: 120, maxFps: 10})")
        wait_until(lambda: a.evaluate("window.parley.state.config?.bandwidthKbps") == 250, 10,
                   what="the room's config lowered at A")
        params = a.evaluate("window.parley.senderParameters()")
        encodings = [e for p in params if p["participant"] == "call-server"
                     for e in p["encodings"]]
        assert encodings and all(e.get("maxBitrate") != 250_000 for e in encodings), params
        frames = max(r["framesDecoded"] for r in inbound(b, "ca", "video"))
        wait_media(b, [("ca", "video", "camera")], frames=frames + 10)  # still flowing
    finally:
        close(a, b)


def _sections(page: Any) -> list[dict[str, Any]]:
    """The host's call-server m-lines as the call server last described them."""
    return stats(page)["callServer"]["sections"]


def _frames(page: Any, who: str) -> int:
    return sum(r["framesDecoded"] for r in inbound(page, who, "video"))


def test_a_newcomer_takes_the_m_lines_a_leaver_left(
        browser, parley_server: Callable[..., str]) -> None:
    """A subscriber's session does not grow by everyone who ever left: the call server puts a
    newcomer's tracks on the m-lines a leaver's tracks went inactive on, and the host decodes
    the newcomer there (docs/call-server.md, "Negotiation and renegotiation")."""
    base = parley_server()
    host = open_client(browser, f"{base}/m/reuse?name=Host&user=host&topology=sfu&{CAM}")
    first = open_client(browser, f"{base}/m/reuse?name=First&user=first&topology=sfu&{CAM}")
    second = None
    try:
        wait_media(host, everyone_else(["first"], "host"))
        grown = _sections(host)
        mids = {s["kind"]: s["mid"] for s in grown if s["stream"] == "first"}
        assert set(mids) == {"audio", "video"}, grown
        close(first)
        first = None
        wait_until(lambda: all(s["direction"] == "inactive" for s in _sections(host)
                               if s["mid"] in mids.values()), 15,
                   what="the leaver's m-lines retired")
        second = open_client(browser, f"{base}/m/reuse?name=Second&user=second&topology=sfu"
                                      f"&{CAM}")
        wait_media(host, everyone_else(["second"], "host"))
        now = _sections(host)
        assert len(now) == len(grown), (grown, now)
        assert {s["kind"]: s["mid"] for s in now if s["stream"] == "second"} == mids, now
        # frames of the newcomer keep coming on the reused m-line (a counter the receive
        # stream may have kept from the leaver's frames must still grow)
        seen = _frames(host, "second")
        wait_until(lambda: _frames(host, "second") >= seen + 10, 10, what="the newcomer's frames")
        tile = host.locator("[data-participant=second][data-source=camera] video")
        assert tile.evaluate("(v) => v.videoWidth") > 0
    finally:
        close(*[p for p in (host, first, second) if p is not None])


@pytest.mark.turn
@pytest.mark.parametrize("transports", [("udp", "tcp"), ("tcp",)], ids=["udp+tcp", "tcp-only"])
def test_relay_only_browsers_reach_the_call_server_through_coturn(
        browser, parley_server: Callable[..., str], turn: tuple[str, str],
        transports: tuple[str, ...]) -> None:
    """Relay-only ICE to the call server through coturn (with TCP the only TURN URI, a firewall
    that passes only TCP). The join offer carries no candidates: the call server learns each
    browser's relayed address from its checks, and the media flows both ways over the relay."""
    uri, secret = turn
    base = parley_server({"PARLEY_TURN_URIS": ",".join(f"{uri}?transport={t}"
                                                      for t in transports),
                          "PARLEY_TURN_SECRET": secret})
    room = "sfu-relay-" + "-".join(transports)
    names = ["r1", "r2"]
    pages = [open_client(browser, f"{base}/m/{room}?name={n}&user={n}&topology=sfu&relay=1&{CAM}")
             for n in names]
    try:
        for me, page in zip(names, pages, strict=True):
            got = wait_media(page, everyone_else(names, me))
            assert got["topology"] == "sfu"
            pairs = [p for p in got["candidatePairs"] if p["participant"] == "call-server"]
            assert pairs and all(p["local"] == "relay" and p["relayProtocol"] in transports
                                 for p in pairs), got["candidatePairs"]
            if transports == ("tcp",):
                assert {p["relayProtocol"] for p in pairs} == {"tcp"}
    finally:
        close(*pages)

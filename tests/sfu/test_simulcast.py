"""Simulcast on the call server in real Chromium (docs/call-server.md, "Simulcast"): publishers
send two layers, each receiver gets the one its tile takes, a layer nobody receives is paused at
the publisher, and a layer switch keeps the stream continuous."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.signaling.browser import close, open_client, stats, wait_media

pytestmark = [pytest.mark.browser]

CAM = "w=640&h=360&fps=10"  # two layers: h (320x180) and f (640x360)
FULL, LOW = 360, 180
SMALL_TILES = "document.querySelector('#tiles').style.gridTemplateColumns = 'repeat(4, 140px)'"
BIG_TILES = "document.querySelector('#tiles').style.gridTemplateColumns = ''"
# rtpTimestamp of every frame each remote camera tile presents: a layer switch must never make
# it go backwards (requestVideoFrameCallback metadata, WebRTC sources)
TIMESTAMPS = """() => {
  window.__backwards = {}; window.__presented = {};
  for (const tile of document.querySelectorAll(".tile[data-source=camera]")) {
    const who = tile.dataset.participant, video = tile.querySelector("video");
    if (who === window.parley.state.identity || !video) continue;
    let last = null;
    const frame = (now, meta) => {
      if (meta.rtpTimestamp !== undefined) {
        if (last !== null && ((meta.rtpTimestamp - last) >>> 0) > 0x80000000) {
          window.__backwards[who] = (window.__backwards[who] || 0) + 1;
        }
        last = meta.rtpTimestamp;
        window.__presented[who] = (window.__presented[who] || 0) + 1;
      }
      video.requestVideoFrameCallback(frame);
    };
    video.requestVideoFrameCallback(frame);
  }
}"""


def cameras(page: Any) -> dict[str, dict[str, Any]]:
    return {r["participant"]: r for r in stats(page)["inbound"]
            if r["kind"] == "video" and r["source"] == "camera"}


def until(page: Any, others: list[str], test: Callable[[dict[str, Any]], bool],
          timeout: float, what: str) -> dict[str, dict[str, Any]]:
    """Wait until every camera of ``others`` on ``page`` passes ``test``; fail with the rows and
    the page's last layer moves."""
    deadline = time.monotonic() + timeout
    while True:
        cams = cameras(page)
        if all(o in cams and test(cams[o]) for o in others):
            return cams
        if time.monotonic() > deadline:
            moves = page.evaluate("window.parley.state.messages.filter("
                                  "m => m.type === 'sfu.layer').slice(-8)")
            raise AssertionError(f"{what}: not within {timeout}s; cameras {cams}; "
                                 f"last layer moves {moves}")
        time.sleep(0.2)


def encodings(page: Any) -> dict[str | None, dict[str, Any]]:
    return {e["rid"]: e for e in stats(page)["callServer"]["outbound"]
            if e["source"] == "camera"}


@pytest.mark.parametrize("codec", ["vp8", "vp9", "av1"])
def test_each_receiver_gets_the_layer_its_tile_takes_and_unwatched_layers_pause(
        browser: Any, parley_server: Callable[..., str], codec: str) -> None:
    """In VP8, VP9 and AV1 (``sendCodec``: L1T1 per rid; the node continues VP9's PictureID
    and TL0PICIDX across switches as VP8's, RFC 9628; AV1 has none, a switch lands on a
    keyframe that opens a new coded video sequence)."""
    base = parley_server()
    names = ["a", "b", "c"]
    pages = [open_client(browser, f"{base}/m/layers-{codec}?name={n}&user={n}&topology=sfu&"
                                  f"{CAM}&sendCodec={codec}") for n in names]
    a, b, c = pages
    try:
        for me, page in zip(names, pages, strict=True):
            wait_media(page, [(o, "video", "camera") for o in names if o != me], timeout=45)
        assert {r["codec"] for r in cameras(c).values()} == {codec.upper()}, cameras(c)
        # every publisher sends both layers; every receiver takes the full one into its tile
        assert set(encodings(a)) == {"h", "f"}, encodings(a)
        for me, page in zip(names, pages, strict=True):
            until(page, [o for o in names if o != me],
                  lambda r: r["frameHeight"] >= FULL and r["layer"] == "f", 30,
                  f"{me} on the full layer of every camera")
        c.evaluate(TIMESTAMPS)

        # c's tiles shrink to 105 lines: it gets the 180-line layer; b, with big tiles, does not
        c.evaluate(SMALL_TILES)
        low = until(c, ["a", "b"], lambda r: r["frameHeight"] == LOW and r["layer"] == "h",
                    15, "c on the low layer once its tiles are small")
        assert {r["layerReason"] for r in low.values()} == {"tile"}, low
        assert cameras(b)["a"]["frameHeight"] >= FULL  # one small tile caps nobody else

        # b shrinks too: nobody takes a's full layer any more, so a stops encoding it
        b.evaluate(SMALL_TILES)
        until(b, ["a", "c"], lambda r: r["frameHeight"] == LOW, 15, "b on the low layer")
        deadline = time.monotonic() + 15
        while encodings(a)["f"]["active"]:
            assert time.monotonic() < deadline, ("a's full layer never paused", encodings(a))
            time.sleep(0.2)
        paused_at = encodings(a)["f"]["framesEncoded"]
        assert encodings(a)["h"]["active"]

        # c's tiles grow back: a's full layer resumes and c climbs to it, without its frame
        # timestamps ever going backwards across the switches
        c.evaluate(BIG_TILES)
        until(c, ["a", "b"], lambda r: r["frameHeight"] >= FULL and r["layer"] == "f", 20,
              "c back on the full layers")
        # a's own stats may lag c's by a poll (one failure in 9 runs read it right away)
        deadline = time.monotonic() + 10
        while not ((f := encodings(a)["f"])["active"] and f["framesEncoded"] > paused_at):
            assert time.monotonic() < deadline, ("a's full layer never resumed", f, paused_at)
            time.sleep(0.2)
        frames = {p: r["framesDecoded"] for p, r in cameras(c).items()}
        until(c, ["a", "b"], lambda r: r["framesDecoded"] >= frames[r["participant"]] + 20, 20,
              "c still decoding after the switches")
        assert c.evaluate("window.__backwards") == {}
        presented = c.evaluate("window.__presented")
        assert presented.get("a", 0) > 0 and presented.get("b", 0) > 0, presented
    finally:
        close(*pages)

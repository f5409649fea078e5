"""A receiver that decodes H.264 only, in real Chromium (issue 12, docs/call-server.md,
"Transcoding for one receiver"): in a call-server meeting of two VP8 simulcast publishers, a page
whose session announces H.264 only (``videoCodecs=h264``: setCodecPreferences on its video
m-line) decodes every remote camera as H.264 made by the meeting's transcoder (the local one
`parley up` starts on the first need), while the publishers receive each other's VP8 layers
untouched. And a receiver capped below a VP9 camera's lowest layer decodes a VP9 rung."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from parley.tokens import control_key
from tests.conftest import SERVER_SECRETS
from tests.sfu.test_simulcast import TIMESTAMPS, cameras, until
from tests.signaling.browser import close, open_client, stats, wait_media

pytestmark = [pytest.mark.browser]

CAM = "w=640&h=360&fps=10"  # two VP8 layers: h (320x180) and f (640x360)
PUBLISHERS = ["a", "b"]


def badges(page: Any) -> dict[str, str]:
    """The quality badge of each remote camera tile (tiles.js ``showQuality``)."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
        ".tile[data-source=camera]")].filter((t) => t.dataset.participant
        !== window.parley.state.identity).map((t) => [t.dataset.participant,
        t.dataset.quality || ""]))""")


def transcoded_moves(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("window.parley.state.messages.filter("
                         "m => m.type === 'sfu.layer' && m.transcoded)")


def routes(base: str) -> list[dict[str, Any]]:
    """The call server's routes to the meeting transcoder (its control API's status)."""
    key = control_key(SERVER_SECRETS[base])
    status = httpx.get(f"{base}/media/v1/status", headers={"Authorization": f"Bearer {key}"})
    status.raise_for_status()
    return status.json()["transcoding"]


def test_h264_only_receiver_decodes_every_camera_through_the_transcoder(
        browser: Any, parley_server: Callable[..., str]) -> None:
    base = parley_server()
    room = f"{base}/m/codecs"
    pages = [open_client(browser, f"{room}?name={n}&user={n}&topology=sfu&{CAM}")
             for n in PUBLISHERS]
    pubs = list(pages)
    try:
        for me, page in zip(PUBLISHERS, pubs, strict=True):
            wait_media(page, [(o, "video", "camera") for o in PUBLISHERS if o != me], timeout=30)
        # the H.264 page joins (no camera: its session announces H.264 on a recvonly m-line);
        # its first need starts `parley up`'s transcoder process
        opened = time.monotonic()
        h264 = open_client(browser, f"{room}?name=h&user=h&topology=sfu&video=0&videoCodecs=h264")
        pages.append(h264)

        # it decodes both cameras as H.264, each a transcoded rung, and keeps on
        got = until(h264, PUBLISHERS, lambda r: r["codec"] == "H264" and r["transcoded"]
                    and r["framesDecoded"] > 0, 30, "h decoding H.264 rungs")
        decoding = time.monotonic() - opened
        for row in got.values():
            assert row["layerReason"] == "codec", row
            assert row["layer"] == f"{row['frameHeight']}p", row  # the layer's own height
        # through the meeting's transcoder: one route (decoder) per camera, one H.264 output
        # each, whose one leg is h's
        routed = routes(base)
        assert sorted(r["participant"] for r in routed) == PUBLISHERS, routed
        assert all([(o["codec"], o["height"], o["legs"]) for o in r["rungs"]]
                   == [("video/h264", got[r["participant"]]["frameHeight"], 1)]
                   for r in routed), routed
        frames = {p: r["framesDecoded"] for p, r in got.items()}
        until(h264, PUBLISHERS, lambda r: r["framesDecoded"] >= frames[r["participant"]] + 20,
              20, "h still decoding its H.264 rungs")
        assert {m["codec"] for m in transcoded_moves(h264)} == {"video/h264"}
        assert {m["participant"] for m in transcoded_moves(h264)} == set(PUBLISHERS)
        deadline = time.monotonic() + 5
        while badges(h264) != dict.fromkeys(PUBLISHERS, "transcoded"):
            assert time.monotonic() < deadline, ("h's badges", badges(h264))
            time.sleep(0.2)
        print(f"\nH.264-only page: both cameras decoded as H.264 {decoding:.1f} s after it "
              f"opened (transcoder process started on that need); " + "; ".join(
                  f"{r['participant']}: {r['rungs'][0]['height']}p H.264 from layer "
                  f"{r['layer']} ({r['sourceHeight']} lines), {r['rungs'][0]['kbps']} kbit/s, "
                  f"transcoder {r['cpuPercent']} % of a core" for r in routes(base)))

        # the publishers send VP8 in two layers and get each other's VP8 layers, never a rung
        for me, page in zip(PUBLISHERS, pubs, strict=True):
            other = [o for o in PUBLISHERS if o != me]
            assert {e["rid"] for e in stats(page)["callServer"]["outbound"]
                    if e["source"] == "camera"} == {"h", "f"}
            row = until(page, other, lambda r: r["codec"] == "VP8" and r["layer"] in ("h", "f"),
                        10, f"{me} on the VP8 original")[other[0]]
            assert not row["transcoded"], row
            assert transcoded_moves(page) == [], transcoded_moves(page)
            assert badges(page)[other[0]] in ("HD", "SD"), badges(page)
    finally:
        close(*pages)


@pytest.mark.parametrize("second", ["vp9", "av1"])
def test_h264_only_receiver_in_a_mixed_codec_meeting(
        browser: Any, parley_server: Callable[..., str], second: str) -> None:
    """Issue 12's test with VP9 or AV1 in it (item 3): publisher ``a`` sends VP8, ``b`` VP9 or
    AV1 (``sendCodec``: simulcast, L1T1 per rid; AV1 from Chromium's libaom). The H.264-only page
    decodes both through the transcoder (one route per camera, each decoding its own codec: AV1
    with libdav1d from temporal units rebuilt out of Chromium's packets); ``a`` decodes ``b``'s
    layers as sent and ``b`` decodes ``a``'s VP8 ones, never a rung."""
    base = parley_server()
    room = f"{base}/m/{second}mix"
    codec = {"a": "VP8", "b": second.upper()}
    pubs = [open_client(browser, f"{room}?name={n}&user={n}&topology=sfu&{CAM}"
                        + (f"&sendCodec={second}" if n == "b" else "")) for n in PUBLISHERS]
    pages = list(pubs)
    try:
        for me, page in zip(PUBLISHERS, pubs, strict=True):
            wait_media(page, [(o, "video", "camera") for o in PUBLISHERS if o != me], timeout=30)
        # each publisher encodes its camera in its own codec, in two simulcast layers
        for me, page in zip(PUBLISHERS, pubs, strict=True):
            deadline = time.monotonic() + 10
            while True:
                out = [e for e in stats(page)["callServer"]["outbound"] if e["source"] == "camera"]
                if {(e["rid"], e["codec"]) for e in out if e["framesEncoded"]} == {
                        ("h", codec[me]), ("f", codec[me])}:
                    break
                assert time.monotonic() < deadline, (me, out)
                time.sleep(0.2)
            if me == "b":
                assert {e["scalabilityMode"] for e in out} == {"L1T1"}, out

        h264 = open_client(browser, f"{room}?name=h&user=h&topology=sfu&video=0&videoCodecs=h264")
        pages.append(h264)
        got = until(h264, PUBLISHERS, lambda r: r["codec"] == "H264" and r["transcoded"]
                    and r["framesDecoded"] > 0, 30, f"h decoding H.264 rungs of VP8 and {second}")
        for row in got.values():
            assert row["layerReason"] == "codec", row
        routed = {r["participant"]: r for r in routes(base)}
        assert {p: r["sourceCodec"] for p, r in routed.items()} == {
            "a": "video/vp8", "b": f"video/{second}"}, routed
        assert all([(o["codec"], o["legs"]) for o in r["rungs"]] == [("video/h264", 1)]
                   for r in routed.values()), routed
        # read from VP9's scalability structure, or AV1's sequence header
        assert routed["b"]["sourceHeight"] in (180, 360), routed
        frames = {p: r["framesDecoded"] for p, r in got.items()}
        until(h264, PUBLISHERS, lambda r: r["framesDecoded"] >= frames[r["participant"]] + 20,
              20, "h still decoding its H.264 rungs")
        assert {m["participant"] for m in transcoded_moves(h264)} == set(PUBLISHERS)

        # the publishers get each other's originals: VP9 layers for a, VP8 layers for b
        for me, page in zip(PUBLISHERS, pubs, strict=True):
            other = next(o for o in PUBLISHERS if o != me)
            row = until(page, [other], lambda r, o=other: r["codec"] == codec[o]
                        and r["layer"] in ("h", "f") and r["framesDecoded"] > 0,
                        15, f"{me} on {other}'s {codec[other]} original")[other]
            assert not row["transcoded"], row
            assert transcoded_moves(page) == [], transcoded_moves(page)
        print(f"\nVP8/{second} meeting, H.264-only page: " + "; ".join(
            f"{p} ({r['sourceCodec']}): {r['rungs'][0]['height']}p H.264 from layer {r['layer']} "
            f"({r['sourceHeight']} lines), transcoder {r['cpuPercent']} % of a core"
            for p, r in routed.items()))
    finally:
        close(*pages)


def cap(page: Any, bps: int) -> None:
    """``sfu.view`` with ``maxBitrate`` (0 lifts the cap), the tile heights last reported kept."""
    page.evaluate("""(bps) => window.parley.send({type: "sfu.view", maxBitrate: bps,
        views: JSON.parse(window.parley.sfuViews() || "{}")})""", bps)


def open_camera_and_viewer(browser: Any, room: str, codec: str) -> tuple[Any, Any]:
    """``b`` publishing a 640x360 camera at 30 frames/s in ``codec`` (simulcast: h and f), and
    ``r``, a page without a camera."""
    b = open_client(browser, f"{room}?name=b&user=b&topology=sfu&w=640&h=360&fps=30"
                             f"&sendCodec={codec}")
    try:
        return b, open_client(browser, f"{room}?name=r&user=r&topology=sfu&video=0")
    except BaseException:
        close(b)
        raise


def test_a_capped_receiver_gets_a_vp9_rung_of_a_vp9_camera(
        browser: Any, parley_server: Callable[..., str]) -> None:
    """Issue 12 item 3, budget rungs of a VP9 camera: ``b`` publishes VP9 simulcast
    (``sendCodec=vp9``, h 320x180 and f 640x360, 30 frames/s); ``r`` caps what it receives
    (``sfu.view`` maxBitrate 40 kbit/s, below b's lowest layer and audio) and decodes b's camera
    as the 90p rung in VP9 (libvpx-vp9 in `parley up`'s transcoder; r's leg negotiated VP9, so a
    VP8 rung would not do), then b's own layers when the cap is lifted. Chromium's VP9 decoder
    takes both switches (PictureID and TL0PICIDX continued by the node, RFC 9628) and the
    presented frames' RTP timestamps never go back."""
    base = parley_server()
    room = f"{base}/m/vp9rung"
    b, r = open_camera_and_viewer(browser, room, "vp9")
    pages = [b, r]
    try:
        wait_media(r, [("b", "video", "camera")], timeout=30)
        until(r, ["b"], lambda x: x["codec"] == "VP9" and x["layer"] in ("h", "f")
              and x["framesDecoded"] > 0, 15, "r on b's VP9 layers")
        r.evaluate(TIMESTAMPS)

        capped = time.monotonic()
        cap(r, 40_000)
        got = until(r, ["b"], lambda x: x["codec"] == "VP9" and x["transcoded"]
                    and x["layer"] == "90p" and x["frameHeight"] == 90, 30,
                    "r decoding b's 90p VP9 rung")["b"]
        down = time.monotonic() - capped
        assert got["layerReason"] == "transcoded", got
        until(r, ["b"], lambda x: x["framesDecoded"] >= got["framesDecoded"] + 30
              and x["frameHeight"] == 90, 15, "r still decoding the rung")
        routed = routes(base)
        assert [(x["participant"], x["sourceCodec"], [(o["codec"], o["height"], o["legs"])
                                                      for o in x["rungs"]]) for x in routed] \
            == [("b", "video/vp9", [("video/vp9", 90, 1)])], routed
        assert {(m["codec"], m["reason"]) for m in transcoded_moves(r)} == {
            ("video/vp9", "transcoded")}
        source_kbps = routed[0]["rungs"][0]["kbps"]

        lifted = time.monotonic()
        cap(r, 0)
        back = until(r, ["b"], lambda x: x["codec"] == "VP9" and not x["transcoded"]
                     and x["layer"] in ("h", "f") and x["frameHeight"] >= 180, 30,
                     "r on b's layers again")["b"]
        up = time.monotonic() - lifted
        until(r, ["b"], lambda x: x["framesDecoded"] >= back["framesDecoded"] + 30, 15,
              "r still decoding b's layers")
        assert r.evaluate("window.__backwards") == {}
        assert r.evaluate("window.__presented")["b"] > 60
        print(f"\nVP9 rung in Chromium: 90p VP9 decoded {down:.1f} s after the cap (rung "
              f"{source_kbps} kbit/s from layer {routed[0]['layer']}, transcoder "
              f"{routed[0]['cpuPercent']} % of a core), layer {back['layer']} again "
              f"{up:.1f} s after it was lifted; freezes {back['freezeCount']}")
    finally:
        close(*pages)


def test_capped_receivers_of_an_av1_camera(
        browser: Any, parley_server: Callable[..., str]) -> None:
    """Issue 12 item 3 with AV1: ``b`` publishes AV1 simulcast (``sendCodec=av1``, h 320x180 and
    f 640x360); two receivers cap what they take at 40 kbit/s, below b's lowest layer. ``h``
    decodes H.264 only: it gets the 90p budget rung in H.264, made from b's AV1 by the
    transcoder (libdav1d, then libx264). ``r`` decodes AV1: no AV1 encoder runs in the
    transcoder (libsvtav1 is the only one this PyAV has, and it hung in a test process), so it
    stays on b's lowest AV1 layer, untranscoded (docs/call-server.md)."""
    base = parley_server()
    room = f"{base}/m/av1cap"
    b, r = open_camera_and_viewer(browser, room, "av1")
    pages = [b, r]
    try:
        h = open_client(browser, f"{room}?name=h&user=h&topology=sfu&video=0&videoCodecs=h264")
        pages.append(h)
        until(r, ["b"], lambda x: x["codec"] == "AV1" and x["layer"] in ("h", "f")
              and x["framesDecoded"] > 0, 30, "r on b's AV1 layers")
        until(h, ["b"], lambda x: x["codec"] == "H264" and x["transcoded"]
              and x["framesDecoded"] > 0, 30, "h on H.264 from b's AV1")
        r.evaluate(TIMESTAMPS)

        capped = time.monotonic()
        cap(h, 40_000)
        cap(r, 40_000)
        got = until(h, ["b"], lambda x: x["codec"] == "H264" and x["transcoded"]
                    and x["layer"] == "90p" and x["frameHeight"] == 90, 30,
                    "h decoding b's 90p H.264 rung")["b"]
        down = time.monotonic() - capped
        low = until(r, ["b"], lambda x: x["codec"] == "AV1" and x["layer"] == "h"
                    and x["frameHeight"] == 180, 15, "r on b's lowest AV1 layer")["b"]
        until(h, ["b"], lambda x: x["framesDecoded"] >= got["framesDecoded"] + 30
              and x["frameHeight"] == 90, 15, "h still decoding the rung")
        until(r, ["b"], lambda x: x["framesDecoded"] >= low["framesDecoded"] + 30, 15,
              "r still decoding b's lowest layer")
        routed = routes(base)
        assert [(x["participant"], x["sourceCodec"], [(o["codec"], o["height"], o["legs"])
                                                      for o in x["rungs"]]) for x in routed] \
            == [("b", "video/av1", [("video/h264", 90, 1)])], routed
        assert not cameras(r)["b"]["transcoded"]
        assert transcoded_moves(r) == [], transcoded_moves(r)
        assert r.evaluate("window.__backwards") == {}
        print(f"\nAV1 camera, capped receivers: h decodes the 90p H.264 rung {down:.1f} s after "
              f"the cap (from layer {routed[0]['layer']}, transcoder {routed[0]['cpuPercent']} "
              f"% of a core); r stays on AV1 layer h ({low['frameHeight']} lines)")
    finally:
        close(*pages)

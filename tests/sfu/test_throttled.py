"""Issue 12: one receiver's link narrows (tbf in a network namespace of the test's own) in a
six-participant call-server meeting of simulcast publishers in real Chromium. The call server
moves that receiver, and only it, to the low layers without a video freeze over 1 s, tries more
on padding past the hold (which fails, no layer goes up to be cut again, and none goes down
within 5 s of the failure), and moves it back
up, after a probe that passes, when the link widens; the five others keep the full layers; the
layer switches keep each track's RTP timestamps monotonic. (That phase was out for a while: a
failed probe's aftermath outlasted the 2 s its loss is not judged and cut to transcoded rungs,
a 3.3 s freeze, in the CI rehearsal. Now the padding stops when the receiver's REMB falls,
before the queue loses; a NACKed packet is resent once per 0.2 s, not at every ask; and no cut
within 5 s of a failed probe lands below what the link carried before it: docs/call-server.md.)

Six participants: two camera publishers and three listeners (no camera or microphone) in the
host's Chromium, plus the throttled receiver (microphone only) in its own Chromium in the
namespace. Six 640x360 simulcast publishers on this 2-core machine starved the pages' decoders
(seconds without a presented frame on unthrottled pages) so the layer choice could not tell the
throttled link from a busy CPU; two publish, every other participant decodes both cameras."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from parley.media.bwe import PROBE_AFTER_S
from tests.netshape import Netns, netns
from tests.sfu.throttled import (
    CAM,
    FULL,
    LOW,
    MARK,
    bwe_probes,
    cameras,
    frames,
    netns_browser,
    open_behind,
    probe,
    until,
)
from tests.signaling.browser import close, open_client, wait_media

pytestmark = [pytest.mark.browser]

PUBLISHERS = ["t1", "t2"]
LISTENERS = ["l1", "l2", "l3"]
RECEIVER = "rx"
# The receiver's downlink under the throttle: the two low layers (about 70 kbit/s each at 10
# frames/s) and two audio tracks (about 40 each) fit, one full layer (about 190) with one low
# one does not (at 350 kbit/s it did, and the node rightly kept one camera full).
RATE_KBIT = 270
# No video freeze over 1 s at any receiver, the throttled one's switch included: its layers move
# down as soon as its NACKs show the loss, what it is sent then is paced (media-node/pacer.py) so
# the low layers' keyframes do not meet the queue the full layers filled, and no layer goes back
# up at the cut estimate (``Downlink.holding``: a camera raised back to full and cut again froze
# 1.15 s).
FREEZE_MS = 1000
PROBE_FREEZE_MS = 2500  # after a failed probe: the probe's own loss, not a cascade (below)


@pytest.fixture(scope="module")
def link() -> Iterator[Netns]:
    """The receiver's namespace, made before the host's Chromium starts: a veth and addresses
    appearing under a running Chromium are a network change to it, and the page loads in flight
    then fail with net::ERR_NETWORK_CHANGED (a publisher page once never got its identity)."""
    with netns("thr") as ns:
        yield ns


@pytest.fixture(scope="module")
def browser(link: Netns, browser: Any) -> Any:
    """The module's Chromium (tests/conftest.py), started after ``link``."""
    return browser


def moves(page: Any) -> list[dict[str, Any]]:
    """The page's last layer moves (sfu.layer), for a failure's message."""
    return page.evaluate("window.parley.state.messages.filter(m => m.type === 'sfu.layer')"
                         ".slice(-12).map(m => [m.participant, m.rid, m.reason, m.estimateKbps])")


# Every move down (to a lower layer or a transcoded rung) the page is told of from here on,
# with the epoch milliseconds it came (as the frame probe's).
TIME_DOWNS = """() => {
  window.__downs = [];
  window.addEventListener("parley:message", (e) => {
    const m = e.detail;
    if (m.type === "sfu.layer" && !["fits", "start"].includes(m.reason))
      window.__downs.push([Date.now(), m.participant, m.rid, m.reason, m.estimateKbps]);
  });
}"""


def low(row: dict[str, Any]) -> bool:
    """On a layer below the full one: the low simulcast layer, or a rung under it."""
    return 0 < row["frameHeight"] <= LOW and row["layer"] not in (None, "f")


def full(row: dict[str, Any]) -> bool:
    return row["frameHeight"] >= FULL and row["layer"] == "f"


def test_a_throttled_receiver_gets_low_layers_and_climbs_back_the_others_keep_full(
        link: Netns, browser: Any, chromium: str, parley_server: Callable[..., str],
        tmp_path: Path) -> None:
    everyone = [*PUBLISHERS, *LISTENERS, RECEIVER]
    cams = {me: [o for o in PUBLISHERS if o != me] for me in everyone}
    ns = link
    base = parley_server({"PARLEY_ALLOWED_HOSTS": f"127.0.0.1,localhost,{ns.host_ip}"},
                         host="0.0.0.0")
    origin = f"http://{ns.host_ip}:{urlsplit(base).port}"
    behind = netns_browser(browser, ns, chromium, tmp_path, origin)
    pages: list[Any] = []
    try:
        pages = [open_client(browser, f"{base}/m/thr?name={n}&user={n}&topology=sfu&{CAM}")
                 for n in PUBLISHERS]
        pages += [open_client(browser, f"{base}/m/thr?name={n}&user={n}&topology=sfu"
                              "&audio=0&video=0") for n in LISTENERS]
        rx = open_behind(behind, base, origin,
                         f"/m/thr?name={RECEIVER}&user={RECEIVER}&topology=sfu&video=0")
        errors: list[str] = []
        rx.on("console", lambda m: m.type == "error" and errors.append(m.text))
        rx.on("pageerror", lambda e: errors.append(str(e)))
        watching = dict(zip(everyone, [*pages, rx], strict=True))
        for me, page in watching.items():
            others = cams[me]
            wait_media(page, [(o, "video", "camera") for o in others], timeout=60)
            until(lambda page=page, others=others: all(
                o in (c := cameras(page)) and full(c[o]) for o in others), 45,
                f"{me} on the full layer of every camera", lambda page=page: cameras(page))
            probe(page, me, others)

        # the link narrows: within 5 s the receiver is on low layers of every camera
        rx.evaluate(MARK)  # the receiver's freezes from here on are the throttle's
        ns.throttle(RATE_KBIT)
        until(lambda: all(low(r) for r in cameras(rx).values()), 5,
              "the throttled receiver on low layers", lambda: cameras(rx))
        switched = frames(rx)
        assert all(s["gap"] <= FREEZE_MS for s in switched.values()), (switched,
                                                                         moves(rx))
        for page in watching.values():
            page.evaluate(MARK)
        # on them, 3 s of video (30 frames of each camera) with no freeze over 1 s, while
        # every other receiver keeps the full layer of every camera
        counted = {o: s["frames"] for o, s in switched.items()}
        until(lambda: all(s["frames"] >= counted[o] + 30 for o, s in frames(rx).items()),
              20, "3 s of low-layer video at the throttled receiver", lambda: frames(rx))
        dropped = ns.dropped()
        assert dropped > 0  # the throttle really bit
        steady = frames(rx)
        assert all(s["gap"] <= FREEZE_MS for s in steady.values()), (steady, moves(rx))
        assert all(low(r) for r in cameras(rx).values()), cameras(rx)
        for me, page in zip([*PUBLISHERS, *LISTENERS], pages, strict=True):
            rows = cameras(page)
            assert all(full(rows[o]) for o in cams[me]), f"{me}: {rows}, {moves(page)}"
            seen = frames(page)
            assert all(seen[o]["height"] >= FULL and seen[o]["gap"] <= FREEZE_MS
                       for o in cams[me]), (me, seen)

        # the link stays narrow past the hold: the call server tries what does not fit on
        # padding first, the padding meets the throttle, and no layer goes up to meet loss and
        # be cut again, nor down (a raise of the real layers cost two switches and doubled the
        # hold; the loss the padding caused, judged, once cut both cameras to a rung, and its
        # aftermath, past the 2 s unjudged, did again in the CI rehearsal: 6 s are watched)
        rx.evaluate(MARK)
        rx.evaluate(TIME_DOWNS)
        until(lambda: bwe_probes(base).get("failed", 0) >= 1, 40,
              "a failed probe on the throttled link", lambda: (bwe_probes(base), moves(rx)))
        failed = time.time() * 1000  # within 0.1 s of the failure (epoch ms, as the pages')
        counted = {o: s["frames"] for o, s in frames(rx).items()}  # and 6 s of video after it
        until(lambda: all(s["frames"] >= counted[o] + 60 for o, s in frames(rx).items()),
              30, "6 s of video after the failed probe", lambda: frames(rx))
        probed = frames(rx)
        since = {o: round(s["gapAt"] - failed) for o, s in probed.items()}  # ms from the failure
        # the probe's own loss can still freeze a camera about a second (1.02 and 1.12 s in
        # the CI rehearsal of 2026-12-03, 167-800 ms in 14 loaded runs alone: open,
        # docs/call-server.md); what the cascade did, a cut and a 3.3 s freeze, must not come
        assert all(s["gap"] <= PROBE_FREEZE_MS for s in probed.values()), (
            f"{probed} gaps from {since} ms after the failure, {moves(rx)}, {bwe_probes(base)}")
        # and no move down for PROBE_AFTER_S after it (no cut lands under what the link
        # carried before the probe): the aftermath of the probe's loss is not a narrower link.
        # Loss that outlasts it is the link's, as any other (docs/call-server.md): in two CI
        # runs of 2026-12-04, before subscribers on a cut link were paced at all times, the
        # bursts of the loaded machine on the 270 kbit/s link cut both cameras to a rung more
        # than 5 s after the failure.
        # (``failed`` is up to a poll and a scrape after the node's failure: 0.5 s given)
        late = rx.evaluate("window.__downs")
        assert all(at - failed > 1000 * (PROBE_AFTER_S - 0.5) for at, *_ in late), (
            f"{late} (failed at {failed:.0f}), {moves(rx)}, {bwe_probes(base)}")

        # the link widens: the receiver climbs back to the full layers
        ns.lift()
        lifted = time.monotonic()
        until(lambda: all(full(r) for r in cameras(rx).values()), 60,
              "the receiver back on the full layers", lambda: cameras(rx))
        climb = time.monotonic() - lifted
        assert bwe_probes(base).get("passed", 0) >= 1  # the climb was probed first
        counted = {o: s["frames"] for o, s in frames(rx).items()}
        until(lambda: all(s["frames"] >= counted[o] + 10 for o, s in frames(rx).items()),
              20, "full-layer video after the climb", lambda: frames(rx))
        final = frames(rx)
        # the same track across every switch: RTP timestamps never went backwards, no
        # decoder or page error
        assert all(s["backwards"] == 0 and s["errors"] == 0 for s in final.values()), final
        assert errors == [], errors
        print(f"throttled receiver: switch gaps {[round(s['gap']) for s in switched.values()]}"
              f" ms, steady gaps {[round(s['gap']) for s in steady.values()]} ms, "
              f"probe gaps {[round(s['gap']) for s in probed.values()]} ms (from {since} ms after "
              f"the failure), tbf dropped "
              f"{dropped} packets, back on the full layers {climb:.1f} s after the lift, "
              f"probes {bwe_probes(base)}, moves {moves(rx)}")
    finally:
        close(*pages)
        behind.close()

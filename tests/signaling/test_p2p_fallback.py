"""Per-pair P2P fallback: one mesh pair that cannot connect directly moves to TURN on its own.

A's page gets ``blockDirect=<B>`` (docs/signaling.md, "P2P fallback"): it exchanges no direct
candidates with B (the model of a firewall between those two), so the A<->B pair's direct ICE
attempt fails; the client's watchdog escalates that pair to an ICE restart with
``iceTransportPolicy: "relay"`` through coturn. A<->C and B<->C stay direct. Nobody rejoins.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.netcut import cut
from tests.signaling.browser import close, open_client, stats, wait_media

pytestmark = [pytest.mark.browser, pytest.mark.turn]

CAM = "w=320&h=240&fps=15"


def pair_types(page, participant: str) -> set[tuple[str, str]]:
    """Candidate types of the nominated, succeeded pairs (one per transport; may repeat)."""
    return {(p["local"], p["remote"]) for p in stats(page)["candidatePairs"]
            if p["participant"] == participant}


def turn_server(parley_server: Callable[..., str], turn: tuple[str, str]) -> str:
    """`parley up` handing out coturn over UDP and TCP with shared-secret credentials."""
    uri, secret = turn
    return parley_server({"PARLEY_TURN_URIS": f"{uri}?transport=udp,{uri}?transport=tcp",
                          "PARLEY_TURN_SECRET": secret})


def wait_everyone(pages: dict, timeout: float = 30) -> None:
    """Every page decodes every other page's camera and receives its microphone."""
    for me, page in pages.items():
        others = [o for o in pages if o != me]
        wait_media(page, [(o, "video", "camera") for o in others]
                   + [(o, "audio", "microphone") for o in others], timeout=timeout)


def test_blocked_pair_recovers_through_turn_while_the_others_stay_direct(
        browser, parley_server: Callable[..., str], turn: tuple[str, str]) -> None:
    base = turn_server(parley_server, turn)
    room = f"{base}/m/fallback?topology=p2p&{CAM}"
    started = time.monotonic()
    a = open_client(browser, f"{room}&name=A&user=fa&blockDirect=fb")
    b = open_client(browser, f"{room}&name=B&user=fb")
    c = open_client(browser, f"{room}&name=C&user=fc")
    pages = {"fa": a, "fb": b, "fc": c}
    try:
        wait_everyone(pages)
        recovered = time.monotonic() - started

        sa, sb, sc = stats(a), stats(b), stats(c)
        assert sa["topology"] == sb["topology"] == sc["topology"] == "p2p"
        assert sa["paths"] == {"fb": "relay", "fc": "direct"}, sa["fallbacks"]
        assert sb["paths"] == {"fa": "relay", "fc": "direct"}, sb["fallbacks"]
        assert sc["paths"] == {"fa": "direct", "fb": "direct"}, sc["fallbacks"]
        assert sa["fallbacks"]["fb"]["reason"] in ("connect_timeout", "failed", "peer")
        # The A<->B media goes through coturn: relay candidates at both ends of both pages' pair.
        assert pair_types(a, "fb") == {("relay", "relay")}, sa["candidatePairs"]
        assert pair_types(b, "fa") == {("relay", "relay")}, sb["candidatePairs"]
        # The other pairs never escalated and stay host to host.
        for page, other in ((a, "fc"), (b, "fc"), (c, "fa"), (c, "fb")):
            assert pair_types(page, other) == {("host", "host")}, (other, stats(page))
            assert stats(page)["fallbacks"][other]["escalatedAt"] is None

        # Everything keeps decoding: 30 more frames on every direction.
        for page in pages.values():
            frames = {r["participant"]: r["framesDecoded"] for r in stats(page)["inbound"]
                      if r["kind"] == "video"}
            for other, n in frames.items():
                wait_media(page, [(other, "video", "camera")], frames=n + 30, timeout=15)

        fa = sa["fallbacks"]["fb"]
        print(f"\nA<->B: escalated {fa['escalatedAt'] - fa['startedAt']:.0f} ms after the pair "
              f"started ({fa['reason']}), connected through TURN "
              f"{fa['connectedAt'] - fa['escalatedAt']:.0f} ms after escalating; every page "
              f"decoding everyone {recovered:.1f} s after the first page opened")
    finally:
        close(a, b, c)


def test_without_turn_the_blocked_pair_moves_to_the_call_server(
        browser, parley_server: Callable[..., str]) -> None:
    """No TURN configured: the blocked pair's media goes through the call server (a meeting of
    just those two); the other pairs stay direct and keep decoding."""
    base = parley_server()
    room = f"{base}/m/noturn?topology=p2p&{CAM}"
    started = time.monotonic()
    a = open_client(browser, f"{room}&name=A&user=na&blockDirect=nb")
    # B's own watchdog is slow: it moves because A did (sfu.start {pair, reason: "peer"})
    b = open_client(browser, f"{room}&name=B&user=nb&connectTimeout=30000")
    c = open_client(browser, f"{room}&name=C&user=nc")
    pages = {"na": a, "nb": b, "nc": c}
    try:
        wait_everyone(pages)
        recovered = time.monotonic() - started
        sa, sb, sc = stats(a), stats(b), stats(c)
        assert sa["paths"] == {"nb": "sfu", "nc": "direct"}, sa["fallbacks"]
        assert sb["paths"] == {"na": "sfu", "nc": "direct"}, sb["fallbacks"]
        assert sc["paths"] == {"na": "direct", "nb": "direct"}, sc["fallbacks"]
        assert sb["fallbacks"]["na"]["reason"] == "peer", sb["fallbacks"]
        assert sa["topology"] == sb["topology"] == sc["topology"] == "p2p"
        assert [p.get("via") for p in sa["candidatePairs"] if p["participant"] == "nb"] == [
            "call-server"], sa["candidatePairs"]
        for page, other in ((a, "nc"), (b, "nc"), (c, "na"), (c, "nb")):
            assert pair_types(page, other) == {("host", "host")}, (other, stats(page))
        for page in pages.values():
            frames = {r["participant"]: r["framesDecoded"] for r in stats(page)["inbound"]
                      if r["kind"] == "video"}
            for other, n in frames.items():
                wait_media(page, [(other, "video", "camera")], frames=n + 30, timeout=15)
        fa = sa["fallbacks"]["nb"]
        print(f"\nA<->B via call server: escalated {fa['escalatedAt'] - fa['startedAt']:.0f} ms "
              f"after the pair started, connected {fa['connectedAt'] - fa['escalatedAt']:.0f} ms "
              f"later; everyone decoding {recovered:.1f} s after the first page opened")
    finally:
        close(a, b, c)


def test_a_pair_whose_direct_path_breaks_mid_call_moves_to_turn(
        browser, parley_server: Callable[..., str], turn: tuple[str, str]) -> None:
    """The kernel starts dropping every packet between A's and B's host candidates mid-call
    (nftables on loopback): that pair, and only that pair, restarts ICE through coturn while
    the cut lasts, and its media flows again; A<->C and B<->C never notice."""
    base = turn_server(parley_server, turn)
    room = f"{base}/m/midcall?topology=p2p&{CAM}"
    a = open_client(browser, f"{room}&name=A&user=ma")
    b = open_client(browser, f"{room}&name=B&user=mb")
    c = open_client(browser, f"{room}&name=C&user=mc")
    pages = {"ma": a, "mb": b, "mc": c}
    try:
        wait_everyone(pages)
        sa = stats(a)
        assert sa["paths"] == {"mb": "direct", "mc": "direct"}, sa["fallbacks"]
        assert pair_types(a, "mb") == {("host", "host")}

        def host_ports(page, other: str) -> list[int]:
            found = page.evaluate(f"window.parley.localCandidates({other!r})")
            return [x["port"] for x in found if x["type"] == "host"]

        a_ports, b_ports = host_ports(a, "mb"), host_ports(b, "ma")
        assert a_ports and b_ports
        with cut(a_ports, b_ports):
            cut_at, cut_at_b = time.monotonic(), b.evaluate("performance.now()")
            before = max(r["framesDecoded"] for r in stats(a)["inbound"]
                         if r["participant"] == "mb" and r["kind"] == "video")
            # media from B again, with the cut still in place: only TURN can carry it
            wait_media(a, [("mb", "video", "camera")], frames=before + 30, timeout=45)
            back = time.monotonic() - cut_at
            sa, sb, sc = stats(a), stats(b), stats(c)
            assert sa["paths"] == {"mb": "relay", "mc": "direct"}, sa["fallbacks"]
            assert sb["paths"] == {"ma": "relay", "mc": "direct"}, sb["fallbacks"]
            assert sc["paths"] == {"ma": "direct", "mb": "direct"}, sc["fallbacks"]
            assert sa["fallbacks"]["mb"]["reason"] in (
                "stalled", "disconnected", "failed", "peer"), sa["fallbacks"]
            # with host<->host cut, whatever connects goes through coturn
            types = pair_types(a, "mb") | pair_types(b, "ma")
            assert types and all("relay" in t for t in types), (
                sa["candidatePairs"], sa["fallbacks"], sb["fallbacks"])
            wait_media(b, [("ma", "video", "camera")], frames=max(
                r["framesDecoded"] for r in sb["inbound"]
                if r["participant"] == "ma" and r["kind"] == "video") + 30, timeout=20)
            for page, other in ((a, "mc"), (b, "mc"), (c, "ma"), (c, "mb")):
                assert stats(page)["fallbacks"][other]["escalatedAt"] is None, other
        fb = sb["fallbacks"]["ma"]
        print(f"\nA<->B cut mid-call: B escalated {(fb['escalatedAt'] - cut_at_b) / 1000:.1f} s "
              f"after the cut ({fb['reason']}), connected through TURN "
              f"{(fb['connectedAt'] - fb['escalatedAt']) / 1000:.1f} s later; B's video "
              f"decoding again at A {back:.1f} s after the cut")
    finally:
        close(a, b, c)

"""Attacks on the call server (issue 9, items 3, 4, 5, 7), against real processes: `parley
media-node` and `parley up` started as subprocesses, aiortc participants publishing real media.

- its control API: paths ending like a probe, a node that has no control key;
- a participant's id used in another meeting than its own;
- a subscribe-only participant offering to send; more publish slots than a participant has;
- a room named like a P2P-fallback pair's call-server meeting.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from aiortc import RTCPeerConnection, RTCSessionDescription

from parley import tokens
from parley.signaling.sfu import pair_meeting
from tests.conftest import ROOT, Kube, free_port, port_open, wait_until
from tests.media.client import CONTROL, CONTROL_KEY, TEST_SECRET, Client, PatternVideo, wait_for
from tests.signaling.helpers import Client as WsClient
from tests.signaling.helpers import guest_token

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def media_node(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], str]]:
    """Start `parley media-node --role call-server` processes (no Redis) with an environment;
    returns the control API's URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> str:
        port = free_port()
        log = (tmp_path / f"node-{port}.log").open("wb")
        base = {k: v for k, v in os.environ.items()
                if k not in ("PARLEY_CONTROL_KEY", "PARLEY_TOKEN_SECRET", "PARLEY_REDIS_URL")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", "media-node", "--role", "call-server",
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env={**base, **env})
        procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, what="media node")
        assert proc.poll() is None, (tmp_path / f"node-{port}.log").read_text()
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


# Paths that end like the open probes: a suffix check let them through without a key.
PROBE_SUFFIXED = [("DELETE", "/v1/participants/metrics"), ("DELETE", "/v1/participants/livez"),
                  ("POST", "/v1/drain/readyz"), ("GET", "/v1/status/metrics"),
                  ("DELETE", "/v1/meetings/m/participants/metrics"), ("POST", "/v1/livez"),
                  ("POST", "/livez"), ("GET", "/livez/")]


async def test_control_api_paths_match_exactly(
        media_node: Callable[[dict[str, str]], str],
        parley_server: Callable[..., str]) -> None:
    """Every path but the three probes needs the key, on a node and under `parley up`'s
    /media mount; the participants of a meeting stay."""
    node = media_node({"PARLEY_CONTROL_KEY": CONTROL_KEY})
    secret = "security-call-server-paths-secret-0123456789"
    embedded = f"{parley_server({'PARLEY_TOKEN_SECRET': secret})}/media"
    a = Client("a", "paths")
    try:
        await a.join(node)
        async with httpx.AsyncClient(timeout=10) as http:
            for url in (node, embedded):
                for method, path in PROBE_SUFFIXED:
                    r = await http.request(method, f"{url}{path}")
                    assert r.status_code == 401, (url, method, path, r.status_code, r.text)
                    assert r.json()["detail"]["code"] == "control_key_invalid"
                for probe in ("/livez", "/readyz", "/metrics"):
                    assert (await http.get(f"{url}{probe}")).status_code == 200, (url, probe)
            # the participant was not removed by any of them
            r = await http.delete(f"{node}/v1/meetings/paths/participants/livez")
            assert r.status_code == 401
            st = (await http.get(f"{node}/v1/status", headers=CONTROL)).json()
            assert st["participant_ids"] == {"paths": ["a"]}
    finally:
        await a.close()


async def test_a_call_server_without_its_control_key_refuses_every_call(
        media_node: Callable[[dict[str, str]], str]) -> None:
    """No PARLEY_CONTROL_KEY: nothing but the probes answers, not even with the key derived
    from a token secret the node was (wrongly) given."""
    node = media_node({"PARLEY_TOKEN_SECRET": TEST_SECRET})
    pc = RTCPeerConnection()
    pc.addTransceiver(PatternVideo("x-camera"), "sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with httpx.AsyncClient(timeout=10, headers=CONTROL) as http:
            for method, path, body in (
                    ("GET", "/v1/status", None), ("POST", "/v1/drain", {"deadline": 1}),
                    ("DELETE", "/v1/drain", None),
                    ("POST", "/v1/meetings/m/participants",
                     {"type": "offer", "sdp": pc.localDescription.sdp, "participant": "x"})):
                r = await http.request(method, f"{node}{path}", json=body)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert r.json()["detail"]["code"] == "control_key_missing"
            assert (await http.get(f"{node}/livez")).status_code == 200
            assert (await http.get(f"{node}/readyz")).status_code == 200
    finally:
        await pc.close()


async def test_a_participant_acts_only_in_its_own_meeting(
        media_node: Callable[[dict[str, str]], str]) -> None:
    """A participant id of meeting X named under meeting Y (events, answer, publish, leave)
    is not found; X's call goes on."""
    node = media_node({"PARLEY_CONTROL_KEY": CONTROL_KEY})
    a, b, c = Client("a", "x"), Client("b", "x"), Client("c", "y")
    try:
        for who in (a, b, c):
            await who.join(node)
        await wait_for(lambda: a.decoding_from(["b"]) and b.decoding_from(["a"]), 20,
                       "a and b decoding each other")
        async with httpx.AsyncClient(timeout=10, headers=CONTROL) as http:
            elsewhere = f"{node}/v1/meetings/y/participants/{a.pid}"
            for method, path, body in (
                    ("GET", "/events?after=0&wait=0", None),
                    ("POST", "/sdp", {"type": "answer", "sdp": "v=0\r\n"}),
                    ("POST", "/publish", {"kinds": ["video"]}), ("DELETE", "", None)):
                r = await http.request(method, f"{elsewhere}{path}", json=body)
                assert r.status_code == 404, (method, path, r.status_code, r.text)
                assert r.json()["detail"]["code"] == "no_participant"
            # the old, meeting-less routes are gone
            assert (await http.delete(f"{node}/v1/participants/{a.pid}")).status_code == 404
            st = (await http.get(f"{node}/v1/status")).json()
        assert st["participant_ids"] == {"x": ["a", "b"], "y": ["c"]}
        assert st["subscriptions"] == 4  # a<->b only: c (alone in y) receives nothing
        frames = b.frames["a-camera"]
        await wait_for(lambda: b.frames["a-camera"] > frames + 10, 10, "a still reaches b")
        assert not [k for k in c.frames if k.startswith(("a-", "b-"))]
    finally:
        await asyncio.gather(a.close(), b.close(), c.close())


async def test_a_subscribe_only_participant_sends_nothing(
        media_node: Callable[[dict[str, str]], str]) -> None:
    """Joined without publish (a token without the grant), its offer to send camera and
    microphone is answered inactive, nothing of it is forwarded, and it gets no publish
    slot; it still receives the publisher."""
    node = media_node({"PARLEY_CONTROL_KEY": CONTROL_KEY})
    speaker = Client("speaker", "talk")
    viewer = Client("viewer", "talk", publish=False)
    try:
        await speaker.join(node)
        await viewer.join(node)
        answer = viewer.pc.remoteDescription.sdp
        assert answer.count("m=") == 2 and answer.count("a=inactive") == 2, answer
        await wait_for(lambda: viewer.decoding_from(["speaker"]), 20, "viewer decoding")
        async with httpx.AsyncClient(timeout=10, headers=CONTROL) as http:
            r = await http.post(f"{viewer.me}/publish", json={"kinds": ["video"]})
            assert r.status_code == 403
            assert r.json()["detail"]["code"] == "publish_not_allowed"
            st = (await http.get(f"{node}/v1/status")).json()
        assert st["subscriptions"] == 2  # the viewer's two legs; nothing goes to the speaker
        assert sorted(st["participant_ids"]["talk"]) == ["speaker", "viewer"]
        assert not [k for k in speaker.frames if k.startswith("viewer-")]
        assert not [t for t in speaker.pc.getTransceivers() if t.receiver.track is not None
                    and t.currentDirection in ("recvonly", "sendrecv")]
    finally:
        await asyncio.gather(speaker.close(), viewer.close())


async def test_publish_slots_are_bounded_per_participant(
        media_node: Callable[[dict[str, str]], str]) -> None:
    """At most three published tracks (microphone, camera, screen): a join offering four is
    refused with publish_limit, and so is a fourth slot asked for after joining."""
    node = media_node({"PARLEY_CONTROL_KEY": CONTROL_KEY})
    pc = RTCPeerConnection()
    for i in range(4):
        pc.addTransceiver(PatternVideo(f"flood-{i}"), "sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    a = Client("a", "slots")
    try:
        async with httpx.AsyncClient(timeout=10, headers=CONTROL) as http:
            r = await http.post(f"{node}/v1/meetings/slots/participants", json={
                "type": "offer", "sdp": pc.localDescription.sdp, "participant": "flood"})
            assert r.status_code == 403, r.text
            assert r.json()["detail"]["code"] == "publish_limit"
            await a.join(node)  # camera + microphone
            assert (await http.post(f"{a.me}/publish", json={"kinds": ["video"]})
                    ).status_code == 202
            r = await http.post(f"{a.me}/publish", json={"kinds": ["video"]})
            assert r.status_code == 403 and r.json()["detail"]["code"] == "publish_limit"
            st = (await http.get(f"{node}/v1/status")).json()
        assert st["participant_ids"] == {"slots": ["a"]}
    finally:
        await pc.close()
        await a.close()


async def _offer(pc: RTCPeerConnection, name: str) -> str:
    pc.addTransceiver(PatternVideo(f"{name}-camera"), "sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


async def test_a_room_named_like_a_pair_gets_nothing_of_the_pair(
        parley_server: Callable[..., str]) -> None:
    """alice and bob fall back to the call server for their pair (sfu.join with ``pair``); a
    guest joins the room the old scheme named that meeting (``<room>:pair:alice:bob``) and
    joins the call server there: it is alone in its meeting, the pair's is opaque."""
    secret = "security-pair-meeting-secret-0123456789abcdef"
    base = parley_server({"PARLEY_TOKEN_SECRET": secret, "PARLEY_ALLOW_GUESTS": "1"})
    room = "R"
    alice = await WsClient.connect(base, "alice", token=tokens.mint(
        secret, identity="alice", room=room))
    bob = await WsClient.connect(base, "bob", token=tokens.mint(secret, identity="bob", room=room))
    clients = [alice, bob]
    pcs = [RTCPeerConnection() for _ in range(3)]
    try:
        await alice.request("join", "joined", room=room)
        await bob.request("join", "joined", room=room)
        await alice.request("sfu.join", "sfu.joined", within=15, pair="bob",
                            sdp=await _offer(pcs[0], "alice"))
        await bob.request("sfu.join", "sfu.joined", within=15, pair="alice",
                          sdp=await _offer(pcs[1], "bob"))

        squat = f"{room}:pair:alice:bob"
        g = guest_token(base, room=squat, name="Squatter")
        guest = await WsClient.connect(base, g["identity"], room=squat, token=g["token"])
        clients.append(guest)
        await guest.request("join", "joined", room=squat)
        pcs[2].addTransceiver("video", "recvonly")
        pcs[2].addTransceiver("audio", "recvonly")
        await pcs[2].setLocalDescription(await pcs[2].createOffer())
        joined = await guest.request("sfu.join", "sfu.joined", within=15,
                                     sdp=pcs[2].localDescription.sdp)
        await pcs[2].setRemoteDescription(RTCSessionDescription(joined["sdp"], "answer"))

        async with httpx.AsyncClient(timeout=10,
                                     headers=tokens.control_headers(secret)) as http:
            st = (await http.get(f"{base}/media/v1/status")).json()
        meetings = st["participant_ids"]
        pair = pair_meeting(secret, room, "alice", "bob")
        assert pair.startswith("~") and "alice" not in pair and room not in pair
        assert meetings == {pair: ["alice", "bob"], squat: [g["identity"]]}, meetings
        assert not [m for m in guest.inbox if m["type"] == "sfu.offer"]
        assert joined["sdp"].count("m=") == 2  # its own two m-lines, no stream of the pair
    finally:
        for pc in pcs:
            await pc.close()
        for c in clients:
            await c.close()


@pytest.mark.k8s
def test_call_servers_and_the_operator_get_the_control_key_not_the_token_secret(
        kube: Kube) -> None:
    """The chart (real `helm template`): call-server pods and the operator get only
    PARLEY_CONTROL_KEY, whose value in the Secret is what signaling derives from the token
    secret; only signaling gets the token secret."""
    secret = "chart-token-secret-0123456789abcdef"
    out = kube.helm("template", "t", str(ROOT / "charts" / "parley"), "--kube-version",
                    kube.version, "--set", f"signaling.tokenSecret={secret}").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    data = next(d for d in docs if d["kind"] == "Secret"
                and d["metadata"]["name"] == "t-parley-secrets")["data"]
    assert base64.b64decode(data["control-key"]).decode() == tokens.control_key(secret)
    env_of: dict[str, set[str]] = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                env_of[d["metadata"]["name"]] = {e["name"] for e in c.get("env", [])}
    call_servers = [n for n in env_of if "call-server" in n]
    assert call_servers and "t-parley-operator" in env_of, sorted(env_of)
    for name in [*call_servers, "t-parley-operator"]:
        assert "PARLEY_CONTROL_KEY" in env_of[name], name
        assert "PARLEY_TOKEN_SECRET" not in env_of[name], name
    holders = sorted(n for n, env in env_of.items() if "PARLEY_TOKEN_SECRET" in env)
    assert holders == ["t-parley-signaling"], holders

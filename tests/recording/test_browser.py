"""Two real Chromium participants (fake camera and microphone) publish through the call server
of `parley up`; 15 s are recorded through signaling's API; both browsers get the notification.

The web client does not drive the call server yet, so each page runs the call-server session
itself (publish-only join on the control API, same origin at /media) and a signaling WebSocket
(join the room, collect messages) - the same two protocols the web client will speak.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley import tokens
from parley.recorder import links, webhook
from parley.recorder.creator import load_tracks
from parley.recorder.store import LocalStore
from tests.conftest import free_port, wait_until

from .media import packets, probe

pytestmark = pytest.mark.browser
SECRET = "recording-browser-test-secret-of-32-bytes+"
RECORD_S = 15.0

PUBLISH = """async ([meeting, name, token, control]) => {
  window.msgs = [];
  const ws = new WebSocket(location.origin.replace('http', 'ws') + '/ws?token=' + token);
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    window.msgs.push(m);
    if (m.type === 'welcome') ws.send(JSON.stringify({type: 'join', room: meeting}));
  };
  const stream = await navigator.mediaDevices.getUserMedia(
      {audio: true, video: {width: 640, height: 480}});
  const pc = new RTCPeerConnection({bundlePolicy: 'max-bundle'});
  for (const t of stream.getTracks()) pc.addTransceiver(t, {direction: 'sendonly',
                                                            streams: [stream]});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
  });
  const r = await fetch('/media/v1/meetings/' + meeting + '/participants', {
    method: 'POST', headers: {'content-type': 'application/json',
                              'authorization': 'Bearer ' + control},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: 'offer', participant: name,
                          subscribe: false})});
  const answer = await r.json();
  await pc.setRemoteDescription({type: 'answer', sdp: answer.sdp});
  window.pc = pc;
  return answer.participant;
}"""

SENT = """async () => {
  let frames = 0, audio = 0;
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') frames += s.framesEncoded || 0;
    if (s.type === 'outbound-rtp' && s.kind === 'audio') audio += s.packetsSent || 0;
  });
  return {frames, audio, state: window.pc.connectionState};
}"""


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A webhook receiver (plain HTTP server on a thread): URL, [(signature header, body)]."""
    received: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers.get(webhook.HEADER, ""), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_two_browsers_record_15_seconds(browser: Any, parley_server: Callable[..., str],
                                        hooks: tuple[str, list[tuple[str, bytes]]],
                                        tmp_path: Path) -> None:
    hook_url, received = hooks
    base = parley_server({"PARLEY_TOKEN_SECRET": SECRET, "PARLEY_RECORDING_WEBHOOK_URL": hook_url,
                          "PARLEY_RECORDING_WEBHOOK_SECRET": "hook-secret",
                          "PARLEY_RECORDING_STORE": ""})
    room = f"rec-{uuid.uuid4().hex[:6]}"
    pages = []
    for name in ("alice", "bob"):
        page = browser.new_context(permissions=["camera", "microphone"]).new_page()
        page.goto(f"{base}/healthz")
        token = tokens.mint(SECRET, identity=name, room=room)
        # the call server answers with its own id for this session (not the identity)
        assert page.evaluate(PUBLISH, [room, name, token, tokens.control_key(SECRET)])
        pages.append(page)
    try:
        wait_until(lambda: all(p.evaluate(SENT)["frames"] > 30 for p in pages), 30,
                   what="both browsers sending video to the call server")
        host = {"Authorization": "Bearer " + tokens.mint(SECRET, identity="alice", room=room,
                                                         grants=("record",))}
        with httpx.Client(base_url=base, timeout=30) as http:
            r = http.post(f"/api/v1/rooms/{room}/recording", json={"action": "start"},
                          headers={"Authorization": "Bearer " + tokens.mint(
                              SECRET, identity="bob", room=room)})
            assert r.status_code == 403 and r.json()["detail"]["code"] == "grant_missing"
            r = http.post(f"/api/v1/rooms/{room}/recording", json={"action": "start"},
                          headers=host)
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            time.sleep(RECORD_S)
            assert http.post(f"/api/v1/rooms/{room}/recording", json={"action": "stop"},
                             headers=host).status_code == 200

            def ready() -> dict[str, Any] | None:
                recs = http.get("/api/v1/recordings", params={"room": room},
                                headers=host).json()["recordings"]
                return recs[0] if recs and recs[0]["state"] in ("ready", "failed") else None

            rec = wait_until(ready, 120, interval=0.5, what="recording ready")
            assert rec["state"] == "ready", rec
            notes = [wait_until(lambda p=p: p.evaluate(
                "window.msgs.filter(m => m.type === 'recording.ready')"), 20,
                what="recording.ready in the browser") for p in pages]
            started = [p.evaluate("window.msgs.filter(m => m.type === 'recording.started')")
                       for p in pages]
            composite = tmp_path / "composite.mp4"
            # alice has no grant: she may download because she was in the meeting
            alice = {"Authorization": "Bearer " + tokens.mint(SECRET, identity="alice",
                                                              room=room)}
            r = http.get(notes[0][0]["compositeUrl"], headers=alice)
            assert r.status_code == 200, r.text
            composite.write_bytes(r.content)
            tracks = {t["track"]: t for t in rec["tracks"]}
            video = next(t for t in rec["tracks"] if t["kind"] == "video")
            one = tmp_path / "track.webm"
            r = http.get(video["url"], headers=host)
            assert r.status_code == 200
            one.write_bytes(r.content)
            # a link past its expiry is refused as expired, a tampered one as invalid
            name = video["url"].split("?")[0].rsplit("/", 1)[1]
            expired, _ = links.link(SECRET, rid, name, ttl_s=-5)
            r = http.get(expired, headers=host)
            assert r.status_code == 403 and r.json()["detail"]["code"] == "link_expired", r.text
            r = http.get(video["url"].replace("expires=", "expires=1"), headers=host)
            assert r.status_code == 403 and r.json()["detail"]["code"] == "link_invalid", r.text
    finally:
        for p in pages:
            p.context.close()

    assert all(len(s) == 1 and s[0]["recording"] == rid for s in started)
    assert all(n[0]["id"] == rid for n in notes)  # both browsers were notified
    assert len(tracks) == 4 and {t["participant"] for t in rec["tracks"]} == {"alice", "bob"}
    info = probe(composite)
    assert info["streams"] == ["audio", "video"], info
    assert abs(info["duration"] - RECORD_S) <= 0.1 * RECORD_S, info["duration"]
    assert min(info["variances"]) > 100, info["variances"]  # Chromium's fake camera, not blank
    track = probe(one)
    assert track["codecs"] == {"video": "vp8"} and abs(track["duration"] - RECORD_S) < 2
    # remuxed: Chromium's VP8 frames byte for byte, as the tap stored them in `parley up`'s store
    store = LocalStore(tmp_path / f"parley-{base.rsplit(':', 1)[1]}" / "recordings")
    tapped = next(t for t in load_tracks(store, rid) if t.track == video["track"])
    assert packets(one) == [f[2] for f in tapped.frames]
    wait_until(lambda: received, 10, what="webhook")
    signature, body = received[-1]
    assert webhook.verify("hook-secret", body, signature)
    assert json.loads(body)["id"] == rid

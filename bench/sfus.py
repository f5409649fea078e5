"""Drivers that put synthetic publishers and subscribers on an SFU: Parley's call server (its
control API) and Janus VideoRoom (its REST API), each run as its own process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from .load import Stats, count_arrivals

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BENCH_CONTROL_KEY = "parley-bench-control-key"  # the benchmark's call server refuses others


def spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PARLEY_CONTROL_KEY": BENCH_CONTROL_KEY})


def janus_version() -> str:
    out = subprocess.run(["janus", "-h"], capture_output=True, text=True, check=False)
    lines = (out.stdout + out.stderr).splitlines()
    return next((x.strip() for x in lines if x.startswith("Janus version")), "janus")


async def connected(pc: RTCPeerConnection, what: str) -> None:
    for _ in range(200):
        if pc.connectionState == "connected":
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not connect")


def new_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[],
                                              bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


async def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port}")


class Sfu:
    name = ""
    version = ""
    proc: subprocess.Popen[bytes] | None = None
    pcs: list[RTCPeerConnection]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stop(self) -> None:
        for pc in self.pcs:
            await pc.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class ParleySfu(Sfu):
    name = "parley"

    def __init__(self, one_port: bool = False) -> None:
        self.pcs = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.http = httpx.AsyncClient(
            timeout=30, headers={"Authorization": f"Bearer {BENCH_CONTROL_KEY}"})
        self.url = ""
        self.meeting = "bench"
        self.one_port = one_port  # single-port mode: every participant on one UDP socket
        if one_port:
            self.name = "parley-1port"

    async def start(self) -> None:
        import aiortc

        self.version = f"parley call server (aiortc {aiortc.__version__})"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = spawn([sys.executable, "-m", "parley.cli", "media-node", "--role",
                           "call-server", "--host", "127.0.0.1", "--port", str(port),
                           "--capacity", "1000000",
                           *(["--udp-port", "0"] if self.one_port else [])])
        await wait_port(port, self.proc, "parley media-node")

    def endpoint(self) -> str:
        return self.url

    async def connect(self, endpoint: str) -> None:
        """Use a call server another process started (the probe process)."""
        self.url = endpoint

    async def add_publisher(self, index: int, track: MediaStreamTrack) -> None:
        pc = new_pc()
        self.pcs.append(pc)
        pc.addTransceiver(track, "sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        r = await self.http.post(f"{self.url}/v1/meetings/{self.meeting}/participants",
                                 json={"sdp": pc.localDescription.sdp, "type": "offer",
                                       "participant": f"pub{index}", "subscribe": False})
        r.raise_for_status()
        await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))

    async def add_subscriber(self, index: int, publishers: int, stats: Stats) -> None:
        pc = new_pc()
        self.pcs.append(pc)
        pc.addTransceiver("audio", "recvonly")  # a viewer's offer needs one m-line
        await pc.setLocalDescription(await pc.createOffer())
        r = await self.http.post(f"{self.url}/v1/meetings/{self.meeting}/participants",
                                 json={"sdp": pc.localDescription.sdp, "type": "offer",
                                       "participant": f"sub{index}"})
        r.raise_for_status()
        pid = r.json()["participant"]
        await pc.setRemoteDescription(RTCSessionDescription(r.json()["sdp"], "answer"))
        ready = asyncio.Event()
        self.tasks.append(asyncio.ensure_future(
            self._events(pc, pid, index, publishers, stats, ready)))
        await asyncio.wait_for(ready.wait(), 20)

    async def _events(self, pc: RTCPeerConnection, pid: str, index: int, publishers: int,
                      stats: Stats, ready: asyncio.Event) -> None:
        after = 0
        me = f"{self.url}/v1/meetings/{self.meeting}/participants/{pid}"
        with contextlib.suppress(httpx.HTTPError):
            while True:
                r = await self.http.get(f"{me}/events",
                                        params={"after": after, "wait": 20})
                for ev in r.json()["events"]:
                    after = ev["seq"]
                    if ev["type"] != "offer":
                        continue
                    await pc.setRemoteDescription(RTCSessionDescription(ev["sdp"], "offer"))
                    count_arrivals(pc, index, stats)
                    await pc.setLocalDescription(await pc.createAnswer())
                    await self.http.post(f"{me}/sdp",
                                         json={"sdp": pc.localDescription.sdp,
                                               "type": "answer"})
                    videos = [t for t in pc.getTransceivers() if t.kind == "video"]
                    if len(videos) >= publishers:
                        ready.set()

    async def forward_latency_buckets(self) -> dict[float, float]:
        """Cumulative buckets of the server's own per-packet forwarding-time histogram."""
        text = (await self.http.get(f"{self.url}/metrics")).text
        out: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("parley_media_forward_latency_seconds_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[float(le)] = float(line.rsplit(" ", 1)[1])
        return out

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await super().stop()
        await self.http.aclose()


JANUS_CONFIG = """general: {{
    configs_folder = "{dir}"
    plugins_folder = "/usr/lib/x86_64-linux-gnu/janus/plugins"
    transports_folder = "/usr/lib/x86_64-linux-gnu/janus/transports"
    events_folder = "/usr/lib/x86_64-linux-gnu/janus/events"
    loggers_folder = "/usr/lib/x86_64-linux-gnu/janus/loggers"
    debug_level = 2
    session_timeout = 300
    admin_secret = "bench"
}}
certificates: {{}}
media: {{
    rtp_port_range = "40000-50000"
}}
nat: {{
    ice_enforce_list = "lo"
    ice_ignore_list = "vmnet"
}}
plugins: {{
    disable = "{plugins}"
}}
transports: {{
    disable = "{transports}"
}}
loggers: {{
    disable = "libjanus_jsonlog.so"
}}
events: {{
    broadcast = false
}}
"""
JANUS_HTTP = """general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {port}
    interface = "lo"
    https = false
}}
admin: {{
    admin_http = false
}}
cors: {{}}
"""
OTHER_TRANSPORTS = ["websockets", "mqtt", "nanomsg", "pfunix", "rabbitmq"]
OTHER_PLUGINS = ["audiobridge", "duktape", "echotest", "lua", "nosip", "recordplay", "sip",
                 "streaming", "textroom", "videocall", "voicemail"]


class JanusSfu(Sfu):
    """Debian's Janus with a trimmed config: HTTP transport and VideoRoom only, ICE on lo."""

    name = "janus"

    def __init__(self) -> None:
        self.pcs = []
        self.http = httpx.AsyncClient(timeout=30)
        self.base = ""
        self.session = 0
        self.queues: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self.poller: asyncio.Task[None] | None = None
        self.room = 4242
        self.feeds: list[int] = []
        self.tmp = tempfile.TemporaryDirectory(prefix="parley-bench-janus-")

    async def start(self) -> None:
        self.version = await asyncio.to_thread(janus_version)
        d = Path(self.tmp.name)
        port = free_port()
        plugins = ",".join(f"libjanus_{p}.so" for p in OTHER_PLUGINS)
        transports = ",".join(f"libjanus_{t}.so" for t in OTHER_TRANSPORTS)
        (d / "janus.jcfg").write_text(JANUS_CONFIG.format(dir=d, plugins=plugins,
                                                          transports=transports))
        (d / "janus.transport.http.jcfg").write_text(JANUS_HTTP.format(port=port))
        (d / "janus.plugin.videoroom.jcfg").write_text("general: {}\n")
        self.proc = spawn(["janus", "-C", str(d / "janus.jcfg"), "-F", str(d), "-o",
                           "-L", str(d / "log")])
        await wait_port(port, self.proc, "janus")
        await self.connect(f"http://127.0.0.1:{port}/janus")
        handle = await self._attach()
        await self._message(handle, {"request": "create", "room": self.room,
                                     "publishers": 64, "videocodec": "vp8",
                                     "bitrate": 0, "fir_freq": 0, "audiocodec": "opus"})

    def endpoint(self) -> str:
        return self.base

    async def connect(self, endpoint: str) -> None:
        """Open a session of our own on a Janus another process started."""
        self.base = endpoint
        r = await self._post(self.base, {"janus": "create"})
        self.session = r["data"]["id"]
        self.poller = asyncio.ensure_future(self._poll())

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": os.urandom(6).hex()}
        r = await self.http.post(url, json=body)
        r.raise_for_status()
        data = r.json()
        if data.get("janus") == "error":
            raise RuntimeError(f"janus: {data}")
        return data

    async def _poll(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            while True:
                r = await self.http.get(f"{self.base}/{self.session}",
                                        params={"maxev": 10}, timeout=40)
                events = r.json()
                for ev in events if isinstance(events, list) else [events]:
                    sender = ev.get("sender")
                    if sender in self.queues:
                        await self.queues[sender].put(ev)

    async def _attach(self) -> int:
        r = await self._post(f"{self.base}/{self.session}",
                             {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        handle = r["data"]["id"]
        self.queues[handle] = asyncio.Queue()
        return handle

    async def _message(self, handle: int, body: dict[str, Any],
                       jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        return await self._post(f"{self.base}/{self.session}/{handle}", msg)

    async def _event(self, handle: int, want_jsep: bool) -> dict[str, Any]:
        while True:
            ev = await asyncio.wait_for(self.queues[handle].get(), 20)
            data = ev.get("plugindata", {}).get("data", {})
            if "error" in data:
                raise RuntimeError(f"janus videoroom: {data['error']}")
            if ev.get("janus") == "event" and (not want_jsep or "jsep" in ev):
                return ev

    async def add_publisher(self, index: int, track: MediaStreamTrack) -> None:
        pc = new_pc()
        self.pcs.append(pc)
        pc.addTransceiver(track, "sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        handle = await self._attach()
        await self._message(handle, {"request": "joinandconfigure", "room": self.room,
                                     "ptype": "publisher", "display": f"pub{index}"},
                            {"type": "offer", "sdp": pc.localDescription.sdp})
        ev = await self._event(handle, want_jsep=True)
        self.feeds.append(ev["plugindata"]["data"]["id"])
        await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "answer"))
        await connected(pc, f"janus publisher {index}")

    async def add_subscriber(self, index: int, publishers: int, stats: Stats) -> None:
        pc = new_pc()
        self.pcs.append(pc)
        handle = await self._attach()
        await self._message(handle, {"request": "join", "room": self.room, "ptype": "subscriber",
                                     "streams": [{"feed": f} for f in self.feeds]})
        ev = await self._event(handle, want_jsep=True)
        await pc.setRemoteDescription(RTCSessionDescription(ev["jsep"]["sdp"], "offer"))
        count_arrivals(pc, index, stats)
        await pc.setLocalDescription(await pc.createAnswer())
        await self._message(handle, {"request": "start", "room": self.room},
                            {"type": "answer", "sdp": pc.localDescription.sdp})
        await connected(pc, f"janus subscriber {index}")

    async def stop(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
        await super().stop()
        await self.http.aclose()
        self.tmp.cleanup()


def driver(name: str) -> ParleySfu | JanusSfu:
    return JanusSfu() if name == "janus" else ParleySfu()




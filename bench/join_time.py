"""Join time: from page load to the first decoded remote video frame, and where it goes.

One Chromium (Debian's, driven by Playwright; its start-up is excluded) holds an anchor page in a
room; then, ``--joins`` times, a fresh page opens ``/m/<room>`` and the time from its navigation
start (``performance.timeOrigin``) to the first remote video frame it decodes is read in the page
itself, so polling from the outside adds nothing. The page then leaves before the next join.

``--topology p2p`` (default) is a mesh pair; ``sfu`` puts the room on `parley up`'s embedded
call server (both pages ask for ``topology=sfu``).

``--browser cold`` (default, as every run before) navigates as soon as Playwright has made the
page. A fresh context (a cold cache, no cookies) spawns renderer processes that take about 1 s
of CPU, 600 ms of it on both cores (measured from /proc here), and the navigation starts
150-190 ms after the page is made, so that start-up runs through the first half of every join
measured. ``--browser warm`` navigates once the browser's CPU over 100 ms is back to what the
anchor alone uses (at most 3 s; the wait is in the JSON): a person opening a meeting link in a
browser that is already running (docs/benchmarks.md, "2026-12-04 (3)").

The breakdown comes from an init script this bench adds to every page (the client is not
changed for it): it wraps ``fetch`` (the guest token), ``WebSocket`` (open, every message type
sent and received), ``getUserMedia`` and ``RTCPeerConnection`` (ICE gathering, ICE and DTLS
states, tracks) and records the first time each happens (``performance.now()``); the first
video RTP packet and the first decoded frame come from the video receivers' ``getStats`` polled
every 10 ms (``--observer stats``: the page's own ``stats()``, as before 2026-12-03 16:40). Each
phase of ``PHASES`` runs from one mark to another; phases may overlap once work runs in parallel,
so the critical path is the chain whose marks are later.

    python -m bench.join_time                    # 20 joins, p2p, against `parley up`
    python -m bench.join_time --topology sfu     # the same on the call server
    git archive HEAD signaling/static | tar -x -C /tmp/before
    python -m bench.join_time --client /tmp/before/signaling/static   # that commit's client
    git archive main | tar -x -C /tmp/main
    python -m bench.join_time --checkout /tmp/main   # that commit's server and client
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

from .load import percentile
from .signaling import RESULTS, SECRET, Server, free_port

CHROMIUM = os.environ.get("CHROMIUM", "/usr/lib/chromium/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]

# First occurrence of each step, in ms since navigation start (window.__joinMarks).
MARKS_JS = """(() => {
  const t = window.__joinMarks = {};
  window.__videoReceivers = [];  // what FIRST_FRAME_JS polls (receivers)
  const mark = (name) => { if (!(name in t)) t[name] = performance.now(); };
  const typeOf = (data) => { try { return JSON.parse(data).type; } catch { return "?"; } };
  const fetch0 = window.fetch;
  window.fetch = function (url, ...rest) {
    const token = String(url).includes("/api/v1/guest-token");
    if (token) mark("token.request");
    const p = fetch0.call(this, url, ...rest);
    if (token) p.then(() => mark("token.response"), () => {});
    return p;
  };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args); mark("ws.create");
      this.addEventListener("open", () => mark("ws.open"));
      this.addEventListener("message", (e) => mark("recv." + typeOf(e.data)));
    }
    send(data) { mark("send." + typeOf(data)); return super.send(data); }
  };
  const md = navigator.mediaDevices;
  const gum = md.getUserMedia.bind(md);
  md.getUserMedia = (c) => {
    mark("gum.start");
    return gum(c).then((s) => { mark("gum.end"); return s; });
  };
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends PC {
    constructor(...args) {
      super(...args); mark("pc.create");
      const on = (name, f) => this.addEventListener(name, f);
      on("icecandidate", (e) => mark(e.candidate ? "ice.candidate" : "ice.gathered"));
      on("iceconnectionstatechange", () => mark("ice." + this.iceConnectionState));
      this.addEventListener("connectionstatechange", () => mark("pc." + this.connectionState));
      this.addEventListener("track", (e) => {
        mark("track." + e.track.kind);
        if (e.track.kind === "video") window.__videoReceivers.push(e.receiver);
      });
    }
    async setLocalDescription(...args) {
      mark("sld.start");
      const r = await super.setLocalDescription(...args);
      mark("sld.end");
      return r;
    }
  };
  document.addEventListener("DOMContentLoaded", () => mark("dom.loaded"));
  // boot.js, the page's first script, assigns window.parleyBoot: when the parser reached it
  let boot;
  Object.defineProperty(window, "parleyBoot", { configurable: true, enumerable: true,
    get: () => boot, set: (v) => { mark("boot.run"); boot = v; } });
})()"""

# Resolves with the marks once a remote video frame is decoded (first RTP packet on the way),
# polled every 10 ms. "receivers" (default since 2026-12-03 16:40): getStats of the video
# receivers the page got a track event for, nothing before the first one. "stats": the page's
# own window.parley.stats() (every connection, candidate pairs, outbound layers) from the
# moment the client defines it, as every run before; that poll is work a real page does not do,
# on the two cores the join runs on (docs/benchmarks.md, "2026-12-03 (5)").
FIRST_FRAME_JS = {"stats": """async () => {
  const t = window.__joinMarks;
  while (!(window.parley && window.parley.stats)) await new Promise(r => setTimeout(r, 5));
  t["script.ready"] = t["script.ready"] ?? performance.now();
  for (;;) {
    const s = await window.parley.stats();
    const video = s.inbound.filter(i => i.kind === 'video');
    if (video.some(i => i.packetsReceived > 0)) t["rtp.first"] ??= performance.now();
    if (video.some(i => i.framesDecoded > 0)) {
      t.frame = performance.now();
      const nav = performance.getEntriesByType('navigation')[0];
      t["html.end"] = nav ? nav.responseEnd : null;
      t["html.start"] = nav ? nav.responseStart : null;
      return t;
    }
    await new Promise(r => setTimeout(r, 10));
  }
}""", "receivers": """async () => {
  const t = window.__joinMarks;
  for (;;) {
    let packets = 0, frames = 0;
    for (const r of window.__videoReceivers) {
      (await r.getStats()).forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        packets += s.packetsReceived || 0; frames += s.framesDecoded || 0;
      });
    }
    if (packets > 0) t["rtp.first"] ??= performance.now();
    if (frames > 0) {
      t.frame = performance.now();
      const nav = performance.getEntriesByType('navigation')[0];
      t["html.end"] = nav ? nav.responseEnd : null;
      t["html.start"] = nav ? nav.responseStart : null;
      return t;
    }
    await new Promise(r => setTimeout(r, 10));
  }
}"""}

# (phase, from mark, to mark): what the table in docs/benchmarks.md shows, per topology.
COMMON = [
    ("page: HTML", None, "html.end"),
    ("page: boot.js runs (HTML end -> boot.js)", "html.end", "boot.run"),
    ("page: modules loaded and run (DOMContentLoaded)", "html.end", "dom.loaded"),
    ("token (POST guest-token)", "token.request", "token.response"),
    ("WebSocket: open to welcome", "ws.create", "recv.welcome"),
    ("getUserMedia", "gum.start", "gum.end"),
    ("join round trip (join -> joined)", "send.join", "recv.joined"),
]
PHASES = {
    "p2p": [*COMMON,
        # the member's standing offer came in "joined" (docs/signaling.md, "Standing offers")
        ("standing offer answered (joined -> answer sent)", "recv.joined", "send.answer"),
        ("ICE checks (answer sent -> ICE connected)", "send.answer", "ice.connected"),
        # else the newcomer offers
        ("offer: joined -> offer sent", "recv.joined", "send.offer"),
        ("offer/answer round trip", "send.offer", "recv.answer"),
        ("ICE checks (answer -> ICE connected)", "recv.answer", "ice.connected"),
        ("DTLS (ICE connected -> connected)", "ice.connected", "pc.connected"),
        ("first RTP (connected -> first video packet)", "pc.connected", "rtp.first"),
        ("first keyframe decoded", "rtp.first", "frame"),
    ],
    "sfu": [*COMMON,
        ("offer + ICE gathering (joined -> sfu.join)", "recv.joined", "send.sfu.join"),
        ("sfu.join round trip (-> sfu.joined)", "send.sfu.join", "recv.sfu.joined"),
        ("ICE checks (sfu.joined -> ICE connected)", "recv.sfu.joined", "ice.connected"),
        ("DTLS (ICE connected -> connected)", "ice.connected", "pc.connected"),
        ("subscribe offer (connected -> sfu.offer)", "pc.connected", "recv.sfu.offer"),
        ("answer (sfu.offer -> sfu.answer)", "recv.sfu.offer", "send.sfu.answer"),
        ("first RTP (answer -> first video packet)", "send.sfu.answer", "rtp.first"),
        # the join's answer carried the others' tracks (no sfu.offer): from "connected"
        ("first RTP (connected -> first video packet)", "pc.connected", "rtp.first"),
        ("first keyframe decoded", "rtp.first", "frame"),
    ],
}


def phase_table(topology: str, runs: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Median start (ms after navigation start) and duration of each phase over the joins; a
    phase whose marks are missing in a run (e.g. no sfu.offer when the answer carried
    everything) is left out of that run."""
    rows = []
    for name, start, end in PHASES[topology]:
        starts, durations = [], []
        for marks in runs:
            a = 0.0 if start is None else marks.get(start)
            b = marks.get(end)
            if a is None or b is None:
                continue
            starts.append(a)
            durations.append(b - a)
        rows.append({"phase": name, "from": start or "navigation start", "to": end,
                     "runs": len(durations),
                     "start_ms_p50": round(statistics.median(starts), 1) if starts else None,
                     "ms_p50": round(statistics.median(durations), 1) if durations else None})
    return rows


class ClientServer(Server):
    """`parley up` serving the web client from another directory (an earlier commit's), so two
    clients are compared against the same server in the same conditions; or, with
    ``checkout``, another commit's whole tree (``git archive``: its server, call server and
    client), so a server-side change is compared in the same run too."""

    def __init__(self, static: str | None = None, checkout: str | None = None) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="parley-bench-")
        env = {**os.environ, "PARLEY_TOKEN_SECRET": SECRET}
        cwd = None
        if checkout:  # the `parley` package laid out as pyproject.toml's package-dir says
            root = Path(checkout).resolve()
            dirs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
                "package-dir"]
            pkg = Path(self.dir.name) / "code" / "parley"
            pkg.mkdir(parents=True)
            for f in (root / dirs["parley"]).iterdir():
                (pkg / f.name).symlink_to(f)
            for name, folder in dirs.items():
                if name != "parley":
                    (pkg / name.split(".", 1)[1]).symlink_to(root / folder)
            env["PYTHONPATH"] = str(pkg.parent)  # ahead of this checkout's editable install
            cwd = pkg.parent  # not this checkout (a `python -c` imports from its directory)
        code = ("import sys, pathlib, parley.signaling.app as a;"
                " a.STATIC = pathlib.Path(sys.argv[1]) if sys.argv[1] else a.STATIC;"
                " from parley.cli import main; sys.exit(main(sys.argv[2:]))")
        self.log = open(Path(self.dir.name) / "server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, static or "", "up", "--port", str(self.port),
             "--data-dir", self.dir.name], env=env, cwd=cwd, stdout=self.log,
            stderr=subprocess.STDOUT)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    server = (ClientServer(args.client, args.checkout) if args.client or args.checkout
              else Server())
    server.wait_ready()
    base = f"http://127.0.0.1:{server.port}"
    room = f"bench-{uuid.uuid4().hex[:6]}"
    query = f"topology={args.topology}"
    samples: list[float] = []
    runs: list[dict[str, float]] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            browser_cpu = BrowserCpu()
            anchor_ctx = browser.new_context(permissions=["camera", "microphone"])
            anchor = anchor_ctx.new_page()
            anchor.goto(f"{base}/m/{room}?name=anchor&{query}")
            anchor.wait_for_function("window.parley && window.parley.state.room", timeout=15000)
            if args.browser == "warm":
                browser_cpu.learn_idle()
            settles: list[float] = []
            server_cpu = 0.0  # the server's CPU seconds over the measured joins and leaves
            for i in range(args.joins + 1):
                ctx = browser.new_context(permissions=["camera", "microphone"])
                ctx.add_init_script(MARKS_JS)
                page = ctx.new_page()
                if args.browser == "warm":
                    settles.append(browser_cpu.settle())
                cpu_before = cpu_seconds(server.proc.pid)
                page.goto(f"{base}/m/{room}?name=joiner{i}&{query}")
                marks = page.evaluate(FIRST_FRAME_JS[args.observer])
                if i > 0:  # the first join warms up the browser's codecs and caches
                    samples.append(marks["frame"])
                    runs.append({k: round(v, 1) for k, v in marks.items() if v is not None})
                    print(f"  join {i}: {marks['frame']:.0f} ms", flush=True)
                ctx.close()
                time.sleep(0.3)
                if i > 0:
                    server_cpu += cpu_seconds(server.proc.pid) - cpu_before
            browser.close()
    finally:
        server.stop()
    return {
        "benchmark": "join-time",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg": os.getloadavg()},
        "topology": args.topology,
        "observer": args.observer,
        "client": args.client or args.checkout or "this tree",
        "server": args.checkout or "this tree",
        "browser": args.browser,
        "settle_ms_p50": round(percentile(settles, 0.5)) if settles else None,
        "joins": len(samples),
        "join_to_first_frame_ms": {
            "p50": round(percentile(samples, 0.5), 1),
            "p95": round(percentile(samples, 0.95), 1),
            "min": round(min(samples), 1),
            "max": round(max(samples), 1),
        },
        # what one join (and its leave) costs the server, anchor's forwarding included: a
        # figure the machine's noise moves far less than the wall-clock times above
        "server_cpu_ms_per_join": round(server_cpu * 1000 / max(len(samples), 1), 1),
        "phases": phase_table(args.topology, runs),
        "samples_ms": [round(x, 1) for x in samples],
        "marks": runs,
    }


class BrowserCpu:
    """The CPU the browser's processes use (every process whose command line starts with
    CHROMIUM: browser, GPU, utilities, renderers), read from /proc."""

    WINDOW_S = 0.1

    def __init__(self) -> None:
        self.idle_ms = 0.0  # per window, the anchor alone

    @staticmethod
    def cpu_ms() -> float:
        total = 0.0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not (entry / "cmdline").read_bytes().startswith(CHROMIUM.encode()):
                    continue
                total += cpu_seconds(int(entry.name)) * 1000
            except OSError:  # the process ended
                continue
        return total

    def window(self) -> float:
        before = self.cpu_ms()
        time.sleep(self.WINDOW_S)
        return self.cpu_ms() - before

    def learn_idle(self) -> None:
        """What the browser uses with the anchor alone in its call (median of ten windows)."""
        self.idle_ms = statistics.median(self.window() for _ in range(10))

    def settle(self, limit_s: float = 3.0) -> float:
        """Wait until two windows in a row use no more than the idle figure plus 20 ms (one
        core at 20 %); ms waited."""
        start = time.monotonic()
        quiet = 0
        while quiet < 2 and time.monotonic() - start < limit_s:
            quiet = quiet + 1 if self.window() <= self.idle_ms + 20 else 0
        return (time.monotonic() - start) * 1000


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/<pid>/stat, Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_table(result: dict[str, Any]) -> None:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    print(f"{'phase':52} {'start':>8} {'ms':>8}")
    for row in result["phases"]:
        print(f"{row['phase']:52} {fmt(row['start_ms_p50']):>8} {fmt(row['ms_p50']):>8}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.join_time", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--joins", type=int, default=20)
    ap.add_argument("--topology", choices=sorted(PHASES), default="p2p")
    ap.add_argument("--client", default=None,
                    help="serve the web client from this directory (default: this tree's)")
    ap.add_argument("--checkout", default=None,
                    help="run server and client from this tree (e.g. `git archive main`)")
    ap.add_argument("--observer", choices=sorted(FIRST_FRAME_JS), default="receivers",
                    help="how the first frame is watched: the video receivers' getStats "
                         "(default) or the page's own stats() as before 2026-12-03 16:40")
    ap.add_argument("--browser", choices=["cold", "warm"], default="cold",
                    help="navigate at once (default), or once the new context's processes "
                         "have started")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    result = run(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "join_time.json" if args.topology == "p2p" else f"join_time_{args.topology}.json"
    path = Path(args.out) if args.out else RESULTS / name
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(json.dumps(result["join_to_first_frame_ms"]))
    print(f"server CPU per join: {result['server_cpu_ms_per_join']} ms; browser "
          f"{result['browser']}, settle p50 {result['settle_ms_p50']} ms")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

// The viewer page, {base}/watch/{broadcast}: WHEP (draft-ietf-wish-whep) by default, LL-HLS
// through the vendored hls.js when WebRTC is missing or fails or the edge is full (503), or when
// the URL says ?transport=hls. Query: b (broadcast, when not in the path), base (where /live is
// served: the region's edge URL, or several edges of the region separated by commas), rung (start
// on a rendition), transport=hls|webrtc. docs/broadcast.md, "Pages" and "Which edge".

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const path = location.pathname.split("/").filter(Boolean);
const broadcast = params.get("b")
  || (path[0] === "watch" && path[1] ? decodeURIComponent(path[1]) : "");
// the region's edges (one URL behind a load balancer, or a list): a lost edge's viewer moves on
const edges = (params.get("base") || location.origin).split(",").map((b) => b.trim())
  .filter(Boolean).map((b) => b.replace(/\/+$/, ""));
let edgeAt = Math.floor(Math.random() * edges.length);  // spread viewers over a listed region
let live = liveOf(edges[edgeAt]);
const forced = params.get("transport");  // "hls": WebRTC turned off; "webrtc": no fallback

function liveOf(edge) { return `${edge}/live/${encodeURIComponent(broadcast)}`; }

function nextEdge() {  // the next edge of the region (the same URL when there is one)
  edgeAt = (edgeAt + 1) % edges.length;
  live = liveOf(edges[edgeAt]);
  log(`edge ${edges[edgeAt]}`);
}

const FIRST_FRAME_MS = 10000;  // a WHEP session that decodes nothing by then has failed
const STALL_MS = 1000;
const ICE_GATHER_MS = 2000;
const SILENT_MS = 1500;  // no frame decoded this long: ask the edge whether the session lives
const UP_HOLD_MS = 10000;  // clean seconds before auto probes the next rung up (doubles on failure)

// what the page does, for people and for tests (window.watch)
export const watch = {
  broadcast, edge: null, transport: null, rung: "auto", playing: null, fallback: null,
  latencyMs: null, latencySource: null, stats: {}, stalls: 0, longestGapMs: 0, frames: 0,
  switches: [], errors: [], log: [], moves: [],
};
window.watch = watch;

const video = $("video");
let rungs = [];  // [{name, height, bitrateKbps}], top first
let whep = null;  // the WHEP session on screen: {pc, stream, rung, location}
let hls = null;
let leaving = false;
let switching = false;
let recovering = false;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function show(state, text) {
  $("state").dataset.state = state;
  $("state").textContent = text;
}

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  show("error", "error");
}

function note(message) {
  watch.errors.push(message);
  if (watch.errors.length > 20) watch.errors.shift();
}

// what happened to playback, with the page's clock (ms): switches, waits, errors
function log(what) {
  watch.log.push(`${Math.round(performance.now())} ${what}`);
  if (watch.log.length > 100) watch.log.shift();
}
for (const e of ["waiting", "playing", "stalled"]) {
  document.getElementById("video").addEventListener(e, () => log(e));
}

// ---- playback meter: every presented frame (requestVideoFrameCallback), longest gap ----

let lastFrameAt = 0;

function frameShown(now) {
  if (lastFrameAt) {
    const gap = now - lastFrameAt;
    watch.longestGapMs = Math.max(watch.longestGapMs, gap);
    if (gap > STALL_MS) { watch.stalls += 1; log(`stall ${Math.round(gap)} ms`); }
  }
  lastFrameAt = now;
  watch.frames += 1;
  video.requestVideoFrameCallback(frameShown);
}

if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
  video.requestVideoFrameCallback(frameShown);
} else {  // coarser: timeupdate fires every 250 ms or so while time advances
  let lastTime = -1;
  video.addEventListener("timeupdate", () => {
    if (video.currentTime !== lastTime) { lastTime = video.currentTime; frameShown(performance.now()); }
  });
}

watch.resetMeter = () => { watch.longestGapMs = 0; watch.stalls = 0; watch.frames = 0; };
watch.meter = () => ({
  frames: watch.frames, stalls: watch.stalls, currentTime: video.currentTime,
  longestGapMs: Math.round(Math.max(watch.longestGapMs,
    lastFrameAt ? performance.now() - lastFrameAt : 0)),
  width: video.videoWidth, height: video.videoHeight,
});

// ---- the broadcast's rungs ----

async function readStatus() {
  for (let i = 0; ; i += 1) {  // an edge that does not answer: the next one of the region
    try {
      const res = await fetch(live, { cache: "no-store" });
      if (res.status === 404) return null;
      if (!res.ok) throw new Error(`status ${res.status}`);
      return await res.json();
    } catch (err) {
      if (i + 1 >= edges.length) throw err;
      nextEdge();
    }
  }
}

const heightOf = (name) => parseInt(name, 10) || 0;

function rungsFrom(status) {
  if (Array.isArray(status.rungs) && status.rungs.length) {
    return [...status.rungs].sort((a, b) => b.height - a.height);
  }
  let names = [];
  if (Array.isArray(status.ladder)) names = status.ladder;
  else if (Array.isArray(status.renditions)) {
    names = status.renditions.map((r) => (typeof r === "string" ? r : r.rendition || r.name));
  } else if (status.rendition) names = [status.rendition];
  return names.filter(Boolean).map((name) => ({ name, height: heightOf(name) }))
    .sort((a, b) => b.height - a.height);
}

function fillPicker(names) {
  const picker = $("rung");
  picker.replaceChildren(new Option("auto", "auto"), ...names.map((n) => new Option(n, n)));
  picker.value = names.includes(watch.rung) ? watch.rung : "auto";
  picker.disabled = names.length < 2;
}

// ---- WHEP ----

class WhepError extends Error {
  constructor(status, code, message) {
    super(`${status || "network"} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") { resolve(); return; }
    const timer = setTimeout(resolve, ICE_GATHER_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function inboundVideo(pc) {
  const report = await pc.getStats();
  let video = null;
  let pair = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") video = s;
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  return { video, pair };
}

async function firstFrame(pc) {
  const until = performance.now() + FIRST_FRAME_MS;
  while (performance.now() < until) {
    if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      throw new WhepError(0, "ice_failed", "the WebRTC connection failed");
    }
    const { video: v } = await inboundVideo(pc);
    if (v && v.framesDecoded > 0) return;
    await sleep(200);
  }
  throw new WhepError(0, "no_frames", `nothing decoded in ${FIRST_FRAME_MS / 1000} s`);
}

async function openWhep(rung) {
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  const stream = new MediaStream();
  pc.addEventListener("track", (e) => stream.addTrack(e.track));
  const vt = pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
  const h264 = codecs.filter((c) => /video\/(h264|rtx)/i.test(c.mimeType));
  if (h264.some((c) => /h264/i.test(c.mimeType))) vt.setCodecPreferences(h264);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const url = rung ? `${live}/${encodeURIComponent(rung)}/whep` : `${live}/whep`;
  let res;
  try {
    res = await fetch(url, { method: "POST", body: pc.localDescription.sdp,
                             headers: { "Content-Type": "application/sdp" } });
  } catch (err) {
    pc.close();
    throw new WhepError(0, "network", err.message);
  }
  if (res.status !== 201) {
    pc.close();
    let d = {};
    try { d = (await res.json()).detail || {}; } catch { /* not JSON */ }
    throw new WhepError(res.status, d.code || res.statusText, d.message || "refused");
  }
  const session = { pc, stream, rung, opened: performance.now(),
                    location: new URL(res.headers.get("Location"), url).href };
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
    await firstFrame(pc);
  } catch (err) {
    closeWhep(session);
    throw err;
  }
  return session;
}

function closeWhep(session, keepalive = false) {
  if (!session) return;
  fetch(session.location, { method: "DELETE", keepalive }).catch(() => {});
  session.pc.close();
}

// open `rung`, show it once it decodes, then end the old session (no gap but the swap)
async function playWhep(rung) {
  const session = await openWhep(rung);
  if (leaving) { closeWhep(session); return; }
  const old = whep;
  whep = session;
  video.srcObject = session.stream;
  video.play().catch(() => {});
  closeWhep(old);
  watch.transport = "webrtc";
  watch.edge = edges[edgeAt];
  watch.playing = rung;
  watch.stats = {};
  show("live", "LIVE");
  session.pc.addEventListener("connectionstatechange", () => {
    const state = session.pc.connectionState;
    if (whep === session && (state === "failed" || state === "closed")) {
      recoverWhep(`connection ${state}`);  // an edge scaled away closes its sessions
    }
  });
  render();
}

// a lost session: the next edge of the region at once, then the one after; a pause of 1 s after
// each whole round; after 3 rounds LL-HLS
async function recoverWhep(why) {
  if (recovering || leaving) return;
  recovering = true;
  const rung = whep ? whep.rung : pickRung();
  const lostAt = performance.now();
  watch.moves.push({ from: edges[edgeAt], why, at: Date.now() });
  log(`lost: ${why}`);
  show("waiting", "reconnecting");
  try {
    for (let attempt = 0; attempt < 3 * edges.length && !leaving; attempt += 1) {
      if (attempt > 0 && attempt % edges.length === 0) await sleep(1000);
      nextEdge();
      try {
        await playWhep(rung);
        watch.moves[watch.moves.length - 1].to = edges[edgeAt];
        watch.moves[watch.moves.length - 1].ms = Math.round(performance.now() - lostAt);
        return;
      } catch (err) {
        note(String(err.message));
      }
    }
    if (!leaving && forced !== "webrtc") startHls("the WebRTC session was lost");
  } finally {
    recovering = false;
  }
}

// no frame decoded for SILENT_MS: if the edge still has the session (GET on its Location: 200),
// the gap is upstream (a transcoder or relay restarting) and the decoder resumes on the next
// keyframe; otherwise (refused, 404: the edge died or restarted) move to another edge
let lastDecoded = { session: null, frames: -1, at: 0 };

async function edgeHasSession(session) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 1000);
  try {
    const res = await fetch(session.location, { cache: "no-store", signal: ctl.signal });
    return res.ok;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

async function watchEdge() {
  const session = whep;
  if (!session || switching || recovering || leaving) return;
  const { video: v } = await inboundVideo(session.pc);
  const frames = v ? v.framesDecoded : 0;
  const now = performance.now();
  if (lastDecoded.session !== session || frames !== lastDecoded.frames) {
    lastDecoded = { session, frames, at: now };
    return;
  }
  if (now - lastDecoded.at < SILENT_MS) return;
  lastDecoded.at = now - SILENT_MS / 2;  // probe at most twice a second
  if (!(await edgeHasSession(session)) && whep === session) {
    recoverWhep("silent and the edge does not know the session");
  }
}

async function switchTo(rung, why) {
  if (switching || !whep || whep.rung === rung) return;
  switching = true;
  try {
    await playWhep(rung);
    watch.switches.push({ to: rung, why, at: Date.now() });
  } catch (err) {
    note(`switch to ${rung}: ${err.message}`);
  } finally {
    switching = false;
  }
}

function pickRung() {
  if (!rungs.length) return null;  // an ingest or a single-rendition edge: the programme
  return watch.rung !== "auto" ? watch.rung : rungs[0].name;
}

// auto on WHEP: down one rung after 2 s in a row with > 5% loss; up one rung after a clean hold
// (loss < 1%, no freeze); a step up that fails within 15 s doubles the hold (to 2 min). A session's
// first 3 s are not judged (its start is a freeze and may lose packets before the keyframe).
let prev = null;
let badRun = 0;
let cleanSince = performance.now();
let holdMs = UP_HOLD_MS;
let lastUpAt = 0;

async function sampleWhep() {
  const session = whep;
  if (!session || switching) return;
  const { video: v, pair } = await inboundVideo(session.pc);
  if (!v) return;
  const p = prev && prev.session === session ? prev.v : null;
  prev = { session, v };
  if (!p) return;
  const dt = (v.timestamp - p.timestamp) / 1000;
  if (dt <= 0) return;
  const lost = Math.max(0, v.packetsLost - p.packetsLost);
  const got = v.packetsReceived - p.packetsReceived;
  const loss = got + lost > 0 ? lost / (got + lost) : 0;
  const emitted = v.jitterBufferEmittedCount - p.jitterBufferEmittedCount;
  const jitterMs = emitted > 0 ? (1000 * (v.jitterBufferDelay - p.jitterBufferDelay)) / emitted
    : null;
  const rttMs = pair && pair.currentRoundTripTime != null ? 1000 * pair.currentRoundTripTime
    : null;
  const freezes = (v.freezeCount || 0) - (p.freezeCount || 0);
  watch.stats = {
    kbps: Math.round((8 * (v.bytesReceived - p.bytesReceived)) / (1000 * dt)),
    loss: Math.round(loss * 1000) / 10, fps: Math.round(((v.framesDecoded - p.framesDecoded) / dt) * 10) / 10,
    framesDecoded: v.framesDecoded, width: v.frameWidth, height: v.frameHeight,
    jitterBufferMs: jitterMs == null ? null : Math.round(jitterMs),
    rttMs: rttMs == null ? null : Math.round(rttMs), freezes: v.freezeCount || 0,
  };
  // honest part of the latency only: playout buffer + one-way network (not capture/encode)
  watch.latencyMs = jitterMs == null ? null : Math.round(jitterMs + (rttMs || 0) / 2);
  watch.latencySource = "jitter buffer + rtt/2";
  if (watch.rung === "auto" && performance.now() - session.opened > 3000) adapt(loss, freezes);
  render();
}

function adapt(loss, freezes) {
  const now = performance.now();
  const i = rungs.findIndex((r) => r.name === whep.rung);
  if (i < 0) return;
  const bad = loss > 0.05;
  badRun = bad ? badRun + 1 : 0;
  if (loss >= 0.01 || freezes > 0) cleanSince = now;
  if (badRun >= 2 && i < rungs.length - 1) {
    if (now - lastUpAt < 15000) holdMs = Math.min(holdMs * 2, 120000);
    badRun = 0;
    switchTo(rungs[i + 1].name, `auto down: ${Math.round(loss * 100)}% loss`);
  } else if (i > 0 && now - cleanSince > holdMs) {
    lastUpAt = now;
    cleanSince = now;
    switchTo(rungs[i - 1].name, `auto up: clean for ${holdMs / 1000} s`);
  }
}

// ---- LL-HLS (hls.js, vendored) ----

function levelName(level) {
  const uri = level.uri || level.url || "";
  return level.name || uri.split("/").pop().split("?")[0].replace(/\.m3u8$/, "")
    || `${level.height}p`;
}

function startHls(reason) {
  watch.fallback = reason;
  closeWhep(whep);
  whep = null;
  video.srcObject = null;
  watch.transport = "hls";
  watch.latencySource = "hls.js";
  const src = `${live}/index.m3u8`;
  if (!window.Hls || !window.Hls.isSupported()) {
    if (video.canPlayType("application/vnd.apple.mpegurl")) {  // Safari: native HLS
      video.src = src;
      video.play().catch(() => {});
      show("live", "LIVE");
      return;
    }
    fail("this browser has neither WebRTC nor Media Source Extensions");
    return;
  }
  const Hls = window.Hls;
  // a hole in the buffered media (seen under CPU load: hls.js waited 4 s before seeking over it)
  // is skipped after 0.5 s instead of 2+ s; holes up to 0.5 s count as buffered.
  // hls.js starts behind its target (PART-HOLD-BACK) and by default never plays faster to catch
  // up: up to 1.5x closes that gap (bench/broadcast_hls.py: p50 4.3-4.5 s -> 1.5-2.1 s)
  hls = new Hls({ lowLatencyMode: true, backBufferLength: 30, maxBufferHole: 0.5,
                  highBufferWatchdogPeriod: 0.5, maxLiveSyncPlaybackRate: 1.5 });
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    const names = hls.levels.map(levelName);
    fillPicker(names);
    const i = names.indexOf(watch.rung);
    if (i >= 0) hls.nextLevel = i;
    video.play().catch(() => {});
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => {
    watch.playing = levelName(hls.levels[d.level]);
    log(`level ${watch.playing}`);
    render();
  });
  hls.on(Hls.Events.FRAG_BUFFERED, () => show("live", "LIVE"));
  hls.on(Hls.Events.ERROR, (_, d) => {
    note(`${d.type}/${d.details}${d.fatal ? " (fatal)" : ""}`);
    log(`hls error ${d.details}${d.fatal ? " fatal" : ""}${d.reason ? ` (${d.reason})` : ""}`);
    if (!d.fatal) return;
    if (d.type === Hls.ErrorTypes.NETWORK_ERROR) {
      show("waiting", "reconnecting");
      if (edges.length > 1) {  // another edge of the region
        nextEdge();
        setTimeout(() => hls && hls.loadSource(`${live}/index.m3u8`), 500);
      } else {
        setTimeout(() => hls && hls.startLoad(), 1000);
      }
    } else if (d.type === Hls.ErrorTypes.MEDIA_ERROR) {
      hls.recoverMediaError();
    } else {
      hls.destroy();
      hls = null;
      setTimeout(() => !leaving && startHls(reason), 2000);
    }
  });
  hls.loadSource(src);
  hls.attachMedia(video);
  render();
}

function sampleHls() {
  if (!hls) return;
  watch.latencyMs = Number.isFinite(hls.latency) ? Math.round(hls.latency * 1000) : null;
  const level = hls.levels[hls.currentLevel];
  watch.stats = {
    kbps: Math.round((hls.bandwidthEstimate || 0) / 1000),
    width: level ? level.width : null, height: level ? level.height : null,
    auto: hls.autoLevelEnabled, buffered: Math.round(
      (video.buffered.length ? video.buffered.end(video.buffered.length - 1) - video.currentTime
        : 0) * 100) / 100,
  };
  render();
}

// ---- the page ----

function render() {
  const t = watch.transport === "hls" ? "LL-HLS" : watch.transport === "webrtc" ? "WebRTC" : "";
  $("transport").textContent = t && `${t} ${watch.playing || ""}${watch.rung === "auto" ? " (auto)" : ""}`
    + (watch.fallback ? ` · fallback: ${watch.fallback}` : "");
  $("latency").textContent = watch.latencyMs == null ? ""
    : `latency ≈ ${(watch.latencyMs / 1000).toFixed(2)} s (${watch.latencySource})`;
  $("health").textContent = `stalls > 1 s: ${watch.stalls}`;
  const s = watch.stats;
  $("stats").textContent = Object.entries(s).filter(([, v]) => v != null)
    .map(([k, v]) => `${k} ${v}`).join(" · ");
}

$("rung").addEventListener("change", () => {
  const value = $("rung").value;
  watch.rung = value;
  if (hls) {
    hls.nextLevel = value === "auto" ? -1 : hls.levels.map(levelName).indexOf(value);
  } else if (whep && value !== "auto") {
    switchTo(value, "picked");
  }
  render();
});

$("unmute").addEventListener("click", () => {
  video.muted = !video.muted;
  $("unmute").textContent = video.muted ? "Unmute" : "Mute";
  $("unmute").setAttribute("aria-label", video.muted ? "Unmute" : "Mute");
});

function leave(keepalive = false) {
  leaving = true;
  closeWhep(whep, keepalive);
  whep = null;
  if (hls) { hls.destroy(); hls = null; }
  video.srcObject = null;
  watch.transport = null;
}

$("leave").addEventListener("click", () => {
  if (leaving) { location.reload(); return; }
  leave();
  show("idle", "left");
  $("leave").textContent = "Watch again";
  $("leave").setAttribute("aria-label", "Watch again");
});
window.addEventListener("pagehide", () => leave(true));

async function start() {
  if (!broadcast) {  // /watch: ask for a name, then go to /watch/NAME
    $("pick").hidden = false;
    show("idle", "pick a broadcast");
    $("pick").addEventListener("submit", () => {
      location.href = `/watch/${encodeURIComponent($("pick-name").value.trim())}${location.search}`;
    });
    return;
  }
  $("name").textContent = broadcast;
  document.title = `Parley · ${broadcast}`;
  show("waiting", "connecting");
  let status = null;
  while (!leaving) {
    try { status = await readStatus(); } catch (err) { note(`status: ${err.message}`); }
    if (status) break;
    show("waiting", "not live yet");
    await sleep(2000);
  }
  if (!status) return;
  rungs = rungsFrom(status);
  const wanted = params.get("rung");
  if (wanted && rungs.some((r) => r.name === wanted)) watch.rung = wanted;
  fillPicker(rungs.map((r) => r.name));
  setInterval(() => (hls ? sampleHls() : sampleWhep().catch(() => {})), 1000);
  setInterval(() => watchEdge().catch(() => {}), 250);
  if (forced === "hls") { startHls("transport=hls in the URL (WebRTC turned off)"); return; }
  if (typeof RTCPeerConnection === "undefined") { startHls("this browser has no WebRTC"); return; }
  try {
    await playWhep(pickRung());
  } catch (err) {
    note(String(err.message));
    if (forced === "webrtc") { fail(`WebRTC failed: ${err.message}`); return; }
    startHls(err.status === 503 ? "the edge is full (503)" : `WebRTC failed (${err.message})`);
  }
}

start();

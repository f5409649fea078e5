// Parley web client: plain modern JavaScript, no build step.
// Automation contract (docs/signaling.md): /m/<room>?name=..&audio=0&video=0&screen=1
// &topology=auto|p2p|sfu&relay=1[#token=<a deployment-minted token>], and window.parley.stats().
"use strict";

const params = new URLSearchParams(location.search);
const opts = {
  name: params.get("name") || "Guest",
  // A token the deployment minted for this user (its login, or `parley token`), handed over in
  // the fragment (#token=...) so it never reaches a server log; without one the page is a guest.
  token: new URLSearchParams(location.hash.slice(1)).get("token") || undefined,
  audio: params.get("audio") !== "0",
  video: params.get("video") !== "0",
  screen: params.get("screen") === "1",
  topology: params.get("topology") || "auto",
  relay: params.get("relay") === "1",
  autoAnswer: params.get("autoAnswer") === "1",
  bandwidthKbps: params.get("bw") ? Number(params.get("bw")) : undefined,
  width: Number(params.get("w")) || 640, height: Number(params.get("h")) || 480,
  fps: Number(params.get("fps")) || undefined,
  // Test hook modelling a firewall between this page and these identities: no direct (host,
  // srflx, prflx) candidates are exchanged with them, only relay ones (docs/signaling.md).
  blockDirect: new Set((params.get("blockDirect") || "").split(",").filter(Boolean)),
};
// P2P fallback watchdog (docs/signaling.md, "P2P fallback"), per peer pair, milliseconds.
const WATCH = {
  connectMs: Number(params.get("connectTimeout")) || 4000,  // not connected this long: escalate
  disconnectedMs: 3000,  // "disconnected" this long: escalate
  drops: 3, dropWindowMs: 60000,  // this many connected->disconnected drops in the window
  // Nothing at all (RTP, RTCP, STUN) received on the pair this long while "connected": the path
  // is gone. Chromium's own "disconnected" comes several seconds later.
  stallMs: 2500, statsMs: 1000,
};
const pathRoom = location.pathname.startsWith("/m/")
  ? decodeURIComponent(location.pathname.slice(3)) : null;

const $ = (sel) => document.querySelector(sel);
const state = {
  status: "starting", identity: null, room: null, topology: null, error: null,
  config: null, iceServers: [], participants: {}, calls: {}, incoming: null, activeCall: null,
  messages: [], media: { audio: true, video: true },  // what I send (camera/mic toggles)
};
const peers = new Map();           // identity -> Peer
let sfu = null;                    // SfuSession (parley-sfu.js) while the room is on a call server
let sfuGeneration = 0;
let ws = null;
let localStream = null;            // camera + microphone
let screenStream = null;           // screen share (or its canvas fallback)
const localSources = {};           // my stream id -> "camera" | "screen"

function log(...args) { console.log("[parley]", ...args); }
function setStatus(s) { state.status = s; const el = $("#status"); if (el) el.textContent = s; }
function showError(code, message) {
  state.error = { code, message };
  const el = $("#error"); if (el) { el.textContent = `${code}: ${message}`; el.hidden = false; }
}
function send(msg) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); }

// ---- local media ----------------------------------------------------------------------------
let mediaReady = null;
function ensureLocalMedia() {
  mediaReady = mediaReady || openLocalMedia();
  return mediaReady;
}
async function openLocalMedia() {
  state.media = { audio: !!opts.audio, video: !!opts.video };
  if (!opts.audio && !opts.video) { if (opts.screen) await startScreen(); return; }
  localStream = await navigator.mediaDevices.getUserMedia({
    audio: opts.audio, video: opts.video ? {
      width: opts.width, height: opts.height, ...(opts.fps ? { frameRate: opts.fps } : {}) } : false });
  localSources[localStream.id] = "camera";
  addTile(state.identity, "camera", opts.name + " (you)", localStream, true);
  markMedia(state.identity, state.media);
  if (opts.screen) await startScreen();
}

function canvasScreen() {
  // Headless Chromium has no desktop to capture: a drawn canvas stands in for the screen.
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 360;
  const ctx = canvas.getContext("2d");
  let n = 0;
  setInterval(() => {
    ctx.fillStyle = `hsl(${(n * 3) % 360} 60% 40%)`; ctx.fillRect(0, 0, 640, 360);
    ctx.fillStyle = "white"; ctx.font = "32px sans-serif";
    ctx.fillText(`screen of ${opts.name} #${n++}`, 20, 180);
  }, 66);
  return canvas.captureStream(15);
}

async function startScreen() {
  if (screenStream) return;
  try {
    screenStream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (err) {
    log("getDisplayMedia failed, using canvas fallback:", err.name);
    screenStream = canvasScreen();
  }
  localSources[screenStream.id] = "screen";
  addTile(state.identity, "screen", opts.name + " (your screen)", screenStream, true);
  for (const peer of peers.values()) peer.pc.addTrack(screenStream.getVideoTracks()[0], screenStream);
  if (sfu) {  // the call server offers an m-line for it; the answer attaches the track
    sfu.publish(screenStream.getVideoTracks()[0], screenStream);
    send({ type: "sfu.publish", kinds: ["video"] });
  }
  for (const peer of peers.values()) {
    if (!peer.pairSfu) continue;
    peer.pairSfu.publish(screenStream.getVideoTracks()[0], screenStream);
    send({ type: "sfu.publish", kinds: ["video"], pair: peer.id });
  }
}

function toggle(kind) {
  if (!localStream) return false;
  const tracks = kind === "audio" ? localStream.getAudioTracks() : localStream.getVideoTracks();
  for (const t of tracks) t.enabled = !t.enabled;
  state.media[kind] = tracks.some((t) => t.enabled);
  send({ type: "media", [kind]: state.media[kind] });  // everyone's tile shows it
  markMedia(state.identity, state.media);
  return state.media[kind];
}

async function capabilities() {
  const codecs = new Set();
  for (const kind of ["video", "audio"]) {
    for (const c of (RTCRtpReceiver.getCapabilities(kind)?.codecs || [])) {
      const name = c.mimeType.split("/")[1];
      if (["VP8", "VP9", "H264", "AV1", "opus"].includes(name)) codecs.add(name);
    }
  }
  const track = localStream?.getVideoTracks()[0];
  return {
    maxHeight: Math.max(90, track?.getSettings().height || 720),
    maxFps: Math.round(track?.getSettings().frameRate || 30),
    bandwidthKbps: opts.bandwidthKbps ||
      Math.max(50, Math.round((navigator.connection?.downlink || 1.5) * 1000)),
    codecs: [...codecs].slice(0, 16),
  };
}

// ---- tiles ----------------------------------------------------------------------------------
function tileId(identity, source) { return `tile-${identity}-${source}`.replace(/[^\w-]/g, "_"); }
function addTile(identity, source, label, stream, muted) {
  let tile = document.getElementById(tileId(identity, source));
  if (!tile) {
    tile = document.createElement("div");
    tile.className = "tile"; tile.id = tileId(identity, source);
    tile.dataset.participant = identity; tile.dataset.source = source;
    tile.innerHTML = `<video autoplay playsinline></video><div class="label"></div>`
      + `<div class="conn"></div>`;
    $("#tiles").appendChild(tile);
    tileSizes?.observe(tile);
  }
  tile.querySelector(".label").textContent = label;
  const video = tile.querySelector("video");
  video.muted = !!muted;
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play().catch(() => {});
  const p = state.participants[identity];
  if (p) markMedia(identity, p);
}
// Camera / microphone state on the person's camera tile: data-audio / data-video "on" | "off".
function markMedia(identity, media) {
  const tile = document.getElementById(tileId(identity, "camera"));
  if (!tile) return;
  if (media.audio !== undefined) tile.dataset.audio = media.audio ? "on" : "off";
  if (media.video !== undefined) tile.dataset.video = media.video ? "on" : "off";
}
function removeTiles(identity) {
  for (const el of document.querySelectorAll(".tile")) {
    if (el.dataset.participant === identity) el.remove();
  }
}
function setConn(identity, s) {
  for (const el of document.querySelectorAll(".tile")) {
    if (el.dataset.participant === identity) {
      const c = el.querySelector(".conn"); c.textContent = s; c.dataset.state = s;
    }
  }
}

// ---- P2P fallback helpers -------------------------------------------------------------------
const isTurn = (s) => [].concat(s.urls).some((u) => /^turns?:/.test(u));
const hasTurn = () => state.iceServers.some(isTurn);
// Direct first: mesh pairs start without TURN servers (no allocation per pair on the TURN server);
// a pair that cannot connect directly escalates to relay (TURN) on its own.
function iceConfig(path) {
  return path === "relay" ? { iceServers: state.iceServers, iceTransportPolicy: "relay" }
    : { iceServers: state.iceServers.filter((s) => !isTurn(s)), iceTransportPolicy: "all" };
}
const candType = (line) => (/ typ (\w+)/.exec(line || "") || [])[1];
function stripDirect(sdp) {
  return sdp.split("\r\n").filter((l) => !l.startsWith("a=candidate:")
    || candType(l) === "relay").join("\r\n");
}

// ---- peers (perfect negotiation, https://w3c.github.io/webrtc-pc/#perfect-negotiation-example)
class Peer {
  constructor(identity, name) {
    this.id = identity; this.name = name;
    this.polite = state.identity > identity;
    this.makingOffer = false; this.ignoreOffer = false;
    this.remoteSources = {}; this.trackSources = {};
    this.blocked = opts.blockDirect.has(identity);
    this.path = this.icePath = opts.relay ? "relay" : "direct";
    this.fallback = { path: this.path, reason: null, startedAt: performance.now(),
                      escalatedAt: null, connectedAt: null, drops: 0, restarts: 0 };
    this.dropTimes = []; this.timer = null;
    this.pc = new RTCPeerConnection(iceConfig(this.path));
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate && this.blocked && candidate.type !== "relay") return;
      send({ type: "ice", to: this.id, candidate: candidate ? candidate.toJSON() : null });
    };
    this.pc.ontrack = (e) => this.onTrack(e);
    this.pc.onconnectionstatechange = () => {
      setConn(this.id, this.pc.connectionState); renderRoster(); this.watch();
    };
    this.pc.onnegotiationneeded = () => this.negotiate();
    this.arm(WATCH.connectMs, "connect_timeout");
    this.lastBytes = 0; this.lastBytesAt = performance.now();
    this.stallWatch = setInterval(() => this.checkStall(), WATCH.statsMs);
  }

  // Bytes received on the selected candidate pair: a stall while "connected" escalates now.
  async checkStall() {
    if (this.pairSfu || this.pc.connectionState !== "connected") {
      this.lastBytesAt = performance.now(); return;
    }
    let bytes = 0; let pair = null;
    (await this.pc.getStats()).forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        bytes += s.bytesReceived || 0; pair = s.selectedCandidatePairId;
      }
    });
    const now = performance.now();
    const f = this.fallback;
    if (pair !== this.selectedPair) {
      // an ICE restart that completed while the connection stayed "connected"
      if (this.selectedPair && f.escalatedAt > (f.connectedAt ?? -Infinity)) f.connectedAt = now;
      this.selectedPair = pair;
    }
    if (bytes !== this.lastBytes) { this.lastBytes = bytes; this.lastBytesAt = now; return; }
    // an ICE restart under way has its own deadline (arm() in escalate)
    const restarting = now - (f.escalatedAt ?? -Infinity) < 2 * WATCH.connectMs + 2000;
    if (bytes > 0 && !restarting && now - this.lastBytesAt > WATCH.stallMs) {
      this.lastBytesAt = now;
      this.escalate("stalled");
    }
  }

  // ---- P2P fallback: watch this pair's connection; escalate this pair only ----
  arm(ms, reason) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.pc.connectionState !== "connected") this.escalate(reason);
    }, ms);
  }

  watch() {
    const s = this.pc.connectionState;
    if (this.pairSfu) return;  // this pair's media moved to the call server for good
    if (s === "connected") {
      clearTimeout(this.timer);
      if (this.icePath === "relay") this.relayUp = true;
      if (this.fallback.connectedAt === null || this.fallback.path !== this.path) {
        this.fallback.connectedAt = performance.now();
      }
      this.fallback.path = this.path;
    } else if (s === "disconnected") {
      const now = performance.now();
      this.dropTimes = this.dropTimes.filter((t) => now - t < WATCH.dropWindowMs).concat(now);
      this.fallback.drops += 1;
      if (this.dropTimes.length >= WATCH.drops) this.escalate("flapping");
      else this.arm(WATCH.disconnectedMs, "disconnected");
    } else if (s === "failed") {
      this.escalate("failed");
    }
  }

  escalate(reason) {
    if (this.pc.signalingState === "closed") return;
    const f = this.fallback;
    if (this.path === "direct" && hasTurn()) {
      this.usePath("relay");
    } else if (this.path === "relay" && this.relayUp && f.restarts < 3) {
      // relay was up and dropped: another ICE restart through TURN (then the call server)
    } else if (this.path !== "sfu") {
      // No TURN, or TURN failed too: this pair's media goes through the call server.
      this.startPairSfu(reason);
      return;
    } else {
      return;
    }
    log("p2p fallback:", this.id, "->", this.path, "because", reason);
    f.reason = reason; f.escalatedAt = performance.now(); f.restarts += 1;
    this.dropTimes = [];
    this.pc.restartIce();
    this.arm(2 * WATCH.connectMs + 2000, reason);
  }

  // The pair's own call-server meeting (signaling: sfu.* with `pair`); only these two are in it.
  async startPairSfu(reason) {
    log("p2p fallback:", this.id, "-> call server because", reason);
    clearTimeout(this.timer);
    this.path = "sfu";
    Object.assign(this.fallback, { path: "sfu", reason, escalatedAt: performance.now() });
    this.pairSfu?.close();
    const session = this.pairSfu = new SfuSession(++sfuGeneration, {
      iceServers: state.iceServers, relay: false,
      sourceOf: (track) => (screenStream?.getTracks().includes(track) ? "screen" : "camera"),
      onTrack: (identity, source, track) =>
        session === this.pairSfu && identity === this.id && sfuTrack(identity, source, track, session),
      onState: (st) => {
        if (session !== this.pairSfu) return;
        if (st === "connected") this.fallback.connectedAt = performance.now();
        setConn(this.id, st); renderRoster();
      },
      onFailed: () => session === this.pairSfu && this.startPairSfu("ice_failed"),
    });
    const offer = await session.offer([localStream, screenStream].filter(Boolean));
    if (session !== this.pairSfu) return;
    send({ type: "sfu.join", id: session.ref, pair: this.id, ...offer });
  }

  usePath(path) {
    this.path = this.icePath = path;
    this.pc.setConfiguration(iceConfig(path));
  }

  addLocalTracks() {
    const streams = [localStream, screenStream].filter(Boolean);
    for (const s of streams) for (const t of s.getTracks()) this.pc.addTrack(t, s);
    // Always be able to receive audio and video even when not sending them.
    const kinds = this.pc.getTransceivers().map((t) => t.receiver.track.kind);
    for (const kind of ["audio", "video"]) {
      if (!kinds.includes(kind)) this.pc.addTransceiver(kind, { direction: "recvonly" });
    }
    this.applyConfig();
  }

  async negotiate() {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      send({ type: "offer", to: this.id, sdp: this.outSdp(), sources: localSources,
             path: this.wirePath() });
    } catch (err) { log("negotiation failed", err); } finally { this.makingOffer = false; }
  }

  wirePath() { return this.icePath === "relay" ? "relay" : "direct"; }
  outSdp() {
    const sdp = this.pc.localDescription.sdp;
    return this.blocked ? stripDirect(sdp) : sdp;
  }

  async onDescription(msg) {
    if (msg.sources) Object.assign(this.remoteSources, msg.sources);
    const collision = msg.type === "offer" &&
      (this.makingOffer || this.pc.signalingState !== "stable");
    this.ignoreOffer = !this.polite && collision;
    if (this.ignoreOffer) return;
    if (msg.path === "relay" && this.path === "direct") {
      // The other side escalated this pair: follow it, so both ends use TURN only.
      log("p2p fallback:", this.id, "-> relay (asked by peer)");
      this.usePath("relay");
      Object.assign(this.fallback, { reason: "peer", escalatedAt: performance.now() });
      this.arm(2 * WATCH.connectMs + 2000, "peer");
    }
    const sdp = this.blocked ? stripDirect(msg.sdp) : msg.sdp;
    await this.pc.setRemoteDescription({ type: msg.type, sdp });
    if (msg.type === "offer") {
      if (!this.tracksAdded) { this.tracksAdded = true; this.addLocalTracks(); }
      await this.pc.setLocalDescription();
      send({ type: "answer", to: this.id, sdp: this.outSdp(), sources: localSources,
             path: this.wirePath() });
    }
  }

  async onIce(candidate) {
    if (candidate && this.blocked && candType(candidate.candidate) !== "relay") return;
    try { await this.pc.addIceCandidate(candidate || null); }
    catch (err) { if (!this.ignoreOffer) log("addIceCandidate failed", err); }
  }

  onTrack(e) {
    if (this.pairSfu) return;  // the tile shows this pair's call-server tracks
    const stream = e.streams[0] || new MediaStream([e.track]);
    const source = e.track.kind === "audio" ? "microphone"
      : (this.remoteSources[stream.id] || "camera");
    this.trackSources[e.track.id] = source;
    const tileSource = source === "microphone" ? "camera" : source;
    const label = source === "screen" ? `${this.name} (screen)` : this.name;
    addTile(this.id, tileSource, label, stream, false);
    setConn(this.id, this.pc.connectionState);
  }

  applyConfig() {
    const cfg = state.config;
    if (!cfg) return;
    limitSenders(this.pc, cfg);
    if (this.pairSfu) limitSenders(this.pairSfu.pc, cfg);
    // Codec order: the room's common codecs first.
    for (const tr of this.pc.getTransceivers()) {
      const kind = tr.receiver.track.kind;
      const caps = RTCRtpReceiver.getCapabilities(kind)?.codecs || [];
      const rank = (c) => { const i = cfg.codecs.indexOf(c.mimeType.split("/")[1]); return i < 0 ? 99 : i; };
      try { tr.setCodecPreferences([...caps].sort((a, b) => rank(a) - rank(b))); } catch { /* stopped */ }
    }
    // A changed codec list (someone joined or announced fewer codecs) takes effect now, not
    // at some later negotiation: the impolite end renegotiates (codec preferences alone do
    // not fire negotiationneeded), perfect negotiation settles a crossing offer.
    const codecs = cfg.codecs.join(",");
    const changed = this.codecs !== undefined && this.codecs !== codecs;
    this.codecs = codecs;
    if (changed && !this.polite && this.pc.connectionState === "connected") this.negotiate();
  }

  close() {
    clearTimeout(this.timer); clearInterval(this.stallWatch);
    this.pairSfu?.close(); this.pairSfu = null; this.pc.close();
  }
}

function peerFor(identity, name) {
  let peer = peers.get(identity);
  if (!peer) {
    peer = new Peer(identity, name || state.participants[identity]?.name || identity);
    peers.set(identity, peer);
  }
  return peer;
}

function dropPeer(identity) {
  peers.get(identity)?.close();
  peers.delete(identity);
  delete state.participants[identity];
  removeTiles(identity);
  renderRoster();
}

// ---- call server (SFU) ----------------------------------------------------------------------------
const sfuTiles = {};               // "<identity>|<tile source>" -> MediaStream shown in the tile
function sfuTrack(identity, source, track, session = sfu) {
  const tileSource = source === "microphone" ? "camera" : source;
  const key = `${identity}|${tileSource}`;
  const keep = (sfuTiles[key]?.getTracks() || []).filter(
    (t) => t.kind !== track.kind && t.readyState === "live");
  const stream = sfuTiles[key] = new MediaStream([...keep, track]);
  const name = state.participants[identity]?.name || identity;
  addTile(identity, tileSource, source === "screen" ? `${name} (screen)` : name, stream, false);
  setConn(identity, session?.pc.connectionState || "new");
}

// A mesh connection (and a pair's call-server fallback) has one receiver per sender: the room's
// call configuration caps what we send it. A room on the call server is not capped: we send
// simulcast layers and the call server gives each receiver the one it can take.
function limitSenders(pc, cfg) {
  for (const sender of pc.getSenders()) {
    if (!sender.track || sender.track.kind !== "video") continue;
    const p = sender.getParameters();
    if (!p.encodings || !p.encodings.length) continue;
    const h = sender.track.getSettings().height || cfg.maxHeight;
    p.encodings[0].maxBitrate = cfg.bandwidthKbps * 1000;
    p.encodings[0].maxFramerate = cfg.maxFps;
    p.encodings[0].scaleResolutionDownBy = Math.max(1, h / cfg.maxHeight);
    sender.setParameters(p).catch((err) => log("setParameters", err));
  }
}

// Open (or reopen, after a move) the session with the call server; mesh connections close.
async function startSfu(reason) {
  log("call server session:", reason);
  for (const peer of peers.values()) peer.close();
  peers.clear();
  sfu?.close();
  state.topology = "sfu";
  state.sfu = { reason, node: null, connectionState: "new", connectedAt: null,
                startedAt: performance.now(), moves: (state.sfu?.moves || 0) + 1,
                reasons: [...(state.sfu?.reasons || []), reason] };
  const session = sfu = new SfuSession(++sfuGeneration, {
    iceServers: state.iceServers, relay: opts.relay,
    sourceOf: (track) => (screenStream?.getTracks().includes(track) ? "screen" : "camera"),
    onTrack: (identity, source, track) => session === sfu && sfuTrack(identity, source, track),
    onState: (s) => {
      if (session !== sfu) return;
      state.sfu.connectionState = s; state.sfu.connectedAt = session.connectedAt;
      for (const id of Object.keys(state.participants)) setConn(id, s);
      renderRoster();
    },
    onFailed: () => session === sfu && startSfu("ice_failed"),
    tileHeight,
  });
  const offer = await session.offer([localStream, screenStream].filter(Boolean));
  if (session !== sfu) return;  // superseded while gathering
  send({ type: "sfu.join", id: session.ref, ...offer });
}

async function onPairSfuMessage(msg) {
  const peer = peers.get(msg.pair);
  const session = peer?.pairSfu;
  if (msg.type === "sfu.start") {
    // "peer": the other end moved this pair to the call server; otherwise our leg was re-placed
    if (peer && (msg.reason !== "peer" || !session)) await peer.startPairSfu(msg.reason);
    return;
  }
  if (!session) return;
  if (msg.type === "sfu.joined") {
    if (msg.ref === session.ref) await session.onJoined(msg);
  } else if (msg.type === "sfu.offer") {
    const answer = await session.onOffer(msg);
    if (answer) send({ type: "sfu.answer", pair: msg.pair, ...answer });
  }
}

async function onSfuMessage(msg) {
  if (msg.pair) { await onPairSfuMessage(msg); return; }
  if (!sfu) return;
  if (msg.type === "sfu.joined") {
    if (msg.ref !== sfu.ref) return;  // answer to a session already replaced
    await sfu.onJoined(msg); state.sfu.node = msg.node;
  } else if (msg.type === "sfu.offer") {
    const answer = await sfu.onOffer(msg);
    if (answer) send({ type: "sfu.answer", ...answer });
    reportViews();
  } else if (msg.type === "sfu.layer") {
    sfu.onLayer(msg);
    const tile = document.getElementById(tileId(msg.participant, sfu.sources[msg.track] || "camera"));
    if (tile) showQuality(tile, msg);
  } else if (msg.type === "sfu.layers") {
    await sfu.onLayers(msg);
  }
}

// The quality badge of a tile: HD from 720 lines, else SD, with the height in its title.
function showQuality(tile, layer) {
  let badge = tile.querySelector(".quality");
  if (!badge) {
    badge = document.createElement("div"); badge.className = "quality"; tile.appendChild(badge);
  }
  const h = layer.height || 0;
  badge.textContent = layer.transcoded ? "transcoded" : h >= 720 ? "HD" : "SD";
  badge.title = `${h ? h + "p, " : ""}layer ${layer.index + 1} of ${layer.layers} (${layer.reason})`;
  tile.dataset.quality = badge.textContent;
}

// Rendered tile heights go to the call server (sfu.view), so a small tile gets a small layer.
function tileHeight(identity, source) {
  const video = document.getElementById(tileId(identity, source))?.querySelector("video");
  return video ? Math.round(video.clientHeight * (window.devicePixelRatio || 1)) : 0;
}
let viewTimer = null;
function reportViews() {
  clearTimeout(viewTimer);
  viewTimer = setTimeout(() => {
    const views = sfu?.views();
    if (views) send({ type: "sfu.view", views });
  }, 250);
}
const tileSizes = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => reportViews());

function renderRoster() {
  const el = $("#roster");
  if (!el) return;
  el.innerHTML = "";
  for (const [id, p] of Object.entries(state.participants)) {
    const li = document.createElement("li");
    li.textContent = `${p.name} — ${(sfu ? sfu.pc : peers.get(id)?.pc)?.connectionState || "new"}`;
    el.appendChild(li);
  }
}

// ---- telemetry (docs/signaling.md, "Telemetry") ---------------------------------------------
// client.info once per connection, quality.sample every telemetryIntervalMs (from welcome) while
// in a room. Browser family, major version, OS family and device class only: no user agent string.
function clientInfo() {
  const ua = navigator.userAgent;
  let browser = "other"; let browserVersion;
  for (const [token, name] of [["Edg", "edge"], ["Firefox", "firefox"], ["Chrome", "chrome"],
                               ["Version", "safari"]]) {
    const m = new RegExp(`${token}/(\\d+)`).exec(ua);
    if (m) { browser = name; browserVersion = m[1]; break; }
  }
  const mobile = navigator.userAgentData?.mobile ?? /Mobi|Android/.test(ua);
  const device = /iPad|Tablet/.test(ua) ? "tablet" : mobile ? "mobile" : "desktop";
  const os = navigator.userAgentData?.platform || [["Windows", /Windows/], ["macOS", /Mac OS/],
    ["Android", /Android/], ["iOS", /iPhone|iPad/], ["Linux", /Linux/]].find(([, re]) => re.test(ua))?.[0];
  return { browser, device, ...(browserVersion ? { browserVersion } : {}),
           ...(os ? { os: os.slice(0, 32) } : {}) };
}

const telemetry = { timer: null, at: 0, prev: new WeakMap(), intervalMs: 10000 };
const clamp = (v, hi) => Math.min(hi, Math.max(0, v || 0));

// Every RTCPeerConnection carrying my media: mesh pairs (or a pair's call-server session) and
// the room's call-server session; "sfu" when it goes through a call server.
function mediaConnections() {
  const out = [];
  for (const peer of peers.values()) {
    out.push(peer.pairSfu ? { pc: peer.pairSfu.pc, sfu: true, peer } : { pc: peer.pc, sfu: false, peer });
  }
  if (sfu) out.push({ pc: sfu.pc, sfu: true, peer: null });
  return out;
}

async function qualitySample() {
  const now = performance.now();
  const intervalMs = Math.round(clamp(now - telemetry.at, 600000)); telemetry.at = now;
  const tracks = []; let rtt = null; let lost = 0; let received = 0;
  let path = sfu ? "sfu" : "p2p";
  for (const { pc, sfu: viaSfu, peer } of mediaConnections()) {
    if (pc.connectionState === "closed") continue;
    if (viaSfu) path = "sfu";
    const report = await pc.getStats();
    const prev = telemetry.prev.get(pc) || new Map();
    const next = new Map();
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        if (s.currentRoundTripTime !== undefined) rtt = Math.max(rtt ?? 0, s.currentRoundTripTime * 1000);
        if (path === "p2p" && report.get(s.localCandidateId)?.candidateType === "relay") path = "turn";
      }
      if ((s.type !== "inbound-rtp" && s.type !== "outbound-rtp") || !["audio", "video"].includes(s.kind)) return;
      const inbound = s.type === "inbound-rtp";
      const bytes = (inbound ? s.bytesReceived : s.bytesSent) || 0;
      const was = prev.get(s.id) || { bytes: 0, at: telemetry.at - intervalMs, freezes: 0, freezeS: 0,
                                      lost: 0, received: 0 };
      const cur = { bytes, at: now, freezes: s.freezeCount || 0, freezeS: s.totalFreezesDuration || 0,
                    lost: s.packetsLost || 0, received: s.packetsReceived || 0 };
      next.set(s.id, cur);
      if (inbound && bytes === was.bytes) return;  // not receiving (a track that ended)
      const trackId = inbound ? s.trackIdentifier : report.get(s.mediaSourceId)?.trackIdentifier;
      const source = s.kind === "audio" ? "microphone"
        : (screenStream?.getTracks().some((t) => t.id === trackId)
           || peer?.trackSources[trackId] === "screen") ? "screen" : "camera";
      const t = { kind: s.kind, direction: inbound ? "in" : "out", source,
                  bitrateKbps: Math.round(clamp((bytes - was.bytes) * 8 / Math.max(1, now - was.at), 1e6)) };
      if (s.kind === "video") {
        Object.assign(t, { width: clamp(s.frameWidth, 16384), height: clamp(s.frameHeight, 16384),
                           fps: Math.round(clamp(s.framesPerSecond, 240) * 10) / 10 });
        if (inbound) {
          t.freezes = Math.round(clamp(cur.freezes - was.freezes, 10000));
          t.freezeMs = Math.round(clamp((cur.freezeS - was.freezeS) * 1000, 600000));
        }
      }
      if (inbound) {
        lost += Math.max(0, cur.lost - was.lost); received += Math.max(0, cur.received - was.received);
      }
      tracks.push(t);
    });
    telemetry.prev.set(pc, next);
  }
  const sample = { intervalMs, path, tracks: tracks.slice(0, 32) };
  if (rtt !== null) sample.rttMs = Math.round(clamp(rtt, 60000));
  if (lost + received > 0) sample.loss = Math.round(lost / (lost + received) * 1e4) / 1e4;
  return sample;
}

function startTelemetry() {
  stopTelemetry();
  telemetry.at = performance.now();
  telemetry.timer = setInterval(async () => {
    try { send({ type: "quality.sample", sample: await qualitySample() }); }
    catch (err) { log("quality sample failed", err); }
  }, telemetry.intervalMs);
}
function stopTelemetry() { clearInterval(telemetry.timer); telemetry.timer = null; }

// ---- rooms ----------------------------------------------------------------------------------
async function joinRoom(room) {
  await ensureLocalMedia();
  state.room = room;
  send({ type: "media", ...state.media });  // remembered for the join: others see it at once
  send({ type: "join", room, topology: opts.topology, ...(await capabilities()) });
  setStatus(`joining ${room}`);
}

function leaveRoom(tellServer = true) {
  for (const id of [...peers.keys()]) dropPeer(id);
  for (const id of Object.keys(state.participants)) dropPeer(id);
  sfu?.close(); sfu = null;
  stopTelemetry();
  if (state.room && tellServer) send({ type: "leave" });
  state.room = null; state.topology = null;
}

async function onJoined(msg) {
  state.topology = msg.topology; state.config = msg.config;
  setStatus(`in ${msg.room} (${msg.topology}, mesh limit ${msg.meshLimit})`);
  startTelemetry();
  for (const p of msg.participants) state.participants[p.identity] = p;
  if (msg.topology === "sfu") { renderRoster(); await startSfu("joined"); return; }
  for (const p of msg.participants) {
    const peer = peerFor(p.identity, p.name);   // the newcomer offers to everyone present
    peer.tracksAdded = true;
    peer.addLocalTracks();
  }
  renderRoster();
}

// ---- 1:1 calls --------------------------------------------------------------------------------
function renderCall() {
  const inc = $("#incoming");
  if (inc) {
    inc.hidden = !state.incoming;
    if (state.incoming) $("#incoming-from").textContent = state.incoming.name || state.incoming.from;
  }
  const cs = $("#call-state");
  if (cs) cs.textContent = state.activeCall ? `${state.activeCall.state} (${state.activeCall.callId})` : "no call";
}

function onCallMessage(msg) {
  const call = state.calls[msg.callId] = { ...(state.calls[msg.callId] || {}), ...msg };
  switch (msg.type) {
    case "call.ringing": call.state = "ringing"; state.activeCall = call; break;
    case "call.incoming":
      call.state = "incoming"; state.incoming = call;
      if (opts.autoAnswer) api.accept(msg.callId);
      break;
    case "call.accepted":
      call.state = "active"; state.activeCall = call; state.incoming = null;
      joinRoom(msg.room);
      break;
    case "call.ended":
      call.state = `ended:${msg.reason}`;
      if (state.room === `call-${msg.callId}`) leaveRoom(false);  // the server took us out
      if (state.incoming?.callId === msg.callId) state.incoming = null;
      else if (!state.activeCall || state.activeCall.callId === msg.callId
               || state.activeCall.state.startsWith("ended")) state.activeCall = call;
      break;
  }
  renderCall();
}

// ---- signaling --------------------------------------------------------------------------------
async function onMessage(msg) {
  window.dispatchEvent(new CustomEvent("parley:message", { detail: msg }));  // for add-ons
  state.messages.push(msg.type === "error" || msg.type === "sfu.layer" ? msg
    : { type: msg.type, callId: msg.callId, reason: msg.reason });
  if (state.messages.length > 500) state.messages.shift();
  switch (msg.type) {
    case "welcome":
      state.identity = msg.identity; state.iceServers = msg.iceServers;
      state.expiresAt = msg.expiresAt; scheduleRefresh(msg.expiresIn, msg.guest);
      state.instance = msg.instance;
      telemetry.intervalMs = msg.telemetryIntervalMs || 10000;
      send({ type: "client.info", info: clientInfo() });
      setStatus("connected");
      if (pathRoom) await joinRoom(pathRoom); else await ensureLocalMedia();
      break;
    case "joined": await onJoined(msg); break;
    case "token.refreshed":
      state.expiresAt = msg.expiresAt; state.refreshes = (state.refreshes || 0) + 1;
      scheduleRefresh(msg.expiresIn, true); break;
    case "participant.joined":
      state.participants[msg.participant.identity] = msg.participant;
      markMedia(msg.participant.identity, msg.participant); renderRoster(); break;
    case "participant.left": dropPeer(msg.identity); break;
    case "participant.media":
      if (state.participants[msg.identity]) {
        Object.assign(state.participants[msg.identity], { audio: msg.audio, video: msg.video });
      }
      markMedia(msg.identity, msg); break;
    case "config":
      state.config = msg; for (const p of peers.values()) p.applyConfig();
      break;
    case "sfu.start":
      if (msg.pair) await onSfuMessage(msg);
      else if (state.room === msg.room) await startSfu(msg.reason);
      break;
    case "sfu.joined": case "sfu.offer": case "sfu.layer": case "sfu.layers":
      await onSfuMessage(msg); break;
    case "offer": case "answer": {
      if (state.topology === "sfu") break;  // a mesh message overtaken by the switch
      const peer = peerFor(msg.from);
      await peer.onDescription(msg);
      break;
    }
    case "ice": await peers.get(msg.from)?.onIce(msg.candidate); break;
    case "error":
      showError(msg.code, msg.message);
      if (["sfu_unavailable", "room_full_p2p"].includes(msg.code) && !sfu) {
        state.room = null; setStatus("refused: " + msg.code);
      }
      break;
    default:
      if (msg.type.startsWith("call.")) onCallMessage(msg);
  }
}

// A guest token (server-made identity) from signaling; with the current guest token as bearer,
// a fresh one for the same guest (docs/signaling.md, "Token expiry and refresh").
async function guestToken(current) {
  const headers = { "content-type": "application/json" };
  if (current) headers.authorization = `Bearer ${current}`;
  const resp = await fetch("/api/v1/guest-token", {
    method: "POST", headers,
    body: JSON.stringify({ room: pathRoom || "lobby", name: opts.name }),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    showError(body.detail?.code || `http_${resp.status}`, body.detail?.message || "no token");
    return null;
  }
  return body.token;
}

// Refresh a guest session's token at two thirds of its remaining life; a deployment's token
// (#token=) is refreshed by the deployment, so the page can only wait for it to end.
let refreshTimer = null;
function scheduleRefresh(expiresIn, guest) {
  clearTimeout(refreshTimer);
  if (!guest || !(expiresIn > 0)) return;
  refreshTimer = setTimeout(async () => {
    const token = await guestToken(state.token);
    if (token) { state.token = token; send({ type: "token.refresh", token }); }
  }, expiresIn * 1000 * 2 / 3);
}

async function connect() {
  setStatus("getting a token");
  const token = opts.token || await guestToken(null);
  if (!token) { setStatus("refused"); return; }
  state.token = token;  // the page's own access token, for the HTTP API (recording)
  const proto = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(token)}`);
  // Handle messages one at a time, in order: an ICE candidate must not overtake its offer.
  let chain = Promise.resolve();
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    chain = chain.then(() => onMessage(msg)).catch((err) => log("handler", msg.type, err));
  };
  ws.onclose = (e) => { setStatus(`disconnected (${e.code})`); state.closeCode = e.code; };
  setInterval(() => send({ type: "ping" }), 20000);
}

// ---- automation API ---------------------------------------------------------------------------
async function stats() {
  const inbound = [];
  for (const peer of peers.values()) {
    if (peer.pairSfu) {  // this pair's media is on the call server, not on the mesh connection
      inbound.push(...(await peer.pairSfu.inbound()).filter((r) => r.participant === peer.id));
      continue;
    }
    for (const tr of peer.pc.getTransceivers()) {
      const track = tr.receiver.track;
      if (!track || tr.currentDirection === "stopped") continue;
      const report = await tr.receiver.getStats();
      report.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        inbound.push({
          participant: peer.id, kind: s.kind,
          source: peer.trackSources[track.id] || (s.kind === "audio" ? "microphone" : "camera"),
          framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0,
          bytesReceived: s.bytesReceived || 0,
          codec: report.get(s.codecId)?.mimeType?.split("/")[1] || null,
        });
      });
    }
  }
  if (sfu) inbound.push(...await sfu.inbound());
  const connections = {};
  for (const peer of peers.values()) {
    connections[peer.id] = (peer.pairSfu || peer).pc.connectionState;
  }
  if (sfu) for (const id of Object.keys(state.participants)) connections[id] = sfu.pc.connectionState;
  const pairs = [];
  for (const peer of peers.values()) {
    if (peer.pairSfu) {
      const pair = await peer.pairSfu.candidatePair();
      if (pair) pairs.push({ participant: peer.id, via: "call-server", ...pair });
      continue;
    }
    const pair = selectedPair(await peer.pc.getStats());
    if (pair) pairs.push({ participant: peer.id, ...pair });
  }
  if (sfu) {
    const pair = await sfu.candidatePair();
    if (pair) pairs.push({ participant: "call-server", ...pair });
  }
  const paths = {}; const fallbacks = {};
  for (const peer of peers.values()) {
    paths[peer.id] = peer.path; fallbacks[peer.id] = { ...peer.fallback, path: peer.path };
  }
  if (sfu) for (const id of Object.keys(state.participants)) paths[id] = "sfu";
  return { topology: state.topology, room: state.room, identity: state.identity,
           connections, candidatePairs: pairs, inbound, paths, fallbacks,
           callServer: sfu ? { node: sfu.node, connectionState: sfu.pc.connectionState,
                               outbound: await sfu.outbound() } : null };
}

const api = {
  state, opts, stats, qualitySample, clientInfo,
  send,  // for add-ons speaking their own messages (parley-chat.js)
  invite: (to) => send({ type: "invite", to }),
  accept: (callId) => send({ type: "accept", callId: callId || state.incoming?.callId }),
  reject: (callId) => send({ type: "reject", callId: callId || state.incoming?.callId }),
  cancel: () => state.activeCall && send({ type: "cancel", callId: state.activeCall.callId }),
  hangup: () => state.activeCall && send({ type: "hangup", callId: state.activeCall.callId }),
  announce: async (caps) => send({ type: "caps", ...(await capabilities()), ...caps }),
  // The local ICE candidates (address, port, protocol) of the connection with one peer.
  localCandidates: async (identity) => {
    const peer = peers.get(identity);
    if (!peer) return [];
    const out = [];
    (await peer.pc.getStats()).forEach((s) => {
      if (s.type === "local-candidate") {
        out.push({ address: s.address, port: s.port, protocol: s.protocol, type: s.candidateType });
      }
    });
    return out;
  },
  toggleAudio: () => toggle("audio"),
  toggleVideo: () => toggle("video"),
  startScreen,
  leave: () => leaveRoom(),
  sfuViews: () => sfu?.sentViews || null,  // the tile heights last reported to the call server
  senderParameters: () => [...peers.values()].map((p) => [p.id, p.pc])
    .concat(sfu ? [["call-server", sfu.pc]] : []).flatMap(([id, pc]) => pc.getSenders()
    .filter((s) => s.track?.kind === "video")
    .map((s) => ({ participant: id, source: localSources[streamOf(s.track)] || "camera",
                   encodings: (s.getParameters().encodings || []).map((e) => ({
                     maxBitrate: e.maxBitrate, maxFramerate: e.maxFramerate,
                     scaleResolutionDownBy: e.scaleResolutionDownBy })) }))),
};
function streamOf(track) {
  if (screenStream?.getTracks().includes(track)) return screenStream.id;
  return localStream?.id;
}
window.parley = api;

function wireUi() {
  $("#name-shown") && ($("#name-shown").textContent = opts.name);
  $("#room-shown") && ($("#room-shown").textContent = pathRoom || "1:1 calls");
  $("#toggle-audio")?.addEventListener("click", (e) => {
    e.target.textContent = toggle("audio") ? "Mute" : "Unmute"; });
  $("#toggle-video")?.addEventListener("click", (e) => {
    e.target.textContent = toggle("video") ? "Camera off" : "Camera on"; });
  $("#share-screen")?.addEventListener("click", () => startScreen());
  $("#call-form")?.addEventListener("submit", (e) => {
    e.preventDefault(); api.invite($("#callee").value.trim()); });
  $("#join-form")?.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ name: $("#join-name").value.trim() || opts.name });
    if (!$("#join-video").checked) q.set("video", "0");
    if (!$("#join-audio").checked) q.set("audio", "0");
    location.assign(`/m/${encodeURIComponent($("#join-room").value.trim())}?${q}`);
  });
  $("#accept")?.addEventListener("click", () => api.accept());
  $("#reject")?.addEventListener("click", () => api.reject());
  $("#hangup")?.addEventListener("click", () => {
    if (state.activeCall?.state === "ringing") api.cancel(); else api.hangup(); });
  $("#leave")?.addEventListener("click", () => leaveRoom());  // eslint-disable-line
}

wireUi();
connect().catch((err) => { showError("client", String(err)); setStatus("failed"); });

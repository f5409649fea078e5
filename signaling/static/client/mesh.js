// Mesh calls: one RTCPeerConnection per other participant (perfect negotiation), with the P2P
// fallback watchdog that escalates one pair to TURN, then to the call server
// (docs/signaling.md, "P2P fallback").
import { WATCH, local, log, opts, peers, send, server, state } from "./core.js";
import { addTile, removeTile, removeTiles, setConn } from "./tiles.js";
import { limitSenders, sfuTrack } from "./callserver.js";
import { ensureLocalMedia, localMediaOpen } from "./capture.js";
import { renderRoster } from "./people.js";

const isTurn = (s) => [].concat(s.urls).some((u) => /^turns?:/.test(u));
export const hasTurn = () => state.iceServers.some(isTurn);
// Direct first: mesh pairs start without TURN servers (no allocation per pair on the TURN server);
// a pair that cannot connect directly escalates to relay (TURN) on its own. A pool of one: the
// candidates gather from the connection's creation, not from its first description (the same
// size on both paths: it cannot change once a description is set). One transport for all media
// (max-bundle, as every browser negotiates): no second transport gathers, sends and checks
// candidates of its own before the answer drops it (a join trickled 8 UDP host candidates, not
// 4, each an addIceCandidate at the other end: bench/join_time, 2026-12-05), and a relayed pair
// makes one TURN allocation, not two.
function iceConfig(path, pool = 1) {
  const both = { iceCandidatePoolSize: pool, bundlePolicy: "max-bundle" };
  return path === "relay" ? { iceServers: state.iceServers, iceTransportPolicy: "relay", ...both }
    : { iceServers: state.iceServers.filter((s) => !isTurn(s)), iceTransportPolicy: "all", ...both };
}
const startPath = () => (opts.relay ? "relay" : "direct");

// My camera, microphone and screen on a connection.
const myTracks = () => [local.stream, local.screen].filter(Boolean)
  .flatMap((s) => s.getTracks().map((t) => [t, s]));

// Always able to receive audio and video, even when sending neither.
function receiveBoth(pc) {
  const kinds = pc.getTransceivers().map((t) => t.receiver.track.kind);
  for (const kind of ["audio", "video"]) {
    if (!kinds.includes(kind)) pc.addTransceiver(kind, { direction: "recvonly" });
  }
}

// The room's caps on my video senders and its common codecs first on every transceiver.
function configure(pc, cfg) {
  limitSenders(pc, cfg);
  for (const tr of pc.getTransceivers()) {
    const kind = tr.receiver.track.kind;
    const caps = RTCRtpReceiver.getCapabilities(kind)?.codecs || [];
    const rank = (c) => { const i = cfg.codecs.indexOf(c.mimeType.split("/")[1]); return i < 0 ? 99 : i; };
    try { tr.setCodecPreferences([...caps].sort((a, b) => rank(a) - rank(b))); } catch { /* stopped */ }
  }
}

// A participant already in a mesh room makes its connection to a newcomer when it joins
// (participant.joined), so the candidates are gathered while the newcomer's offer is on its
// way (docs/benchmarks.md, "Join time"); the pair's Peer takes it when that offer comes. My
// tracks go on it then too, with the room's caps and codec order: the offer's m-lines take them
// (a track added before a remote offer goes on its first m-line of that kind, JSEP section
// 5.10), so the answer makes none of those calls, each of which waited 1-33 ms for the busy
// WebRTC thread on its way (docs/benchmarks.md, "2026-12-05 (3)").
const warm = new Map();  // identity -> RTCPeerConnection not yet a Peer's
export function warmPeer(identity) {
  if (state.topology !== "p2p" || identity === state.identity || peers.has(identity)
      || warm.has(identity)) return;
  const pc = new RTCPeerConnection(iceConfig(startPath()));
  if (localMediaOpen()) {
    for (const [t, s] of myTracks()) pc.addTrack(t, s);
    if (state.config) configure(pc, state.config);
  }
  warm.set(identity, pc);
}
export function dropWarm(identity) {
  for (const id of identity === undefined ? [...warm.keys()] : [identity]) {
    warm.get(id)?.close(); warm.delete(id);
  }
}
// the warm connection, unless it is spent or carries tracks I no longer send (a device switched)
function takeWarm(identity) {
  const pc = warm.get(identity);
  warm.delete(identity);
  const mine = myTracks().map(([t]) => t);
  if (pc?.signalingState === "stable" && pc.getSenders().every((x) => mine.includes(x.track))) return pc;
  pc?.close();
  return null;
}
// My standing offer (docs/signaling.md, "Standing offers"): a connection to whoever joins next,
// with my tracks, described and gathered while no one is joining; the server hands its offer to
// the next newcomer in its "joined", and tells me so in "participant.joined" (standing: true),
// when the connection waits for that newcomer's answer (answering); the next is made shortly
// after that newcomer is connected (or STAND_AFTER_MS after the hand-over, if sooner). A
// newcomer then neither makes an offer nor waits for one to be answered: a p2p join's path
// loses the offer's description and the answering page's work (bench/join_time, 2026-12-05
// (4)). Made a while after my own join, off the cores a join in progress needs; none for the
// test hooks that filter candidates per peer (blockDirect) or for relay-only pages.
const STAND_AFTER_MS = 1500;
const STAND_AGAIN_MS = 300;   // after the last one's connection is up
let standing = null;  // RTCPeerConnection whose offer the server holds (or is being sent)
let standTimer = null;
const answering = new Map();  // identity -> my standing connection, handed to that newcomer
export function standLater(ms = STAND_AFTER_MS) {
  clearTimeout(standTimer);
  standTimer = setTimeout(stand, ms);
}
async function stand() {
  const wanted = () => !standing && state.room && state.topology === "p2p"
    && !opts.relay && !opts.blockDirect.size;
  if (!wanted()) return;
  await ensureLocalMedia();
  if (!wanted()) return;
  const pc = standing = new RTCPeerConnection(iceConfig("direct"));
  if (local.stream) for (const t of local.stream.getTracks()) pc.addTrack(t, local.stream);
  receiveBoth(pc);
  if (state.config) configure(pc, state.config);
  await pc.setLocalDescription();
  await gathered(pc, 1000);  // every candidate in the offer: no one to trickle them to yet
  if (standing !== pc) return;  // dropped meanwhile (I left, the room moved to a call server)
  send({ type: "offer.standing", sdp: withStartBitrate(pc.localDescription.sdp, startKbps()),
         sources: local.sources });
}
// the newcomer the server gave my standing offer to: its answer comes to this connection
export function handOver(identity) {
  if (!standing) return;
  answering.get(identity)?.close();
  answering.set(identity, standing);
  standing = null;
  standLater();  // at the latest: at once when that newcomer's connection is up (Peer)
}
// no more standing offer (I leave, the room moves to a call server)
export function dropStanding() {
  clearTimeout(standTimer);
  standing?.close(); standing = null;
  for (const pc of answering.values()) pc.close();
  answering.clear();
}
// my standing connection handed to this newcomer, with the tracks I send now (a device
// switched since it was made) and my screen, if shared (added: it renegotiates once answered)
function takeAnswering(identity) {
  const pc = answering.get(identity);
  answering.delete(identity);
  if (!pc || pc.signalingState !== "have-local-offer") { pc?.close(); return null; }
  for (const sender of pc.getSenders()) {
    const now = local.stream?.getTracks().find((t) => t.kind === sender.track?.kind);
    if (sender.track && now && now !== sender.track) sender.replaceTrack(now).catch(() => {});
  }
  for (const t of local.screen?.getTracks() || []) pc.addTrack(t, local.screen);
  return pc;
}
function gathered(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

// The stream a camera and microphone still opening are sent in (Peer.mediaToCome),
// announced as the camera: the tracks put on its senders later show in that tile at the other end.
let toCome = null;
function cameraToCome() {
  if (!toCome) { toCome = new MediaStream(); local.sources[toCome.id] = "camera"; }
  return toCome;
}

const candType = (line) => (/ typ (\w+)/.exec(line || "") || [])[1];
function stripDirect(sdp) {
  return sdp.split("\r\n").filter((l) => !l.startsWith("a=candidate:")
    || candType(l) === "relay").join("\r\n");
}

// The bitrate the other end starts sending me video at. Chromium starts every connection at 300
// kbit/s, audio included, and its encoder drops the first frames of a camera bigger than 320x240
// while its share is under 300 kbit/s (libwebrtc's initial frame dropper): up to four frames,
// 130 ms, then it starts smaller. In 1 of 3 cold p2p joins that held the first picture 100-170
// ms after "connected" (bench/join_time, 2026-12-05 (4)). The room's link estimate, at most
// START_KBPS, is the start instead; the bandwidth estimate takes over from there as before.
const START_KBPS = 800;
const startKbps = () => Math.min(START_KBPS, state.config?.bandwidthKbps || START_KBPS);
const VIDEO_CODECS = ["VP8", "VP9", "H264", "AV1"];
// x-google-start-bitrate on every video codec's format line of an SDP I send (the receiver of
// it applies it to what it sends me)
function withStartBitrate(sdp, kbps) {
  const param = `x-google-start-bitrate=${kbps}`;
  return sdp.split(/(?=\r\nm=)/).map((section) => {
    if (!section.startsWith("\r\nm=video")) return section;
    const pts = [...section.matchAll(/\r\na=rtpmap:(\d+) ([\w-]+)\//g)]
      .filter((m) => VIDEO_CODECS.includes(m[2].toUpperCase())).map((m) => m[1]);
    let out = section;
    for (const pt of pts) {
      const fmtp = new RegExp(`(\\r\\na=fmtp:${pt} [^\\r]*)`);
      out = fmtp.test(out) ? out.replace(fmtp, `$1;${param}`)
        : out.replace(new RegExp(`(\\r\\na=rtpmap:${pt} [^\\r]*)`), `$1\r\na=fmtp:${pt} ${param}`);
    }
    return out;
  }).join("");
}

// Peers (perfect negotiation, https://w3c.github.io/webrtc-pc/#perfect-negotiation-example)
export class Peer {
  // pooled: false for a connection that answers an offer at once (a standing one): a pool still
  // gathering when the answer is described gave a connection with no candidate at all in 1 of
  // 12 joins (and 2 of 30 on 2026-12-03): its pair could only fall back, after 4 s
  constructor(identity, name, pooled = true) {
    this.id = identity; this.name = name;
    this.polite = state.identity > identity;
    this.makingOffer = false; this.ignoreOffer = false;
    this.remoteSources = {}; this.trackSources = {};
    this.blocked = opts.blockDirect.has(identity);
    this.path = this.icePath = startPath();
    this.fallback = { path: this.path, reason: null, startedAt: performance.now(),
                      escalatedAt: null, connectedAt: null, drops: 0, restarts: 0 };
    this.dropTimes = []; this.timer = null;
    const offered = takeAnswering(identity);
    this.fromStanding = !!offered;  // my standing offer's: the next is made once it is up
    const warmed = offered || takeWarm(identity);
    this.pc = warmed || new RTCPeerConnection(iceConfig(this.path, pooled ? 1 : 0));
    // a warm or standing connection with my tracks on it: the answer carries them as they are,
    // and the config is applied again once stable (it may have changed: the newcomer's codecs)
    this.tracksAdded = this.configureAfterAnswer = !!warmed?.getSenders().length;
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate && this.blocked && candidate.type !== "relay") return;
      send({ type: "ice", to: this.id, candidate: candidate ? candidate.toJSON() : null });
    };
    this.pc.ontrack = (e) => this.onTrack(e);
    this.pc.onconnectionstatechange = () => {
      setConn(this.id, this.pc.connectionState); renderRoster(); this.watch();
      // the next standing offer once this one's media flows, not while it starts (its first
      // frame and the next description would share the cores)
      if (this.fromStanding && this.pc.connectionState === "connected") standLater(STAND_AGAIN_MS);
    };
    // An offer being made (a newcomer's first, rooms.js) covers the change: the browser asks
    // again on the return to stable if one is still needed.
    this.pc.onnegotiationneeded = () => { if (!this.makingOffer) this.negotiate(); };
    // The connect deadline counts from the end of the first offer/answer (iceStarted), when
    // ICE checks can begin: a slow page or signaling round trip is not a blocked path. This
    // longer one only covers a negotiation that never completes.
    this.arm(3 * WATCH.connectMs, "connect_timeout");
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
    const session = this.pairSfu = new SfuSession(++server.generation, {
      iceServers: state.iceServers, relay: false,
      sourceOf: (track) => (local.screen?.getTracks().includes(track) ? "screen" : "camera"),
      onTrack: (identity, source, track) =>
        session === this.pairSfu && identity === this.id && sfuTrack(identity, source, track, session),
      onState: (st) => {
        if (session !== this.pairSfu) return;
        if (st === "connected") this.fallback.connectedAt = performance.now();
        setConn(this.id, st); renderRoster();
      },
      onFailed: () => session === this.pairSfu && this.startPairSfu("ice_failed"),
    });
    const offer = await session.offer([local.stream, local.screen].filter(Boolean), { audio: 1, video: 1 });
    if (session !== this.pairSfu) return;
    send({ type: "sfu.join", id: session.ref, pair: this.id, early: true, ...offer });
  }

  usePath(path) {
    this.path = this.icePath = path;
    // the pool's size cannot change once described (it differs: a standing offer's answer)
    this.pc.setConfiguration(iceConfig(path, this.pc.getConfiguration().iceCandidatePoolSize));
  }

  addLocalTracks() {
    for (const [t, s] of myTracks()) this.pc.addTrack(t, s);
    if (!localMediaOpen()) this.mediaToCome();
    receiveBoth(this.pc);
    this.applyConfig();
  }

  // A newcomer's offer or answer does not wait for its camera and microphone (a real camera
  // takes 0.2-1 s to open; the fake one here was still opening at "joined" in half the joins
  // of bench/join_time, 30 ms on median): their senders go without tracks and get them when
  // open (replaceTrack: no renegotiation), as a call-server join does (SfuSession.attach). An
  // answer turns the offer's m-line of each kind into a sender, an offer adds one per kind.
  // Meanwhile the other's video comes in. A kind refused stays a sender with nothing to send.
  mediaToCome() {
    const answer = this.pc.signalingState === "have-remote-offer";
    const awaiting = ["audio", "video"].filter((k) => opts[k]).map((kind) => {
      if (!answer) return this.pc.addTransceiver(kind, { direction: "sendrecv", streams: [cameraToCome()] });
      const tr = this.pc.getTransceivers().find((t) => t.receiver.track.kind === kind
        && t.mid !== null && !t.sender.track && t.direction === "recvonly");
      if (!tr) return null;
      tr.direction = "sendrecv";
      tr.sender.setStreams(cameraToCome());
      return tr;
    }).filter(Boolean);
    ensureLocalMedia().then(async () => {
      for (const tr of awaiting) {
        const track = local.stream?.getTracks().find((t) => t.kind === tr.receiver.track.kind);
        if (!track || this.pc.signalingState === "closed") continue;
        await tr.sender.replaceTrack(track).catch((err) => log("attach", err));
      }
      if (state.config && this.pc.signalingState !== "closed") limitSenders(this.pc, state.config);
    });
  }

  async negotiate() {
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      send({ type: "offer", to: this.id, sdp: this.outSdp(), sources: local.sources,
             path: this.wirePath() });
    } catch (err) { log("negotiation failed", err); } finally { this.makingOffer = false; }
  }

  wirePath() { return this.icePath === "relay" ? "relay" : "direct"; }
  outSdp() {
    const sdp = withStartBitrate(this.pc.localDescription.sdp, startKbps());
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
      // an answer carries my tracks on the offer's own m-lines (or theirs to come: mediaToCome)
      if (!this.tracksAdded) { this.tracksAdded = true; this.addLocalTracks(); }
      await this.pc.setLocalDescription();
      send({ type: "answer", to: this.id, sdp: this.outSdp(), sources: local.sources,
             path: this.wirePath() });
    }
    if (this.configureAfterAnswer && this.pc.signalingState === "stable") {
      this.configureAfterAnswer = false; this.applyConfig();
    }
    this.iceStarted();
  }

  // Both descriptions are set for the first time: ICE checks start now, so does the deadline.
  iceStarted() {
    if (this.negotiated) return;
    this.negotiated = true;
    if (this.fallback.escalatedAt === null && this.pc.connectionState !== "connected") {
      this.arm(WATCH.connectMs, "connect_timeout");
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
    if (source === "screen" && !stream.onremovetrack) {
      // the sharer stopped: its renegotiation removes the track from the stream
      stream.onremovetrack = () => {
        if (!stream.getTracks().length && !this.pairSfu) removeTile(this.id, "screen");
      };
    }
  }

  applyConfig() {
    const cfg = state.config;
    if (!cfg) return;
    configure(this.pc, cfg);
    if (this.pairSfu) limitSenders(this.pairSfu.pc, cfg);
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

export function peerFor(identity, name, pooled = true) {
  let peer = peers.get(identity);
  if (!peer) {
    peer = new Peer(identity, name || state.participants[identity]?.name || identity, pooled);
    peers.set(identity, peer);
  }
  return peer;
}

export function dropPeer(identity) {
  dropWarm(identity);
  answering.get(identity)?.close(); answering.delete(identity);
  peers.get(identity)?.close();
  peers.delete(identity);
  delete state.participants[identity];
  removeTiles(identity);
  renderRoster();
}

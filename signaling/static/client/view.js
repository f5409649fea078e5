// What the meeting shows: the grid or speaker layout, a screen share on the stage, the active
// speaker (from the receivers' audio levels), my own tile while I speak (my microphone's level,
// same rule), each tile's link quality (RTT and loss) and quality badge (received height).
import { $, local, peers, server, state } from "./core.js";
import { setLink, showQuality, tileId } from "./tiles.js";

export const view = { layout: "grid" };  // "grid" | "speaker"

export function setLayout(layout) {
  view.layout = layout;
  arrange();
  return layout;
}

// The stage: a screen share first, else (speaker layout) the active speaker or the first
// remote camera. CSS `order` puts it first: moving a playing <video> in the DOM would restart it.
export function arrange() {
  const tiles = $("#tiles");
  if (!tiles) return;
  tiles.dataset.layout = view.layout;
  const all = [...tiles.querySelectorAll(".tile")];
  const speaker = state.activeSpeaker && document.getElementById(tileId(state.activeSpeaker, "camera"));
  const stage = all.find((t) => t.dataset.source === "screen")
    || (view.layout === "speaker"
      ? speaker || all.find((t) => !t.classList.contains("self")) || all[0] : null);
  for (const t of all) t.classList.toggle("stage", t === stage);
  tiles.dataset.stage = stage ? "on" : "off";
}

// ---- active speaker and link quality, from one getStats() per connection per tick -----------
// The level of each remote microphone is its RMS over the last tick, from the inbound audio
// stats (totalAudioEnergy / totalSamplesDuration): short sounds count, unlike a sampled level.
const SPEAKING = 0.02;     // RMS (0..1) above which someone is talking
const TICK_MS = 500;
const LINK_EVERY = 4;      // link quality every 4th tick (2 s)
const levels = new Map();  // identity -> smoothed level
const energy = new Map();  // inbound-rtp stats id -> {e, d} at the last tick
const lastCounts = new WeakMap();  // pc -> {lost, received} at the last link sample
let tick = 0;

// [pc, identities it carries]: a mesh pair (or its call-server fallback) or the room's call server
function connections() {
  const out = [];
  for (const peer of peers.values()) out.push([(peer.pairSfu || peer).pc, [peer.id]]);
  if (server.sfu) out.push([server.sfu.pc, Object.keys(state.participants)]);
  return out;
}

function linkQuality(pc, report) {
  let rtt = null; let lost = 0; let received = 0;
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded"
        && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime * 1000;
    if (s.type === "inbound-rtp") { lost += s.packetsLost || 0; received += s.packetsReceived || 0; }
  });
  const was = lastCounts.get(pc) || { lost: 0, received: 0 };
  lastCounts.set(pc, { lost, received });
  const dl = Math.max(0, lost - was.lost); const dr = Math.max(0, received - was.received);
  const loss = dl + dr > 0 ? dl / (dl + dr) : 0;
  const quality = loss > 0.05 || rtt > 400 ? "poor" : loss > 0.01 || rtt > 200 ? "fair" : "good";
  return { quality, detail: `${rtt === null ? "" : `${Math.round(rtt)} ms, `}${(loss * 100).toFixed(1)}% loss` };
}

// The call server's last layer decision for a received track (its quality badge), if any.
function layerOf(track) {
  const sessions = [server.sfu, ...[...peers.values()].map((p) => p.pairSfu)].filter(Boolean);
  for (const session of sessions) {
    const tr = session.pc.getTransceivers().find((t) => t.receiver.track === track);
    const sec = tr && session.remote[tr.mid];
    if (sec) return session.layer(sec.stream, sec.track);
  }
  return null;
}

const rms = (key, s) => {
  const e = s.totalAudioEnergy || 0; const d = s.totalSamplesDuration || 0;
  const was = energy.get(key) || { e, d };
  energy.set(key, { e, d });
  return d > was.d ? Math.sqrt(Math.max(0, e - was.e) / (d - was.d)) : null;
};

async function sample() {
  const byTrack = new Map();
  const heights = new Map();  // received video track id -> frame height
  const links = ++tick % LINK_EVERY === 0;
  const myAudio = local.stream?.getAudioTracks()[0];
  let mine = null;  // my microphone's level, from the audio source stats of one connection
  let seenMine = false;
  for (const [pc, who] of connections()) {
    if (pc.connectionState === "closed") continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "media-source" && s.kind === "audio" && !seenMine
          && s.trackIdentifier === myAudio?.id) {
        seenMine = true; mine = rms("self", s);
      }
      if (s.type !== "inbound-rtp") return;
      if (s.kind === "video") { if (s.frameHeight) heights.set(s.trackIdentifier, s.frameHeight); return; }
      if (s.kind !== "audio") return;
      const level = rms(s.id, s);
      if (level !== null) byTrack.set(s.trackIdentifier, level);
    });
    if (links && pc.connectionState === "connected") {
      const q = linkQuality(pc, report);
      for (const id of who) setLink(id, q.quality, q.detail);
    }
  }
  let best = null;
  for (const tile of document.querySelectorAll(".tile")) {
    const who = tile.dataset.participant;
    if (who === state.identity) continue;
    const video = tile.querySelector("video").srcObject?.getVideoTracks?.()[0];
    if (video && heights.has(video.id)) {
      const layer = layerOf(video);
      showQuality(tile, { height: heights.get(video.id), transcoded: !!layer?.transcoded, layer });
    }
    if (tile.dataset.source !== "camera") continue;
    const track = tile.querySelector("video").srcObject?.getAudioTracks?.()[0];
    const level = Math.max(byTrack.get(track?.id) || 0, (levels.get(who) || 0) * 0.5);
    levels.set(who, level);
    if (level > SPEAKING && (!best || level > levels.get(best))) best = who;
  }
  // my own tile: the same rule on my microphone's level (silence while muted)
  const me = state.identity;
  const myLevel = state.media.audio ? Math.max(mine || 0, (levels.get(me) || 0) * 0.5) : 0;
  levels.set(me, myLevel);
  document.getElementById(tileId(me, "camera"))?.classList.toggle("speaking", myLevel > SPEAKING);
  // keep the current speaker until someone is clearly louder or they stop
  const current = state.activeSpeaker;
  if (current && levels.get(current) > SPEAKING && best && levels.get(best) < 1.5 * levels.get(current)) {
    best = current;
  }
  if (best !== current) {
    state.activeSpeaker = best;
    for (const t of document.querySelectorAll(".tile.speaking:not(.self)")) t.classList.remove("speaking");
    if (best) document.getElementById(tileId(best, "camera"))?.classList.add("speaking");
    arrange();
  }
}

export function startView() {
  let busy = false;
  setInterval(() => {
    if (busy || !state.room) return;
    busy = true;
    sample().catch(() => {}).finally(() => { busy = false; });
  }, TICK_MS);
}

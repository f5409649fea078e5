// Local media: camera and microphone (with the devices picked in the prejoin screen or the
// meeting's device menu, switched mid-call), screen share (start and stop), the mute / camera
// toggles; capture.js opens the devices and tells the capabilities announced to signaling (so
// early.js can join before this module is loaded). A refused, missing or unplugged device
// never stops a join or a meeting: the page goes on with what it has and says so.
import { local, log, opts, peers, send, server, state } from "./core.js";
import { KINDS, acquire, capabilities, ensureLocalMedia, openCamera } from "./capture.js";
import { addTile, markMedia, removeTile, tileId } from "./tiles.js";

// prejoin.js, rooms.js and parley.js take them from here
export { acquire, capabilities, ensureLocalMedia, openCamera };

// Every connection that may carry my tracks: mesh pairs, a pair's call-server fallback, the
// room's call-server session.
function connections() {
  const out = [];
  for (const peer of peers.values()) out.push(peer.pc, ...(peer.pairSfu ? [peer.pairSfu.pc] : []));
  if (server.sfu) out.push(server.sfu.pc);
  return out.filter((pc) => pc.signalingState !== "closed");
}

// Switch one kind to the device picked (prejoin or the meeting's device menu); null: the
// default. The new track takes the old one's place on every sender (replaceTrack: no
// renegotiation, the others keep decoding) and keeps its mute / camera-off state.
export async function switchDevice(kind, deviceId) {
  opts.devices[KINDS[kind]] = deviceId;
  if (!local.stream) return false;
  const old = kind === "audio" ? local.stream.getAudioTracks() : local.stream.getVideoTracks();
  const [track] = await acquire([kind]);
  if (!track) return false;  // refused or gone: the old track (if any) stays
  track.enabled = old.length ? old[0].enabled : (kind === "audio" ? !opts.muted : !opts.cameraOff);
  for (const pc of connections()) {
    for (const sender of pc.getSenders()) {
      if (old.includes(sender.track)) await sender.replaceTrack(track);
    }
  }
  for (const t of old) { t.stop(); local.stream.removeTrack(t); }
  local.stream.addTrack(track);
  watchEnded(track);
  refreshSelfTile();
  window.dispatchEvent(new CustomEvent("parley:devices", { detail: { kind, track } }));
  return true;
}

function refreshSelfTile() {
  const video = document.getElementById(tileId(state.identity, "camera"))?.querySelector("video");
  if (video && local.stream) { video.srcObject = null; video.srcObject = local.stream; video.play().catch(() => {}); }
}

// The speaker: every remote tile plays through it (setSinkId; Chromium only).
export async function setSpeaker(deviceId) {
  opts.devices.audiooutput = deviceId;
  for (const v of document.querySelectorAll(".tile:not(.self) video")) {
    if (v.setSinkId) await v.setSinkId(deviceId || "").catch((err) => log("setSinkId", err.name));
  }
}

// A device unplugged: its track ends (or enumerateDevices loses it). The page falls back to the
// default device of that kind, says so, and never leaves the meeting.
const watched = new WeakSet();
const fallingBack = new Set();  // kinds being replaced now: an ended track and devicechange agree
function watchEnded(track) {
  if (watched.has(track)) return;
  watched.add(track);
  track.addEventListener("ended", () => {
    if (!local.stream?.getTracks().includes(track)) return;  // replaced or left on purpose
    fallBack(track.kind);
  });
}
async function fallBack(kind) {
  if (fallingBack.has(kind)) return;
  fallingBack.add(kind);
  const name = kind === "audio" ? "microphone" : "camera";
  log(`${name} gone: falling back to the default`);
  const ok = await switchDevice(kind, null).catch(() => false);
  fallingBack.delete(kind);
  window.dispatchEvent(new CustomEvent("parley:device-lost", { detail: { kind, ok,
    message: ok ? `The ${name} was disconnected: using the default ${name}.`
      : `The ${name} was disconnected and no other was found.` } }));
}
export function watchDevices() {
  for (const t of local.stream?.getTracks() || []) watchEnded(t);
  navigator.mediaDevices.addEventListener?.("devicechange", async () => {
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => null);
    if (!devices || !local.stream) return;
    for (const t of local.stream.getTracks()) {
      const id = t.getSettings().deviceId;
      if (t.readyState === "ended" || (id && !devices.some((d) => d.deviceId === id))) fallBack(t.kind);
    }
    window.dispatchEvent(new CustomEvent("parley:devices", { detail: { devices } }));
  });
}

let shown = null;
export function showLocalMedia() {
  shown = shown || (async () => {
    addTile(state.identity, "camera", opts.name + " (you)", local.stream || new MediaStream(), true);
    markMedia(state.identity, state.media);
    watchDevices();
    if (opts.screen) await startScreen();
  })();
  return shown;
}

function canvasScreen() {
  // Headless Chromium has no desktop to capture: a drawn canvas stands in for the screen.
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 360;
  const ctx = canvas.getContext("2d");
  let n = 0;
  const timer = setInterval(() => {
    ctx.fillStyle = `hsl(${(n * 3) % 360} 60% 40%)`; ctx.fillRect(0, 0, 640, 360);
    ctx.fillStyle = "white"; ctx.font = "32px sans-serif";
    ctx.fillText(`screen of ${opts.name} #${n++}`, 20, 180);
  }, 66);
  const stream = canvas.captureStream(15);
  stream.drawTimer = timer;
  return stream;
}

export async function startScreen() {
  if (local.screen) return;
  try {
    local.screen = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (err) {
    log("getDisplayMedia failed, using canvas fallback:", err.name);
    local.screen = canvasScreen();
  }
  const screen = local.screen;
  const track = screen.getVideoTracks()[0];
  track.addEventListener("ended", () => stopScreen());  // the browser's own "Stop sharing"
  local.sources[screen.id] = "screen";
  addTile(state.identity, "screen", opts.name + " (your screen)", screen, true);
  for (const peer of peers.values()) peer.pc.addTrack(track, screen);
  if (server.sfu) {  // the call server offers an m-line for it; the answer attaches the track
    server.sfu.publish(track, screen);
    send({ type: "sfu.publish", kinds: ["video"] });
  }
  for (const peer of peers.values()) {
    if (!peer.pairSfu) continue;
    peer.pairSfu.publish(track, screen);
    send({ type: "sfu.publish", kinds: ["video"], pair: peer.id });
  }
  window.dispatchEvent(new CustomEvent("parley:screen", { detail: { sharing: true } }));
}

// Stop sharing (the button, or the browser's bar): the track ends, every mesh peer loses it by
// renegotiation (its tile goes on the removetrack), the call server is told (sfu.unpublish:
// the others' copies end, sfu.unpublished) and the stage goes back to the layout.
export function stopScreen() {
  const screen = local.screen;
  if (!screen) return;
  local.screen = null;
  const track = screen.getVideoTracks()[0];
  for (const t of screen.getTracks()) t.stop();
  clearInterval(screen.drawTimer);
  for (const peer of peers.values()) {
    const sender = peer.pc.getSenders().find((s) => s.track === track);
    if (sender && peer.pc.signalingState !== "closed") peer.pc.removeTrack(sender);
    const announced = peer.pairSfu?.unpublish(track);
    if (announced) send({ type: "sfu.unpublish", track: announced, pair: peer.id });
  }
  const announced = server.sfu?.unpublish(track);
  if (announced) send({ type: "sfu.unpublish", track: announced });
  delete local.sources[screen.id];
  removeTile(state.identity, "screen");
  window.dispatchEvent(new CustomEvent("parley:screen", { detail: { sharing: false } }));
}

// Mute / camera off: the track stays (no renegotiation), disabled; everyone's tile shows it.
export function toggle(kind) {
  if (!local.stream) return false;
  const tracks = kind === "audio" ? local.stream.getAudioTracks() : local.stream.getVideoTracks();
  for (const t of tracks) t.enabled = !t.enabled;
  state.media[kind] = tracks.some((t) => t.enabled);
  send({ type: "media", [kind]: state.media[kind] });
  markMedia(state.identity, state.media);
  window.dispatchEvent(new CustomEvent("parley:media", { detail: state.media }));
  return state.media[kind];
}

// The page's options (from its URL), the automation switch, the state every module shares and
// the WebSocket's send. Everything else in client/ imports from here.

export const params = new URLSearchParams(location.search);

// Test-only hooks (blockDirect, connectTimeout, stats() and the other probes on window.parley)
// exist only under automation: a browser driven by WebDriver/CDP (navigator.webdriver, as
// Playwright's Chromium is) or an explicit ?automation=1 (docs/signaling.md, "Web client").
export const automation = params.get("automation") === "1" || navigator.webdriver === true;

const stored = (key) => { try { return localStorage.getItem(key); } catch { return null; } };
export function remember(key, value) {
  try { localStorage.setItem(key, value); } catch { /* private mode: forgotten */ }
}

export const opts = {
  name: params.get("name") || stored("parley.name") || "Guest",
  // A token the deployment minted for this user (its login, or `parley token`), handed over in
  // the fragment (#token=...) so it never reaches a server log; without one the page is a guest.
  token: new URLSearchParams(location.hash.slice(1)).get("token") || undefined,
  audio: params.get("audio") !== "0",   // open the microphone at all
  video: params.get("video") !== "0",   // open the camera at all
  muted: false, cameraOff: false,       // opened, but the track starts disabled (prejoin)
  devices: { audioinput: stored("parley.mic"), videoinput: stored("parley.camera"),
             audiooutput: stored("parley.speaker") },
  screen: params.get("screen") === "1",
  topology: params.get("topology") || "auto",
  relay: params.get("relay") === "1",
  autoAnswer: params.get("autoAnswer") === "1",
  bandwidthKbps: params.get("bw") ? Number(params.get("bw")) : undefined,
  width: Number(params.get("w")) || 640, height: Number(params.get("h")) || 480,
  fps: Number(params.get("fps")) || undefined,
  // Test hook modelling a firewall between this page and these identities: no direct (host,
  // srflx, prflx) candidates are exchanged with them, only relay ones (docs/signaling.md).
  blockDirect: new Set(automation ? (params.get("blockDirect") || "").split(",").filter(Boolean) : []),
  // Test hook modelling a device that decodes only these video codecs (e.g. "h264"): every video
  // m-line of its call-server session lists only them, so the call server transcodes for it.
  videoCodecs: automation ? (params.get("videoCodecs") || "").split(",").filter(Boolean) : [],
  // The codec the camera is published in on a call server: "vp9" or "av1" (simulcast, L1T1 per
  // layer), else VP8; every other codec stays announced for receiving.
  sendCodec: ["vp8", "vp9", "av1"].includes(params.get("sendCodec")) ? params.get("sendCodec") : undefined,
};

// P2P fallback watchdog (docs/signaling.md, "P2P fallback"), per peer pair, milliseconds.
export const WATCH = {
  connectMs: (automation && Number(params.get("connectTimeout"))) || 4000,  // not connected: escalate
  disconnectedMs: 3000,  // "disconnected" this long: escalate
  drops: 3, dropWindowMs: 60000,  // this many connected->disconnected drops in the window
  // Nothing at all (RTP, RTCP, STUN) received on the pair this long while "connected": the path
  // is gone. Chromium's own "disconnected" comes several seconds later.
  stallMs: 2500, statsMs: 1000,
};

export const pathRoom = location.pathname.startsWith("/m/")
  ? decodeURIComponent(location.pathname.slice(3)) : null;

export const $ = (sel) => document.querySelector(sel);

export const state = {
  status: "starting", identity: null, room: null, topology: null, error: null,
  config: null, iceServers: [], participants: {}, calls: {}, incoming: null, activeCall: null,
  messages: [],
  media: { audio: true, video: true, hand: false },  // what I send (toggles) and my raised hand
  mediaError: null,       // {code, message}: camera/microphone refused or missing
  activeSpeaker: null,    // identity of the loudest remote participant, from audio levels
};

export const peers = new Map();    // identity -> Peer (mesh.js)
export const local = {
  stream: null,                    // camera + microphone
  screen: null,                    // screen share (or its canvas fallback)
  sources: {},                     // my stream id -> "camera" | "screen"
};
export const server = { sfu: null, generation: 0 };  // the room's SfuSession on a call server
export const socket = { ws: null, held: null };  // held: early.js's {ws, queue, closed, info}

export function log(...args) { console.log("[parley]", ...args); }
export function setStatus(s) { state.status = s; const el = $("#status"); if (el) el.textContent = s; }
export function showError(code, message) {
  state.error = { code, message };
  const el = $("#error"); if (el) { el.textContent = `${code}: ${message}`; el.hidden = false; }
}
export function send(msg) {
  if (socket.ws && socket.ws.readyState === WebSocket.OPEN) socket.ws.send(JSON.stringify(msg));
}
// A signaling message to the page's other modules (and add-ons such as parley-chat.js).
export function emit(name, detail) { window.dispatchEvent(new CustomEvent(name, { detail })); }

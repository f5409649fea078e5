// The page's options (from its URL), the automation switch, the state every module shares and
// the WebSocket's send. Everything else in client/ imports from here.

// The page's options, the automation switch and the room in the path come from boot.js (a
// classic script that runs before any module and may already be joining with them).
const boot = window.parleyBoot;
export const { params, automation, opts, pathRoom } = boot;

export function remember(key, value) {
  try { localStorage.setItem(key, value); } catch { /* private mode: forgotten */ }
}

// P2P fallback watchdog (docs/signaling.md, "P2P fallback"), per peer pair, milliseconds.
export const WATCH = {
  connectMs: (automation && Number(params.get("connectTimeout"))) || 4000,  // not connected: escalate
  disconnectedMs: 3000,  // "disconnected" this long: escalate
  drops: 3, dropWindowMs: 60000,  // this many connected->disconnected drops in the window
  // Nothing at all (RTP, RTCP, STUN) received on the pair this long while "connected": the path
  // is gone. Chromium's own "disconnected" comes several seconds later.
  stallMs: 2500, statsMs: 1000,
};

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

// The head start of a join (docs/benchmarks.md, "Join time"): a meeting link that joins at once
// (?name=) opens the WebSocket and camera and microphone as soon as this small module runs, an
// async module in room.html's head with only core.js and capture.js behind it, so while the rest
// of the client still loads; session.js takes the socket over and handles what arrived before it,
// in order. (The page's load event cannot wait on this early media: tiles.js gives a <video> its
// source only once the page has loaded.)
import { opts, params, pathRoom } from "./core.js";
import { openCamera } from "./capture.js";

// A WebSocket being opened with the deployment's token (#token=) or, for a guest, asking the
// server to make the guest identity itself (/ws?guest=1: no token round trip first; the welcome
// carries the token, for the HTTP API and its refresh). Its messages (and close) wait until
// session.js takes it: {ws, queue, closed}.
export function openSocket() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const enc = encodeURIComponent;
  const auth = opts.token ? `token=${enc(opts.token)}`
    : `guest=1&room=${enc(pathRoom || "lobby")}&name=${enc(opts.name)}`;
  const ws = new WebSocket(`${proto}://${location.host}/ws?${auth}`);
  const held = { ws, queue: [], closed: null };
  ws.onmessage = (e) => held.queue.push(e);
  ws.onclose = (e) => { held.closed = e; };
  return held;
}

export const early = { socket: null };
if (pathRoom && params.has("name")) {
  early.socket = openSocket();
  if (opts.audio || opts.video) openCamera();  // a refusal lands in state.mediaError, as later
}

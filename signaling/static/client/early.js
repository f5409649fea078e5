// The head start of a join (docs/benchmarks.md, "Join time"): for a meeting link that joins at
// once (?name=), boot.js has opened the WebSocket and asked for camera and microphone before any
// module ran; this small module (async, in room.html's head, with only core.js, capture.js and
// telemetry.js behind it) sends the join itself as soon as the socket is open, while the camera
// is still opening and the rest of the client still loads: the join's round trip and the room's
// answer no longer wait for the camera (the fake one took 100-130 ms here and was on the
// join's path in 97 % of call-server joins measured; a slower camera waits longer). session.js
// takes the socket over and handles what arrived before it (the welcome, then "joined"), in
// order, each handler waiting for the camera where it needs it; rooms.js sends no second join.
// (The page's load event cannot wait on this early media: tiles.js gives a <video> its source
// only once the page has loaded.)
import { opts, params, pathRoom, state } from "./core.js";
import { capabilities, ensureLocalMedia } from "./capture.js";
import { clientInfo } from "./telemetry.js";

// The WebSocket with its messages held for session.js (boot.js's openSocket); a page that
// joins at once has had one opening since boot.js ran.
export const { openSocket } = window.parleyBoot;

// The room's join (with what I will send, then the capabilities), as soon as the socket is open:
// the socket authenticated from its URL, so the welcome need not come first (the server reads
// nothing before it sends the welcome). What I send is announced as asked for; once the camera
// and microphone are there, what differs (a refused camera) follows as a media update, as a
// toggle would. True once sent; false when the socket closed first (a refusal: session.js shows
// its error).
async function joinAtOnce(held) {
  const open = held.ws.readyState !== WebSocket.CONNECTING  // boot.js's may be open already
    ? Promise.resolve(held.ws.readyState === WebSocket.OPEN)
    : new Promise((resolve) => {
      held.ws.addEventListener("open", () => resolve(true), { once: true });
      held.ws.addEventListener("close", () => resolve(false), { once: true });
    });
  if (!await open || held.ws.readyState !== WebSocket.OPEN) return false;
  const out = (msg) => held.ws.send(JSON.stringify(msg));
  // client.info first, as session.js sends it at the welcome: analytics labels a join with the
  // device and browser its connection announced before it (a join ahead of it counted under
  // no device: test_telemetry's report had one desktop join of two)
  if (!held.info) {  // once per connection: session.js sends it at the welcome otherwise
    held.info = true;
    out({ type: "client.info", info: clientInfo() });
  }
  const asked = { audio: opts.audio && !opts.muted, video: opts.video && !opts.cameraOff };
  out({ type: "media", ...asked });  // remembered for the join: others see it at once
  out({ type: "join", room: pathRoom, topology: opts.topology, ...(await capabilities()) });
  ensureLocalMedia().then(() => {
    const changed = Object.fromEntries(["audio", "video"]
      .filter((k) => state.media[k] !== asked[k]).map((k) => [k, state.media[k]]));
    if (Object.keys(changed).length && held.ws.readyState === WebSocket.OPEN) out({ type: "media", ...changed });
  });
  return true;
}

// socket: the held socket; join: resolves true once early.js sent the join (rooms.js then sends
// none), null for a page that joins later (the front page, the prejoin screen)
export const early = { socket: null, join: null };
if (pathRoom && params.has("name")) {
  early.socket = window.parleyBoot.held || openSocket();
  early.join = joinAtOnce(early.socket);  // a refused camera lands in state.mediaError, as later
}

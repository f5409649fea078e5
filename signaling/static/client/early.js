// The head start of a join (docs/benchmarks.md, "Join time"): a meeting link that joins at once
// (?name=) opens the WebSocket and camera and microphone as soon as this small module runs, an
// async module in room.html's head with only core.js and capture.js behind it, and sends the
// join itself once both are there, while the rest of the client still loads. session.js takes
// the socket over and handles what arrived before it (the welcome, then "joined"), in order;
// rooms.js sends no second join. (The page's load event cannot wait on this early media:
// tiles.js gives a <video> its source only once the page has loaded.)
import { opts, params, pathRoom, state } from "./core.js";
import { capabilities, ensureLocalMedia } from "./capture.js";
import { clientInfo } from "./telemetry.js";

// A WebSocket being opened with the deployment's token (#token=) or, for a guest, asking the
// server to make the guest identity itself (/ws?guest=1: no token round trip first; the welcome
// carries the token, for the HTTP API and its refresh). Its messages (and close) wait until
// session.js takes it: {ws, queue, closed, info} (info: client.info was sent on it).
export function openSocket() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const enc = encodeURIComponent;
  const auth = opts.token ? `token=${enc(opts.token)}`
    : `guest=1&room=${enc(pathRoom || "lobby")}&name=${enc(opts.name)}`;
  const ws = new WebSocket(`${proto}://${location.host}/ws?${auth}`);
  const held = { ws, queue: [], closed: null, info: false };
  ws.onmessage = (e) => held.queue.push(e);
  ws.onclose = (e) => { held.closed = e; };
  return held;
}

// The room's join (with what I send, then the capabilities), as soon as the socket is open and
// the camera and microphone are there: the socket authenticated from its URL, so the welcome
// need not come first (the server reads nothing before it sends the welcome). True once sent;
// false when the socket closed first (a refusal: session.js shows its error).
async function joinAtOnce(held) {
  const open = new Promise((resolve) => {
    held.ws.addEventListener("open", () => resolve(true), { once: true });
    held.ws.addEventListener("close", () => resolve(false), { once: true });
  });
  const [isOpen] = await Promise.all([open, ensureLocalMedia()]);
  if (!isOpen || held.ws.readyState !== WebSocket.OPEN) return false;
  const out = (msg) => held.ws.send(JSON.stringify(msg));
  // client.info first, as session.js sends it at the welcome: analytics labels a join with the
  // device and browser its connection announced before it (a join ahead of it counted under
  // no device: test_telemetry's report had one desktop join of two)
  if (!held.info) {  // once per connection: session.js sends it at the welcome otherwise
    held.info = true;
    out({ type: "client.info", info: clientInfo() });
  }
  out({ type: "media", ...state.media });  // remembered for the join: others see it at once
  out({ type: "join", room: pathRoom, topology: opts.topology, ...(await capabilities()) });
  return true;
}

// socket: the held socket; join: resolves true once early.js sent the join (rooms.js then sends
// none), null for a page that joins later (the front page, the prejoin screen)
export const early = { socket: null, join: null };
if (pathRoom && params.has("name")) {
  early.socket = openSocket();
  early.join = joinAtOnce(early.socket);  // a refused camera lands in state.mediaError, as later
}

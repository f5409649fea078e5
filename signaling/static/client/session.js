// The signaling session: a token (the deployment's, or a guest token from signaling, refreshed
// before it expires), the WebSocket, and the dispatch of every server message, one at a time.
import { emit, log, opts, pathRoom, peers, send, server, setStatus, showError, socket, state } from "./core.js";
import { joinRoom, onJoined } from "./rooms.js";
import { dropPeer, dropStanding, dropWarm, handOver, peerFor, warmPeer } from "./mesh.js";
import { onSfuMessage, startSfu } from "./callserver.js";
import { onCallMessage } from "./calls.js";
import { clientInfo, telemetry } from "./telemetry.js";
import { markMedia } from "./tiles.js";
import { renderRoster } from "./people.js";
import { early, openSocket } from "./early.js";

// The add-ons (parley-chat.js, parley-recording.js) are modules after parley.js: what is told
// them before they run and listen (a late joiner's chat history) waits for them, in order, until
// DOMContentLoaded or, on the meeting page, until start.js has loaded them; the client itself
// handles every message at once (the join it answers is on the path to the first frame; waiting
// for the page's last module cost it 20-80 ms, docs/benchmarks.md "Join time").
const addons = { ready: false, held: [] };
let addonsLoaded = null;  // the meeting page's add-ons, which start.js loads after parley.js
// start.js, as it runs (before DOMContentLoaded): the held messages wait for these add-ons
export function addonsAfter(loaded) { addonsLoaded = loaded; }
window.parleyBoot.loaded.then(() => addonsLoaded).catch(() => {}).then(() => {
  addons.ready = true;
  for (const [name, detail] of addons.held.splice(0)) emit(name, detail);
});
function tell(name, detail) {
  if (addons.ready) emit(name, detail); else addons.held.push([name, detail]);
}

async function onMessage(msg) {
  tell("parley:message", msg);  // for add-ons (parley-chat.js, parley-recording.js)
  state.messages.push(msg.type === "error" || msg.type === "sfu.layer" ? msg
    : { type: msg.type, callId: msg.callId, reason: msg.reason });
  if (state.messages.length > 500) state.messages.shift();
  switch (msg.type) {
    case "welcome":
      state.identity = msg.identity; state.iceServers = msg.iceServers;
      if (msg.token) state.token = msg.token;  // a guest the socket made (/ws?guest=1)
      state.expiresAt = msg.expiresAt; scheduleRefresh(msg.expiresIn, msg.guest);
      state.instance = msg.instance; state.guest = !!msg.guest;
      telemetry.intervalMs = msg.telemetryIntervalMs || 10000;
      if (!socket.held.info) {  // once per connection: early.js may have sent it first
        socket.held.info = true;
        send({ type: "client.info", info: clientInfo() });
      }
      setStatus("connected");
      tell("parley:welcome", msg);
      if (pathRoom) await joinRoom(pathRoom);  // the front page opens no camera before a call
      break;
    case "joined": await onJoined(msg); break;
    case "token.refreshed":
      state.expiresAt = msg.expiresAt; state.refreshes = (state.refreshes || 0) + 1;
      scheduleRefresh(msg.expiresIn, true); break;
    case "participant.joined":
      state.participants[msg.participant.identity] = msg.participant;
      // the newcomer answers my standing offer, or its own offer follows
      if (msg.standing) handOver(msg.participant.identity); else warmPeer(msg.participant.identity);
      markMedia(msg.participant.identity, msg.participant); renderRoster(); break;
    case "participant.left": dropPeer(msg.identity); break;
    case "participant.media": {
      const p = state.participants[msg.identity];
      if (p) {
        for (const k of ["audio", "video", "hand"]) if (msg[k] !== undefined) p[k] = msg[k];
      }
      markMedia(msg.identity, msg); renderRoster(); break;
    }
    case "config":
      state.config = msg; for (const p of peers.values()) p.applyConfig();
      break;
    case "sfu.start":
      if (msg.pair) await onSfuMessage(msg);
      else if (state.room === msg.room) { dropWarm(); dropStanding(); await startSfu(msg.reason); }
      break;
    case "sfu.joined": case "sfu.offer": case "sfu.layer": case "sfu.layers":
    case "sfu.unpublished":
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
      if (["sfu_unavailable", "room_full_p2p"].includes(msg.code) && !server.sfu) {
        state.room = null; setStatus("refused: " + msg.code);
      }
      break;
    default:
      if (msg.type.startsWith("call.")) onCallMessage(msg);
  }
}

// A fresh guest token for the same guest (docs/signaling.md, "Token expiry and refresh"), with
// the current one as bearer: {token} or {code, message}.
async function guestToken(current) {
  let resp;
  try {
    resp = await fetch("/api/v1/guest-token", {
      method: "POST", body: "{}",
      headers: { "content-type": "application/json", authorization: `Bearer ${current}` },
    });
  } catch (err) {
    return { code: "network", message: `no token: ${err.message || err}` };
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) return { code: body.detail?.code || `http_${resp.status}`, message: body.detail?.message || "no token" };
  return { token: body.token };
}

// Refresh a guest session's token at two thirds of its remaining life; a deployment's token
// (#token=) is refreshed by the deployment, so the page can only wait for it to end.
let refreshTimer = null;
function scheduleRefresh(expiresIn, guest) {
  clearTimeout(refreshTimer);
  if (!guest || !(expiresIn > 0)) return;
  refreshTimer = setTimeout(async () => {
    const { token, code, message } = await guestToken(state.token);
    if (token) { state.token = token; send({ type: "token.refresh", token }); }
    else showError(code, message);
  }, expiresIn * 1000 * 2 / 3);
}

// Once per page: start.js calls it first for a page that joins at once, parley.js after it.
let connected = false;
export async function connect() {
  if (connected) return;
  connected = true;
  setStatus("connecting");
  // early.js may have opened it (a page that joins at once); else it opens now
  const opened = early.socket || openSocket();
  state.token = opts.token;  // the page's own access token, for the HTTP API (recording);
  const ws = socket.ws = opened.ws;  // a guest's comes with the welcome
  socket.held = opened;
  // Handle messages one at a time, in order: an ICE candidate must not overtake its offer.
  let chain = Promise.resolve();
  const handle = (e) => {
    const msg = JSON.parse(e.data);
    chain = chain.then(() => onMessage(msg)).catch((err) => log("handler", msg.type, err));
  };
  opened.queue.forEach(handle);  // what came before this module took over, in order
  ws.onmessage = handle;
  ws.onclose = (e) => { setStatus(`disconnected (${e.code})`); state.closeCode = e.code; };
  if (opened.closed) ws.onclose(opened.closed);
  setInterval(() => send({ type: "ping" }), 20000);
}

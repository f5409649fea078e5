// The head start of a join (docs/benchmarks.md, "Join time"): a meeting link that joins at once
// (?name=) gets its token, opens the WebSocket and opens camera and microphone as soon as this
// small module runs (imported by session.js, so before the page's own start; not an async script
// in the head: as one, a page without camera and microphone never fired "load" in Chromium 156);
// session.js takes the socket over and handles what arrived before it, in order.
import { opts, params, pathRoom } from "./core.js";
import { openCamera } from "./capture.js";

// A guest token (server-made identity) from signaling; with the current guest token as bearer,
// a fresh one for the same guest (docs/signaling.md, "Token expiry and refresh").
// Resolves to {token} or {code, message}.
export async function guestToken(current) {
  const headers = { "content-type": "application/json" };
  if (current) headers.authorization = `Bearer ${current}`;
  let resp;
  try {
    resp = await fetch("/api/v1/guest-token", {
      method: "POST", headers,
      body: JSON.stringify({ room: pathRoom || "lobby", name: opts.name }),
    });
  } catch (err) {
    return { code: "network", message: `no token: ${err.message || err}` };
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) return { code: body.detail?.code || `http_${resp.status}`, message: body.detail?.message || "no token" };
  return { token: body.token };
}

// The token (the deployment's from the fragment, else a guest token) and a WebSocket being opened,
// whose messages (and close) wait until session.js takes it: {token, ws, queue, closed} or
// {code, message}.
export async function openSocket() {
  const got = opts.token ? { token: opts.token } : await guestToken(null);
  if (!got.token) return got;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws?token=${encodeURIComponent(got.token)}`);
  const held = { token: got.token, ws, queue: [], closed: null };
  ws.onmessage = (e) => held.queue.push(e);
  ws.onclose = (e) => { held.closed = e; };
  return held;
}

export const early = { socket: null };
if (pathRoom && params.has("name")) {
  early.socket = openSocket();
  if (opts.audio || opts.video) openCamera();  // a refusal lands in state.mediaError, as later
}

// The front page's direct-message panel (#dm-panel): one conversation with a user, through the
// chat protocol (docs/signaling.md, "Chat": chat.send with `to`, chat.message without `room`,
// chat.ack, chat.history {with}). The conversation's history is kept by the server, so opening
// it asks for its last page (older pages on demand) and any browser of the user shows the same
// conversation. Messages are keyed by id within a conversation (a message replayed, delivered
// live and in a history page is one line) and shown in id order. Lines come from chatline.js:
// text only, "<img onerror=...>" shows as those characters.
import { $, send, state } from "./core.js";
import { byId, chatLine } from "./chatline.js";

const PAGE = 50;
const RESEND_MS = 5000;
// convs: peer -> Map(id -> message); more: peer -> older pages exist; asked: peers whose
// history was requested; pending: clientId -> {to, timer}
const dm = { with: null, unread: {}, convs: new Map(), more: {}, asked: new Set(),
             pending: new Map() };
let unreadListener = () => {};
export function onDmUnread(fn) { unreadListener = fn; }
export const unreadOf = (peer) => dm.unread[peer] || 0;

function conv(peer) {
  if (!dm.convs.has(peer)) dm.convs.set(peer, new Map());
  return dm.convs.get(peer);
}

// Keep a message in its conversation once; false if it was known.
function keep(peer, m) {
  const c = conv(peer);
  if (c.has(m.id)) return false;
  c.set(m.id, { id: m.id, from: m.from, name: m.name, text: m.text, ts: m.ts });
  return true;
}

function line(m) {
  const mine = m.from === state.identity;
  const li = chatLine(m, mine ? "me" : (m.name || m.from), mine);
  li.dataset.id = m.id;
  return li;
}

function render() {
  const log = $("#dm-log");
  if (!log || !dm.with) return;
  const all = [...conv(dm.with).values()].sort((a, b) => byId(a.id, b.id));
  log.replaceChildren(...all.map(line));
  log.scrollTop = log.scrollHeight;
  const older = $("#dm-older");
  if (older) older.hidden = !dm.more[dm.with];
}

function setUnread(peer, n) { dm.unread[peer] = n; unreadListener(peer, n); }

// A page of the conversation from the server: the newest, or the one before `before`.
function askHistory(peer, before) {
  const msg = { type: "chat.history", with: peer, limit: PAGE, id: `dm-history:${peer}` };
  if (before) msg.before = before;
  send(msg);
}

export function openDm(peer) {
  const panel = $("#dm-panel");
  if (!panel) return;
  dm.with = peer;
  $("#dm-with").textContent = peer;
  $("#dm-error").hidden = true;
  panel.hidden = false;
  setUnread(peer, 0);
  if (!dm.asked.has(peer)) { dm.asked.add(peer); askHistory(peer); }
  render();
  $("#dm-input").focus();
}

export function closeDm() { dm.with = null; if ($("#dm-panel")) $("#dm-panel").hidden = true; }

export function sendDm(text, to = dm.with) {
  const clientId = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
  const attempt = () => send({ type: "chat.send", to, text, clientId, id: clientId });
  dm.pending.set(clientId, { to, timer: setTimeout(attempt, RESEND_MS) });  // same clientId: shown once
  attempt();
  return clientId;
}

function onMessage(msg) {
  switch (msg.type) {
    case "chat.message": {
      if (msg.room) return;  // a meeting's chat, not this panel's
      const peer = msg.from === state.identity ? msg.to : msg.from;
      if (keep(peer, msg)) {
        if (peer === dm.with) render(); else setUnread(peer, (dm.unread[peer] || 0) + 1);
      }
      send({ type: "chat.ack", ids: [msg.id] });  // shown (or counted): it leaves the inbox
      return;
    }
    case "chat.history": {
      if (!msg.with) return;  // a room's history (parley-chat.js)
      for (const m of msg.messages) keep(msg.with, m);
      const oldest = [...conv(msg.with).keys()].sort(byId)[0];
      // `more` is about the page before the oldest this page asked from
      if (!msg.messages.length || msg.messages[0].id === oldest) dm.more[msg.with] = msg.more;
      if (msg.with === dm.with) render();
      return;
    }
    case "chat.sent": {
      const p = dm.pending.get(msg.clientId);
      if (!p) return;
      clearTimeout(p.timer); dm.pending.delete(msg.clientId);
      if (msg.message && keep(p.to, msg.message) && p.to === dm.with) render();
      return;
    }
    case "error": {
      const p = dm.pending.get(msg.ref);
      const history = typeof msg.ref === "string" && msg.ref.startsWith("dm-history:");
      if (!p && !history) return;
      if (p) { clearTimeout(p.timer); dm.pending.delete(msg.ref); }
      const el = $("#dm-error");
      if (el) { el.textContent = `${msg.code}: ${msg.message}`; el.hidden = false; }
      return;
    }
    default:
  }
}

export function wireDm() {
  if (!$("#dm-panel")) return;  // the meeting page's chat is parley-chat.js
  window.addEventListener("parley:message", ({ detail }) => onMessage(detail));
  $("#dm-close")?.addEventListener("click", closeDm);
  $("#dm-older")?.addEventListener("click", () => {
    const oldest = [...conv(dm.with).keys()].sort(byId)[0];
    if (dm.with && oldest) askHistory(dm.with, oldest);
  });
  $("#dm-form")?.addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("#dm-input");
    if (!input.value.trim() || !dm.with) return;
    $("#dm-error").hidden = true;
    sendDm(input.value);
    input.value = "";
  });
}
wireDm();

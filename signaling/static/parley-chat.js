// Chat in the web client (docs/signaling.md, "Chat"): a panel with the room's messages and the
// direct messages that reach this user, a recipient picker (everyone or one participant) and an
// unread count on the toggle while the panel is closed.
// Text is always put into the page with textContent, never as HTML, so "<img onerror=...>" is
// shown as the characters it is. Messages are keyed by conversation and server id: one replayed
// and also delivered live is shown once; direct messages are acked (chat.ack) once shown, and
// the server then deletes them from the inbox. Lines are made by client/chatline.js, as the
// front page's direct messages are.
import { byId, chatLine } from "./client/chatline.js";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const parley = window.parley;
  const chat = {
    shown: [],            // {key, id, from, name, text, ts, room, to} in display order
    unread: 0,
    open: false,
    pending: new Map(),   // clientId -> {msg, timer}: resent once if no chat.sent comes
    error: null,
  };
  const seen = new Set();
  const RESEND_MS = 5000;

  const before = (a, b) => byId(a.id, b.id) < 0;

  function line(m) {
    const mine = m.from === parley.state.identity;
    const to = m.room ? (m.to ? ` → ${name(m.to)}` : "") : " (direct)";
    const li = chatLine(m, `${mine ? "me" : (m.name || m.from)}${to}`, mine);
    li.dataset.key = m.key;
    return li;
  }

  function name(identity) {
    return parley.state.participants[identity]?.name || identity;
  }

  function show(m, live) {
    const key = `${m.room || "dm"}|${m.id}`;
    if (seen.has(key)) return false;
    seen.add(key);
    const entry = { key, id: m.id, from: m.from, name: m.name, text: m.text, ts: m.ts,
                    room: m.room || null, to: m.to || null };
    let at = chat.shown.length;
    while (at > 0 && before(entry, chat.shown[at - 1])) at -= 1;
    chat.shown.splice(at, 0, entry);
    const list = $("#chat-log");
    if (list) list.insertBefore(line(entry), list.children[at] || null);
    if (live && m.from !== parley.state.identity && !chat.open) chat.unread += 1;
    return true;
  }

  function renderBadge() {
    const badge = $("#chat-unread");
    if (!badge) return;
    badge.hidden = chat.unread === 0;
    badge.textContent = String(chat.unread);
    badge.setAttribute("aria-label", `${chat.unread} unread messages`);
  }

  function renderRecipients() {
    const select = $("#chat-to");
    if (!select) return;
    const current = select.value;
    const options = [["", "Everyone"]].concat(Object.values(parley.state.participants)
      .map((p) => [p.identity, p.name || p.identity]));
    select.replaceChildren(...options.map(([value, label]) => {
      const o = document.createElement("option");
      o.value = value; o.textContent = label;
      return o;
    }));
    select.value = options.some(([v]) => v === current) ? current : "";
  }

  function setOpen(open) {
    chat.open = open;
    const panel = $("#chat-panel");
    if (panel) panel.hidden = !open;
    $("#chat-toggle")?.setAttribute("aria-expanded", String(open));
    if (open) chat.unread = 0;
    renderBadge();
  }

  // Send one message: to the room (everyone or `to`), or directly to a user outside the room.
  function send(text, { to, room } = {}) {
    const clientId = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
    const msg = { type: "chat.send", text, clientId };
    const target = room === undefined ? parley.state.room : room;
    if (target) msg.room = target;
    if (to) msg.to = to;
    const attempt = () => parley.send({ ...msg, id: clientId });
    const timer = setTimeout(attempt, RESEND_MS);  // a lost ack: same clientId, shown once
    chat.pending.set(clientId, { msg, timer });
    attempt();
    return clientId;
  }

  window.addEventListener("parley:message", ({ detail: msg }) => {
    switch (msg.type) {
      case "chat.message": {
        show(msg, true);
        if (!msg.room) parley.send({ type: "chat.ack", ids: [msg.id] });  // shown: drop it
        break;
      }
      case "chat.history":
        for (const m of msg.messages) show(m, false);
        break;
      case "chat.sent": {
        const p = chat.pending.get(msg.clientId);
        if (p) { clearTimeout(p.timer); chat.pending.delete(msg.clientId); }
        if (msg.message) show(msg.message, false);
        break;
      }
      case "error":
        if (chat.pending.has(msg.ref)) {
          clearTimeout(chat.pending.get(msg.ref).timer); chat.pending.delete(msg.ref);
          chat.error = { code: msg.code, message: msg.message };
          const el = $("#chat-error");
          if (el) { el.hidden = false; el.textContent = `${msg.code}: ${msg.message}`; }
        }
        return;
      case "joined": case "participant.joined": case "participant.left":
        setTimeout(renderRecipients);  // after parley.js has updated the roster
        return;
      default: return;
    }
    renderBadge();
  });

  $("#chat-toggle")?.addEventListener("click", () => setOpen(!chat.open));
  $("#chat-form")?.addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("#chat-input");
    const text = input.value;
    if (!text.trim()) return;
    $("#chat-error").hidden = true;
    send(text, { to: $("#chat-to").value || undefined });
    input.value = "";
  });

  parley.chat = { state: chat, send, setOpen };
  renderBadge();
})();

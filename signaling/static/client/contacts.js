// The front page's people panel for signed-in users: their contacts (the user service,
// GET /api/v1/users/<me>), each with presence (online/offline) and Call and Message buttons.
// Presence is pushed: the panel subscribes to its contacts once (`presence.subscribe`, at most
// 100, again only when the list grows) and the server sends `presence` whenever one of them
// comes or goes; nothing is polled. Message opens the direct-message panel (dm.js).
import { $, send, state } from "./core.js";
import { calls } from "./calls.js";
import { onDmUnread, openDm, unreadOf } from "./dm.js";

export const people = { contacts: [], online: {} };

function row(id) {
  const li = document.createElement("li");
  li.dataset.identity = id;
  li.dataset.presence = people.online[id] ? "online" : "offline";
  const dot = document.createElement("span");
  dot.className = "presence"; dot.setAttribute("aria-hidden", "true");
  const name = document.createElement("span");
  name.className = "who"; name.textContent = id;
  const status = document.createElement("small");
  status.className = "presence-text muted";
  status.textContent = people.online[id] ? "online" : "offline";
  const call = document.createElement("button");
  call.textContent = "Call"; call.className = "primary call";
  call.setAttribute("aria-label", `Call ${id}`);
  call.addEventListener("click", () => calls.invite(id));
  const message = document.createElement("button");
  message.className = "message"; message.textContent = "Message";
  message.setAttribute("aria-label", `Message ${id}`);
  message.addEventListener("click", () => openDm(id));
  const unread = document.createElement("span");
  unread.className = "badge unread";
  const count = unreadOf(id);
  unread.hidden = count === 0; unread.textContent = String(count);
  unread.setAttribute("aria-label", `${count} unread`);
  message.append(unread);
  li.append(dot, name, status, call, message);
  return li;
}

function render() {
  const list = $("#contacts");
  if (!list) return;
  list.replaceChildren(...people.contacts.map(row));
  list.hidden = people.contacts.length === 0;
}

function markPresence(online) {
  for (const [id, on] of Object.entries(online)) {
    people.online[id] = on;
    const li = document.querySelector(`#contacts li[data-identity="${CSS.escape(id)}"]`);
    if (!li) continue;
    li.dataset.presence = on ? "online" : "offline";
    li.querySelector(".presence-text").textContent = on ? "online" : "offline";
    li.setAttribute("aria-label", `${id}, ${on ? "online" : "offline"}`);
  }
}

function subscribe() {
  if (people.contacts.length) {
    send({ type: "presence.subscribe", ids: people.contacts.slice(0, 100) });
  }
}

// Someone outside the contact list messaged me (the server allowed it): they get a row too.
export function ensureContact(id) {
  if (people.contacts.includes(id)) return;
  people.contacts.push(id);
  render();
  subscribe();
}

export async function showContacts() {
  const list = $("#contacts");
  if (!list || state.guest || !state.identity) return;
  const resp = await fetch(`/api/v1/users/${encodeURIComponent(state.identity)}`);
  if (!resp.ok) return;
  const { contacts = [] } = await resp.json();
  people.contacts = [...new Set([...people.contacts, ...contacts])];
  render();
  subscribe();
}

window.addEventListener("parley:message", ({ detail: msg }) => {
  if (msg.type === "presence") markPresence(msg.online || {});
});
onDmUnread((id, count) => {
  ensureContact(id);
  const badge = document.querySelector(`#contacts li[data-identity="${CSS.escape(id)}"] .unread`);
  if (badge) {
    badge.hidden = count === 0; badge.textContent = String(count);
    badge.setAttribute("aria-label", `${count} unread`);
  }
});

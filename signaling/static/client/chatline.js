// One chat line, as the meeting chat (parley-chat.js) and the direct-message panel (dm.js) show
// it: who, the text and the time. Everything a user typed goes in with textContent, never as
// HTML, so "<img onerror=...>" is shown as the characters it is.

// m: {text, ts}; who: the label before the text ("me", a name, "Ann → Ben"); mine: my own line.
export function chatLine(m, who, mine = false) {
  const li = document.createElement("li");
  li.className = "chat-line";
  li.classList.toggle("mine", mine);
  const label = document.createElement("span");
  label.className = "chat-who"; label.textContent = `${who}: `;
  const text = document.createElement("span");
  text.className = "chat-text"; text.textContent = m.text;
  const when = document.createElement("time");
  when.dateTime = new Date(m.ts).toISOString();
  when.textContent = ` ${new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
  li.append(label, text, when);
  return li;
}

// Order of chat message ids ("<ms>-<seq>", stream ids): negative when a comes first.
export function byId(a, b) {
  const [x, y] = [a.split("-").map(Number), b.split("-").map(Number)];
  return x[0] - y[0] || x[1] - y[1];
}

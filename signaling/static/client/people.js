// The participant list (#roster): everyone in the room with microphone, camera, raised hand and
// connection; raised hands first. Raising a hand is the `hand` field of the `media` message.
import { $, opts, peers, send, server, state } from "./core.js";
import { markMedia } from "./tiles.js";
import { icon } from "./icons.js";

export function renderRoster() {
  const el = $("#roster");
  if (!el) return;
  const me = state.room && state.identity
    ? [[state.identity, { name: `${opts.name} (you)`, ...state.media }]] : [];
  const others = Object.entries(state.participants)
    .sort(([, a], [, b]) => Number(!!b.hand) - Number(!!a.hand));
  el.replaceChildren(...me.concat(others).map(([id, p]) => {
    const li = document.createElement("li");
    li.dataset.identity = id;
    li.dataset.hand = p.hand ? "on" : "off";
    const conn = id === state.identity ? ""
      : (server.sfu ? server.sfu.pc : peers.get(id)?.pc)?.connectionState || "new";
    const name = document.createElement("span");
    name.className = "who"; name.textContent = p.name || id;
    const icons = document.createElement("span");
    icons.className = "icons";
    icons.setAttribute("aria-hidden", "true");
    icons.innerHTML = (p.hand ? icon("hand") : "") + (p.audio === false ? icon("mic", true) : "")
      + (p.video === false ? icon("camera", true) : "");
    const notes = [p.hand && "hand raised", p.audio === false && "microphone off",
                   p.video === false && "camera off", conn && conn !== "connected" && conn];
    li.setAttribute("aria-label", [p.name || id, ...notes.filter(Boolean)].join(", "));
    li.append(name, icons);
    if (conn && conn !== "connected") {
      const c = document.createElement("small"); c.textContent = ` ${conn}`; li.append(c);
    }
    return li;
  }));
  const count = $("#people-count");
  if (count) count.textContent = String(me.length + others.length);
  const hands = others.filter(([, p]) => p.hand).length;
  const badge = $("#hands-count");
  if (badge) {
    badge.hidden = hands === 0;
    badge.innerHTML = `${icon("hand")} ${hands}`;
    badge.setAttribute("aria-label", `${hands} raised ${hands === 1 ? "hand" : "hands"}`);
  }
}

export function raiseHand(up = !state.media.hand) {
  state.media.hand = up;
  send({ type: "media", hand: up });
  markMedia(state.identity, state.media);
  renderRoster();
  return up;
}

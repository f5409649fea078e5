// The meeting page's entry (room.html). A link that joins at once (?name=) starts its session as
// soon as session.js and what it imports are here: a deferred module ahead of the others, so it
// runs when the page is parsed and this graph is in. The rest of the page (parley.js: controls,
// contacts, direct messages, device pickers, prejoin, probes; then the add-ons) loads once the
// first remote picture shows, or at once when there is none to wait for: loaded while the
// call connected, its modules took the two cores that the connection needed (a cold call-server
// join 0.84x as long without them, seven pairs: docs/benchmarks.md, "2026-12-05 (2)"). The meeting
// is shown at once; its controls appear when they work. Any other page (the prejoin screen)
// loads the rest at once and connects from parley.js, after its prejoin.
import { connect, addonsAfter } from "./session.js";
import { early } from "./early.js";
import { firstPicture } from "./tiles.js";
import { $ } from "./core.js";

const REST_AT_MOST_MS = 1500;  // a picture that takes longer does not hold the controls back

// The first remote picture, or nothing left to wait for: no one else in the room (or an error,
// a refusal), the socket closed, the person at the keyboard, or REST_AT_MOST_MS.
function restDue() {
  const ws = early.socket.ws;
  let nothingToWaitFor = null;
  return new Promise((resolve) => {
    nothingToWaitFor = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      if ((msg.type === "joined" && !msg.participants?.length) || msg.type === "error") resolve();
    };
    early.socket.queue.forEach(nothingToWaitFor);  // what came before this module ran
    ws.addEventListener("message", nothingToWaitFor);
    ws.addEventListener("close", resolve, { once: true });
    if (early.socket.closed) resolve();
    firstPicture.then(resolve);
    setTimeout(resolve, REST_AT_MOST_MS);
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, resolve, { once: true });
  }).finally(() => ws.removeEventListener("message", nothingToWaitFor));
}

const loadRest = () => import("./rest.js");

if (early.socket) {
  $("#meeting").hidden = false;
  connect();
  addonsAfter(restDue().then(loadRest));
} else {
  addonsAfter(loadRest());
}

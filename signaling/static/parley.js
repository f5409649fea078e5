// Parley web client: plain modern JavaScript as ES modules, no build step. This entry point
// builds window.parley and starts the page; each concern lives in client/:
//   core.js       options from the URL, the automation switch, shared state, send
//   session.js    token, WebSocket, dispatch of server messages
//   rooms.js      join / leave, mesh or call server
//   mesh.js       peer connections per pair, P2P fallback (TURN, then the call server)
//   callserver.js the room's call-server session, tile heights, quality badges
//   media.js      camera, microphone, device switch, screen share, toggles, capabilities
//   devices.js    camera / microphone / speaker pickers (prejoin and the meeting's menu)
//   tiles.js      the tiles;  view.js  layouts, stage, active speaker, link quality
//   people.js     participant list, raise hand;  calls.js  1:1 calls
//   prejoin.js    the prejoin screen;  controls.js  buttons, shortcuts, front page forms
//   telemetry.js  client.info / quality.sample;  stats.js  probes for automation
// Automation contract (docs/signaling.md, "Web client"): /m/<room>?name=..&audio=0&video=0
// &screen=1&topology=auto|p2p|sfu&relay=1[#token=...]; window.parley.stats() and the other
// probes exist only under the automation switch (navigator.webdriver or ?automation=1).
import {
  $, automation, opts, params, pathRoom, send, server, setStatus, showError, state,
} from "./client/core.js";
import { capabilities, startScreen, stopScreen, switchDevice, toggle } from "./client/media.js";
import { calls } from "./client/calls.js";
import { leaveRoom } from "./client/rooms.js";
import { raiseHand } from "./client/people.js";
import { setLayout, startView } from "./client/view.js";
import { clientInfo, qualitySample } from "./client/telemetry.js";
import { localCandidates, localMedia, senderParameters, stats } from "./client/stats.js";
import { renderControls, wireUi } from "./client/controls.js";
import { prejoin } from "./client/prejoin.js";
import { connect } from "./client/session.js";

const api = {
  state, opts, automation,
  send,  // for add-ons speaking their own messages (parley-chat.js)
  ...calls,
  toggleAudio: () => { const on = toggle("audio"); renderControls(); return on; },
  toggleVideo: () => { const on = toggle("video"); renderControls(); return on; },
  raiseHand: (up) => { const on = raiseHand(up); renderControls(); return on; },
  setLayout: (layout) => { const l = setLayout(layout); renderControls(); return l; },
  startScreen: async () => { await startScreen(); renderControls(); },
  stopScreen: () => { stopScreen(); renderControls(); },
  switchDevice,  // ("audio" | "video", deviceId): the meeting's device menu does the same
  leave: () => leaveRoom(),
};
if (automation) {
  Object.assign(api, {
    stats, qualitySample, clientInfo, localCandidates, senderParameters, localMedia,
    announce: async (caps) => send({ type: "caps", ...(await capabilities()), ...caps }),
    sfuViews: () => server.sfu?.sentViews || null,  // the tile heights last reported
  });
}
window.parley = api;

function showMeeting() {
  for (const id of ["#meeting", "#controls"]) if ($(id)) $(id).hidden = false;
  if (state.mediaError) {
    const n = $("#notice");
    if (n) { n.textContent = state.mediaError.message; n.hidden = false; }
  }
}

async function start() {
  wireUi();
  startView();
  window.addEventListener("parley:media-error", ({ detail }) => {
    const n = $("#notice");
    if (n && !$("#meeting")?.hidden) { n.textContent = detail.message; n.hidden = false; }
  });
  if (pathRoom && !params.has("name")) await prejoin();
  $("#name-shown") && ($("#name-shown").textContent = opts.name);
  showMeeting();
  await connect();
}

start().catch((err) => { showError("client", String(err)); setStatus("failed"); });

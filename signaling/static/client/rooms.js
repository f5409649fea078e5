// Rooms: joining (the newcomer offers to everyone present in a mesh, or opens its call-server
// session), leaving, and the move of a mesh room to a call server (sfu.start).
import { peers, send, server, setStatus, state, opts } from "./core.js";
import { capabilities, ensureLocalMedia, showLocalMedia } from "./media.js";
import { dropPeer, dropStanding, peerFor, standLater } from "./mesh.js";
import { startSfu } from "./callserver.js";
import { startTelemetry, stopTelemetry } from "./telemetry.js";
import { renderRoster } from "./people.js";
import { markMedia } from "./tiles.js";
import { early } from "./early.js";

export async function joinRoom(room) {
  state.room = room;
  const sent = early.join; early.join = null;  // a page's first join may have left already
  if (!(sent && await sent)) {
    await ensureLocalMedia();
    send({ type: "media", ...state.media });  // remembered for the join: others see it at once
    send({ type: "join", room, topology: opts.topology, ...(await capabilities()) });
  }
  setStatus(`joining ${room}`);
  // the self tile once the camera is open; "joined" is not held for it (messages are handled one
  // at a time): a call-server offer goes without the camera, a mesh offer waits (onJoined). A
  // screen shared from the start is in the join's offer, so that one waits here.
  const shown = ensureLocalMedia().then(showLocalMedia);
  if (opts.screen) await shown;
}

export function leaveRoom(tellServer = true) {
  for (const id of [...peers.keys()]) dropPeer(id);
  for (const id of Object.keys(state.participants)) dropPeer(id);
  server.sfu?.close(); server.sfu = null;
  dropStanding();
  stopTelemetry();
  if (state.room && tellServer) send({ type: "leave" });
  state.room = null; state.topology = null;
}

export async function onJoined(msg) {
  state.topology = msg.topology; state.config = msg.config;
  setStatus(`in ${msg.room} (${msg.topology}, mesh limit ${msg.meshLimit})`);
  startTelemetry();
  for (const p of msg.participants) state.participants[p.identity] = p;
  if (msg.topology === "sfu") { renderRoster(); await startSfu("joined"); return; }
  // the answers and offers go now, with my camera and microphone if open, else as tracks to
  // come (mesh.js mediaToCome); the self tile shows when they are (joinRoom), first in the grid
  for (const p of msg.participants) {
    const peer = peerFor(p.identity, p.name, !p.offer);
    markMedia(p.identity, p);
    if (p.offer) {  // its standing offer (mesh.js stand): I answer it
      await peer.onDescription({ type: "offer", sdp: p.offer.sdp, sources: p.offer.sources });
      continue;
    }
    peer.tracksAdded = true;   // else the newcomer offers
    peer.addLocalTracks();
    peer.negotiate();  // now, not a task later at negotiationneeded (it finds an offer made)
  }
  renderRoster();
  standLater();  // my own, for whoever joins next
}

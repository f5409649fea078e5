// The room on a call server: the SfuSession (parley-sfu.js, a classic script loaded first) for
// the room and for a mesh pair's fallback, the layers it reports (the tiles' quality badge,
// view.js), tracks others stopped, and the tile heights the client sends back (sfu.view) so a
// small tile gets a small layer.
/* global SfuSession */
import { local, log, opts, peers, send, server, state } from "./core.js";
import { ensureLocalMedia, localMediaOpen } from "./capture.js";
import { addTile, removeTile, setConn, tileHeight } from "./tiles.js";
import { renderRoster } from "./people.js";

const sfuTiles = {};               // "<identity>|<tile source>" -> MediaStream shown in the tile
export function sfuTrack(identity, source, track, session = server.sfu) {
  const tileSource = source === "microphone" ? "camera" : source;
  const key = `${identity}|${tileSource}`;
  const keep = (sfuTiles[key]?.getTracks() || []).filter(
    (t) => t.kind !== track.kind && t.readyState === "live");
  const stream = sfuTiles[key] = new MediaStream([...keep, track]);
  const name = state.participants[identity]?.name || identity;
  addTile(identity, tileSource, source === "screen" ? `${name} (screen)` : name, stream, false);
  setConn(identity, session?.pc.connectionState || "new");
}

// A mesh connection (and a pair's call-server fallback) has one receiver per sender: the room's
// call configuration caps what we send it. A room on the call server is not capped: we send
// simulcast layers and the call server gives each receiver the one it can take.
export function limitSenders(pc, cfg) {
  for (const sender of pc.getSenders()) {
    if (!sender.track || sender.track.kind !== "video") continue;
    const p = sender.getParameters();
    if (!p.encodings || !p.encodings.length) continue;
    const h = sender.track.getSettings().height || cfg.maxHeight;
    p.encodings[0].maxBitrate = cfg.bandwidthKbps * 1000;
    p.encodings[0].maxFramerate = cfg.maxFps;
    p.encodings[0].scaleResolutionDownBy = Math.max(1, h / cfg.maxHeight);
    sender.setParameters(p).catch((err) => log("setParameters", err));
  }
}

// Participants whose tracks a join offer makes room for; those of a bigger room come in the
// call server's next offer, as every later publisher's do.
const EXPECT_MAX = 8;

// Open (or reopen, after a move) the session with the call server; mesh connections close.
export async function startSfu(reason) {
  log("call server session:", reason);
  for (const peer of peers.values()) peer.close();
  peers.clear();
  server.sfu?.close();
  state.topology = "sfu";
  state.sfu = { reason, node: null, connectionState: "new", connectedAt: null,
                startedAt: performance.now(), moves: (state.sfu?.moves || 0) + 1,
                reasons: [...(state.sfu?.reasons || []), reason] };
  const session = server.sfu = new SfuSession(++server.generation, {
    iceServers: state.iceServers, relay: opts.relay, videoCodecs: opts.videoCodecs, sendCodec: opts.sendCodec,
    sourceOf: (track) => (local.screen?.getTracks().includes(track) ? "screen" : "camera"),
    onTrack: (identity, source, track) => session === server.sfu && sfuTrack(identity, source, track),
    onState: (s) => {
      if (session !== server.sfu) return;
      state.sfu.connectionState = s; state.sfu.connectedAt = session.connectedAt;
      for (const id of Object.keys(state.participants)) setConn(id, s);
      renderRoster();
    },
    onFailed: () => session === server.sfu && startSfu("ice_failed"),
    tileHeight,
  });
  // one camera and one microphone per participant already here, their tracks in the answer
  const others = Math.min(EXPECT_MAX, Object.keys(state.participants).filter((id) => id !== state.identity).length);
  // a camera and microphone still opening (a join that did not wait for them, early.js): offered
  // without tracks, attached once open, so the others' video flows meanwhile
  const opening = localMediaOpen() ? null
    : { kinds: ["audio", "video"].filter((k) => opts[k]), height: opts.height };
  const offer = await session.offer([local.stream, local.screen].filter(Boolean), { audio: others, video: others }, opening);
  if (session !== server.sfu) return;  // superseded while gathering
  // early: a browser takes the call server's offer of the others' tracks before its connection
  // is up, so that offer travels while ICE and DTLS connect (docs/signaling.md, "Call server")
  send({ type: "sfu.join", id: session.ref, early: true, ...offer });
  // not awaited: the call server's answer (sfu.joined) is handled while the camera opens; a kind
  // that did not open (a refused camera) leaves the others' view as a stopped share does
  if (opening) {
    ensureLocalMedia().then(() => session.attach(local.stream)).then((gone) => {
      for (const track of gone) if (session === server.sfu) send({ type: "sfu.unpublish", track });
    });
  }
}

async function onPairSfuMessage(msg) {
  const peer = peers.get(msg.pair);
  const session = peer?.pairSfu;
  if (msg.type === "sfu.start") {
    // "peer": the other end moved this pair to the call server; otherwise our leg was re-placed
    if (peer && (msg.reason !== "peer" || !session)) await peer.startPairSfu(msg.reason);
    return;
  }
  if (!session) return;
  if (msg.type === "sfu.joined") {
    if (msg.ref === session.ref) await session.onJoined(msg);
  } else if (msg.type === "sfu.offer") {
    const answer = await session.onOffer(msg);
    if (answer) send({ type: "sfu.answer", pair: msg.pair, ...answer });
  } else if (msg.type === "sfu.unpublished") {
    unpublished(session, msg);
  }
}

// A publisher stopped a track (its screen share): the tile goes; its m-line goes inactive in
// the call server's next offer.
function unpublished(session, msg) {
  const source = session.sources[msg.track];
  if (source !== "screen") return;
  delete sfuTiles[`${msg.participant}|screen`];
  removeTile(msg.participant, "screen");
}

export async function onSfuMessage(msg) {
  if (msg.pair) { await onPairSfuMessage(msg); return; }
  if (!server.sfu) return;
  if (msg.type === "sfu.joined") {
    if (msg.ref !== server.sfu.ref) return;  // answer to a session already replaced
    await server.sfu.onJoined(msg); state.sfu.node = msg.node;
  } else if (msg.type === "sfu.offer") {
    const answer = await server.sfu.onOffer(msg);
    if (answer) send({ type: "sfu.answer", ...answer });
    reportViews();
  } else if (msg.type === "sfu.layer") {
    server.sfu.onLayer(msg);  // the tile's badge shows it at the next stats tick (view.js)
  } else if (msg.type === "sfu.unpublished") {
    unpublished(server.sfu, msg);
  } else if (msg.type === "sfu.layers") {
    await server.sfu.onLayers(msg);
  }
}

let viewTimer = null;
export function reportViews() {
  clearTimeout(viewTimer);
  viewTimer = setTimeout(() => {
    const views = server.sfu?.views();
    if (views) send({ type: "sfu.view", views });
  }, 250);
}
export const tileSizes = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => reportViews());

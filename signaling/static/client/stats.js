// Probes for automation (tests, benchmarks): what arrives, over which path, and what is sent.
// parley.js exposes them on window.parley only when the automation switch is on.
/* global selectedPair */
import { local, peers, server, state } from "./core.js";

export async function stats() {
  const sfu = server.sfu;
  const inbound = [];
  for (const peer of peers.values()) {
    if (peer.pairSfu) {  // this pair's media is on the call server, not on the mesh connection
      inbound.push(...(await peer.pairSfu.inbound()).filter((r) => r.participant === peer.id));
      continue;
    }
    for (const tr of peer.pc.getTransceivers()) {
      const track = tr.receiver.track;
      if (!track || tr.currentDirection === "stopped") continue;
      const report = await tr.receiver.getStats();
      report.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        inbound.push({
          participant: peer.id, kind: s.kind,
          source: peer.trackSources[track.id] || (s.kind === "audio" ? "microphone" : "camera"),
          framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0,
          bytesReceived: s.bytesReceived || 0, frameHeight: s.frameHeight || 0,
          codec: report.get(s.codecId)?.mimeType?.split("/")[1] || null,
        });
      });
    }
  }
  if (sfu) inbound.push(...await sfu.inbound());
  const connections = {};
  for (const peer of peers.values()) {
    connections[peer.id] = (peer.pairSfu || peer).pc.connectionState;
  }
  if (sfu) for (const id of Object.keys(state.participants)) connections[id] = sfu.pc.connectionState;
  const pairs = [];
  for (const peer of peers.values()) {
    if (peer.pairSfu) {
      const pair = await peer.pairSfu.candidatePair();
      if (pair) pairs.push({ participant: peer.id, via: "call-server", ...pair });
      continue;
    }
    const pair = selectedPair(await peer.pc.getStats());
    if (pair) pairs.push({ participant: peer.id, ...pair });
  }
  if (sfu) {
    const pair = await sfu.candidatePair();
    if (pair) pairs.push({ participant: "call-server", ...pair });
  }
  const paths = {}; const fallbacks = {};
  for (const peer of peers.values()) {
    paths[peer.id] = peer.path; fallbacks[peer.id] = { ...peer.fallback, path: peer.path };
  }
  if (sfu) for (const id of Object.keys(state.participants)) paths[id] = "sfu";
  return { topology: state.topology, room: state.room, identity: state.identity,
           connections, candidatePairs: pairs, inbound, paths, fallbacks,
           callServer: sfu ? { node: sfu.node, connectionState: sfu.pc.connectionState,
                               outbound: await sfu.outbound(),
                               // the m-lines as last agreed: who sends what to this page
                               sections: sdpSections(sfu.pc.currentRemoteDescription?.sdp || "") }
             : null };
}

// The local ICE candidates (address, port, protocol) of the connection with one peer.
export async function localCandidates(identity) {
  const peer = peers.get(identity);
  if (!peer) return [];
  const out = [];
  (await peer.pc.getStats()).forEach((s) => {
    if (s.type === "local-candidate") {
      out.push({ address: s.address, port: s.port, protocol: s.protocol, type: s.candidateType });
    }
  });
  return out;
}

function streamOf(track) {
  if (local.screen?.getTracks().includes(track)) return local.screen.id;
  return local.stream?.id;
}

// Encodings of the video senders, to see the room's config applied.
export function senderParameters() {
  return [...peers.values()].map((p) => [p.id, p.pc])
    .concat(server.sfu ? [["call-server", server.sfu.pc]] : []).flatMap(([id, pc]) => pc.getSenders()
      .filter((s) => s.track?.kind === "video")
      .map((s) => ({ participant: id, source: local.sources[streamOf(s.track)] || "camera",
                     degradationPreference: s.getParameters().degradationPreference || null,
                     encodings: (s.getParameters().encodings || []).map((e) => ({
                       maxBitrate: e.maxBitrate, maxFramerate: e.maxFramerate,
                       scaleResolutionDownBy: e.scaleResolutionDownBy })) })));
}

// My tracks and what every connection sends (track, device, state): a switched camera must be
// on every sender, a stopped screen share on none.
export function localMedia() {
  const describe = (t, source) => ({ kind: t.kind, source, id: t.id, label: t.label,
    deviceId: t.getSettings().deviceId || null, readyState: t.readyState, enabled: t.enabled });
  const sourceOf = (t) => (t.kind === "audio" ? "microphone"
    : local.screen?.getTracks().includes(t) ? "screen" : "camera");
  const pcs = [...peers.values()].flatMap((p) => [[p.id, p.pc],
    ...(p.pairSfu ? [[`${p.id} (call server)`, p.pairSfu.pc]] : [])])
    .concat(server.sfu ? [["call-server", server.sfu.pc]] : []);
  return {
    tracks: [local.stream, local.screen].flatMap((s) => s?.getTracks() || [])
      .map((t) => describe(t, sourceOf(t))),
    senders: pcs.filter(([, pc]) => pc.signalingState !== "closed").flatMap(([who, pc]) =>
      pc.getSenders().filter((s) => s.track).map((s) => ({ participant: who, ...describe(s.track, sourceOf(s.track)) }))),
  };
}

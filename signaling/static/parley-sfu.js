// Parley web client: the call-server (SFU) session. One RTCPeerConnection to the call server,
// publishing camera, microphone and screen, receiving everyone else; signaling relays the
// descriptions (sfu.join -> sfu.joined, sfu.offer -> sfu.answer, sfu.publish), see
// docs/signaling.md "Call server". Loaded before parley.js, which owns tiles and the WebSocket.
"use strict";

// m-sections of a description: which mid carries whose track (msid = publisher, its track id).
function sdpSections(sdp) {
  return sdp.split(/\r?\nm=/).slice(1).map((part) => {
    const msid = /\na=msid:(\S+) (\S+)/.exec(part);
    return {
      kind: part.split(" ")[0],
      mid: /\na=mid:(\S+)/.exec(part)?.[1],
      direction: /\na=(sendrecv|sendonly|recvonly|inactive)\b/.exec(part)?.[1] || "sendrecv",
      stream: msid?.[1], track: msid?.[2],
    };
  });
}

// aiortc takes a track id from a=msid only when the stream is listed in a=msid-semantic, which
// Chrome does not always do; the call server forwards our track ids (the screen is known by its
// id), so the copy we send lists every stream.
function forCallServer(sdp) {
  const line = "a=msid-semantic: WMS *";
  return /\r\na=msid-semantic:[^\r]*/.test(sdp)
    ? sdp.replace(/\r\na=msid-semantic:[^\r]*/, "\r\n" + line)
    : sdp.replace(/\r\nm=/, `\r\n${line}\r\nm=`);
}

// Camera layers for the call server (simulcast, RFC 8853), lowest first: as many as the capture
// height h (the camera's, or what it was asked for while it opens) carries (Chromium's own
// table: 3 from 540 lines, 2 from 270, else none). The call server forwards each receiver the
// one that fits its link and tile (docs/call-server.md, "Simulcast").
// In VP9 each layer is its own stream too, asked for with scalabilityMode L1T1 (one spatial, one
// temporal layer per rid; without it Chromium sends one SVC stream instead): the call server
// switches and numbers VP9 layers exactly as VP8 ones, and the transcoder decodes one of them.
// AV1 the same (L1T1: no temporal layers, so no Dependency Descriptor is needed).
function simulcastEncodings(h, codec) {
  const n = h >= 540 ? 3 : h >= 270 ? 2 : 1;
  if (n < 2) return null;
  const mode = codec === "vp9" || codec === "av1" ? { scalabilityMode: "L1T1" } : {};
  return ["q", "h", "f"].slice(3 - n).map((rid, i) => ({ rid, scaleResolutionDownBy: 2 ** (n - 1 - i), ...mode }));
}
const SCREEN_FPS = 5;  // a screen share: one full-resolution layer, few frames

// The id the call server knows each of this page's tracks by, for tracks first announced under
// another: a camera offered before it opened (SfuSession.attach) is known by its m-line's id,
// and a later session (after a failover or an ICE failure), which offers the track itself,
// announces it under that id again, so a recording continues the same track across nodes.
const announcedAs = new Map();  // track id -> announced id
const sameTrackIds = (sdp) => sdp.replace(/^(a=(?:ssrc:\d+ )?msid:\S+ )(\S+)/gm,
  (_, head, id) => head + (announcedAs.get(id) || id));

class SfuSession {
  // hooks: {iceServers, relay, videoCodecs, sendCodec, sourceOf(track), onTrack(participant,
  //         source, track), onState(connectionState), onFailed()}; videoCodecs (e.g. ["h264"]):
  //         the only video codecs this page announces (a device that decodes nothing else), else
  //         VP8 first; sendCodec ("vp9", "av1"): the codec the camera is published in (default VP8)
  constructor(generation, hooks) {
    this.generation = generation; this.hooks = hooks;
    this.remote = {};        // mid -> {participant (stream), track id, kind, direction}
    this.sources = {};       // published track id -> "camera" | "screen" (from signaling)
    this.toPublish = [];     // [{track, stream}] waiting for a recvonly m-line (sfu.publish)
    this.awaiting = [];      // sendonly transceivers offered before the camera opened (attach)
    this.layerOf = {};       // "<participant>|<track id>" -> the node's last sfu.layer for it
    this.sentViews = null;   // the last sfu.view we sent (JSON), so only changes go out
    this.answered = false; this.closed = false; this.node = null; this.connectedAt = null;
    this.pc = new RTCPeerConnection({
      iceServers: hooks.iceServers, iceTransportPolicy: hooks.relay ? "relay" : "all",
      bundlePolicy: "max-bundle" });
    this.pc.ontrack = (e) => this.onTrack(e);
    this.pc.onconnectionstatechange = () => {
      const s = this.pc.connectionState;
      if (s === "connected" && this.connectedAt === null) this.connectedAt = performance.now();
      hooks.onState(s);
      if (s === "failed" && !this.closed) hooks.onFailed();
    };
  }

  get ref() { return `sfu-${this.generation}`; }

  // The join offer: every local track sendonly, and a recvonly m-line per track expected from
  // those already in the room (expect: {audio, video}), which the call server's answer fills
  // with their tracks: they flow at "connected", with no server offer a round trip later
  // (docs/call-server.md, "Joining"); unfilled ones are answered inactive. A viewer with nothing
  // to expect offers one recvonly m-line. camera: {kinds, height} of a camera and microphone
  // still opening: their m-lines are offered without tracks, which attach() puts on them, so the
  // join does not wait for the camera.
  async offer(streams, expect = { audio: 0, video: 0 }, camera = null) {
    const cameras = [];  // the camera's simulcast transceivers
    const sends = streams.flatMap((s) => s.getTracks().map((t) => ({ kind: t.kind, track: t, stream: s,
      source: t.kind === "video" ? this.hooks.sourceOf(t) : null, height: t.getSettings().height || 0 })));
    for (const kind of camera?.kinds || []) {
      sends.push({ kind, track: null, source: kind === "video" ? "camera" : null, height: camera.height });
    }
    for (const { kind, track, stream, source, height } of sends) {
      const enc = source === "camera" ? simulcastEncodings(height, this.hooks.sendCodec)
        : source === "screen" ? [{ maxFramerate: SCREEN_FPS }] : null;
      const tr = this.pc.addTransceiver(track || kind, { direction: "sendonly", ...(stream ? { streams: [stream] } : {}),
                                                         ...(enc ? { sendEncodings: enc } : {}) });
      if (!track) this.awaiting.push(tr);
      if (enc && source === "camera") cameras.push(tr);
    }
    // a page restricted to some video codecs announces them even without a camera: the call
    // server learns what a participant decodes from the video m-lines of its join offer
    const sendsVideo = (tr) => tr.direction === "sendonly" && tr.receiver.track.kind === "video";
    if (this.hooks.videoCodecs?.length && !this.pc.getTransceivers().some(sendsVideo)) {
      this.pc.addTransceiver("video", { direction: "recvonly" });
    }
    for (const kind of ["audio", "video"]) {
      for (let i = 0; i < expect[kind]; i++) this.pc.addTransceiver(kind, { direction: "recvonly" });
    }
    if (!this.pc.getTransceivers().length) this.pc.addTransceiver("audio", { direction: "recvonly" });
    for (const tr of this.pc.getTransceivers()) this.preferCodecs(tr);
    await this.pc.setLocalDescription();
    // a layer is a resolution the call server picks for a tile: under CPU or bandwidth pressure
    // the browser drops frames, not lines, so the choice stays true. Not in the SDP, so set
    // after the description: awaited before it, it held the join offer 20-50 ms while the
    // page's modules ran (bench/join_time)
    for (const tr of cameras) {
      const p = tr.sender.getParameters();
      p.degradationPreference = "maintain-resolution";
      tr.sender.setParameters(p).catch((err) => console.log("[parley] degradation", err));
    }
    // The offer goes at once, with no candidates, not once the first ones are gathered (5-40 ms
    // after the description on a cold page: docs/benchmarks.md, "2026-12-05 (4)"). The call
    // server's address is in its answer; this browser's checks reach it, and it learns the
    // browser's address from them (a peer-reflexive candidate, RFC 8445 section 7.3.1.3), a
    // NAT's or a TURN relay's alike, as ICE-lite servers do (mediasoup, Janus). A path the
    // browser's own checks cannot open would not carry its media either.
    return { sdp: forCallServer(sameTrackIds(this.pc.localDescription.sdp)), sources: this.localSources() };
  }

  // The camera and microphone opened after the join offer (offer's `camera`): their tracks go onto
  // the senders offered for them, with no renegotiation (the m-lines and their track ids stay).
  // Returns the track ids the call server knows of those that did not open (a refused camera),
  // for sfu.unpublish.
  async attach(stream) {
    const secs = this.ownSections();
    const missing = [];
    for (const tr of this.awaiting.splice(0)) {
      const track = stream?.getTracks().find((t) => t.kind === tr.receiver.track.kind);
      const id = secs.find((x) => x.mid === tr.mid)?.track;
      if (track) {
        if (id) announcedAs.set(track.id, id);
        await tr.sender.replaceTrack(track).catch((err) => console.log("[parley] attach", err));
      } else if (id) missing.push(id);
    }
    return this.closed ? [] : missing;
  }

  // our local description's m-sections, each track under the id the call server knows it by
  ownSections() { return sdpSections(sameTrackIds(this.pc.localDescription?.sdp || "")); }

  // a sender is the camera's when its track is, or when it waits for the camera's video track
  isCamera(tr) {
    const t = tr.sender.track;
    return t ? t.kind === "video" && this.hooks.sourceOf(t) === "camera"
      : this.awaiting.includes(tr) && tr.receiver.track.kind === "video";
  }

  preferCodecs(tr) {
    const kind = tr.sender.track?.kind || tr.receiver.track.kind;
    if (kind !== "video") return;
    const caps = RTCRtpReceiver.getCapabilities("video")?.codecs || [];
    const only = (this.hooks.videoCodecs || []).map((c) => `video/${c}`.toLowerCase());
    if (only.length) {
      const keep = caps.filter((c) => only.includes(c.mimeType.toLowerCase()) || c.mimeType === "video/rtx");
      try { tr.setCodecPreferences(keep); } catch (err) { console.log("[parley] codecs", err); }
      return;
    }
    // the camera's own codec first (the call server takes an offer's first codec it forwards)
    const send = this.isCamera(tr) && this.hooks.sendCodec
      ? `video/${this.hooks.sendCodec}`.toLowerCase() : "video/vp8";
    const rank = (c) => (c.mimeType.toLowerCase() === send ? 0 : c.mimeType === "video/VP8" ? 1 : c.mimeType === "video/rtx" ? 2 : 3);
    try { tr.setCodecPreferences([...caps].sort((a, b) => rank(a) - rank(b))); } catch { /* */ }
  }

  async onJoined(msg) {
    this.node = msg.node;
    // the others' tracks the answer put on our recvonly m-lines: known before their track events
    Object.assign(this.sources, msg.sources || {});
    for (const sec of sdpSections(msg.sdp)) if (sec.direction === "sendonly") this.remote[sec.mid] = sec;
    await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    this.answered = true;
  }

  // A server offer (new publishers, inactive m-lines of those who left, or a recvonly m-line to
  // publish a screen into): answer it, attaching waiting tracks to recvonly m-lines.
  async onOffer(msg) {
    if (!this.answered || this.closed) return null;  // stale: belongs to an earlier session
    Object.assign(this.sources, msg.sources || {});
    const sdp = this.samePayloadTypes(this.sameExtensionIds(msg.sdp));
    for (const sec of sdpSections(sdp)) this.remote[sec.mid] = sec;
    await this.pc.setRemoteDescription({ type: "offer", sdp });
    const screens = [];
    for (const tr of this.pc.getTransceivers()) {
      const sec = this.remote[tr.mid];
      if (!sec || sec.direction !== "recvonly" || tr.sender.track || tr.currentDirection) continue;
      const i = this.toPublish.findIndex((x) => x.track.kind === sec.kind);
      if (i < 0) continue;
      const { track, stream } = this.toPublish.splice(i, 1)[0];
      await tr.sender.replaceTrack(track);
      tr.sender.setStreams(stream);
      tr.direction = "sendonly";
      if (this.hooks.sourceOf(track) === "screen") screens.push(tr.sender);
    }
    await this.pc.setLocalDescription();
    for (const sender of screens) {
      const p = sender.getParameters();
      if (!p.encodings?.length) continue;
      p.encodings[0].maxFramerate = SCREEN_FPS;
      await sender.setParameters(p).catch((err) => console.log("[parley] screen parameters", err));
    }
    return { sdp: sameTrackIds(this.pc.localDescription.sdp), sources: this.localSources() };
  }

  // aiortc numbers header extensions of the m-lines it adds its own way (mid=1, ...), which
  // collides with the ids this browser chose in the bundle; Chrome refuses a reassignment. The
  // call server forwards no header extensions, so its new m-lines simply take our ids (and
  // extensions we never negotiated are left out).
  sameExtensionIds(sdp) {
    const ids = {};
    const local = this.pc.localDescription?.sdp || "";
    for (const m of local.matchAll(/a=extmap:(\d+)(?:\/\w+)? (\S+)/g)) ids[m[2]] = m[1];
    return sdp.split("\r\n").flatMap((line) => {
      const m = /^a=extmap:(\d+)(\/\w+)? (\S+)(.*)$/.exec(line);
      if (!m) return [line];
      return ids[m[3]] ? [`a=extmap:${ids[m[3]]}${m[2] || ""} ${m[3]}${m[4]}`] : [];
    }).join("\r\n");
  }

  // aiortc also renumbers codecs in every offer it makes (opus=96, VP8=97, ...), even for m-lines
  // already negotiated with this browser's numbers: the browser would switch payload types under
  // the call server's feet, and a bundle must not use one number for two codecs. So the offer is
  // rewritten to this browser's numbers (codecs it never offered get free numbers, kept stable).
  samePayloadTypes(sdp) {
    const key = (c) => {
      const base = `${c.name.toLowerCase()}/${c.rate}/${c.channels || 1}`;
      // VP9 profiles are distinct codecs (RFC 9628 section 6): profile 0 never takes profile 2's type;
      // AV1's likewise (its payload format, section 7.2)
      if (c.name.toLowerCase() === "vp9") return `${base}/${/profile-id=(\d)/.exec(c.fmtp || "")?.[1] || 0}`;
      if (c.name.toLowerCase() === "av1") return `${base}/${/(?:^|;)\s*profile=(\d)/.exec(c.fmtp || "")?.[1] || 0}`;
      if (c.name.toLowerCase() !== "h264") return base;
      const f = c.fmtp || "";
      return `${base}/${/packetization-mode=(\d)/.exec(f)?.[1] || 0}`
        + `/${(/profile-level-id=(\w{4})/.exec(f)?.[1] || "").toLowerCase()}`;
    };
    const codecsOf = (section) => {
      const out = {};
      for (const m of section.matchAll(/a=rtpmap:(\d+) ([\w-]+)\/(\d+)(?:\/(\d+))?/g)) {
        out[m[1]] = { pt: m[1], name: m[2], rate: m[3], channels: m[4] };
      }
      for (const m of section.matchAll(/a=fmtp:(\d+) (.*)/g)) if (out[m[1]]) out[m[1]].fmtp = m[2];
      return Object.values(out);
    };
    this.ptOf = this.ptOf || {};  // codec key (rtx: "rtx:" + base key) -> our payload type
    const used = new Set(Object.values(this.ptOf));
    const ours = (this.pc.localDescription?.sdp || "").split(/\r?\nm=/).slice(1);
    for (const section of ours) {
      const codecs = codecsOf(section);
      const byPt = Object.fromEntries(codecs.map((c) => [c.pt, c]));
      for (const c of codecs) {
        const apt = /apt=(\d+)/.exec(c.fmtp || "")?.[1];
        const k = c.name.toLowerCase() === "rtx" ? (byPt[apt] ? "rtx:" + key(byPt[apt]) : null) : key(c);
        if (k && !(k in this.ptOf)) this.ptOf[k] = c.pt;
        used.add(c.pt);
      }
    }
    const free = () => {
      for (let pt = 96; pt <= 127; pt++) if (!used.has(String(pt))) { used.add(String(pt)); return String(pt); }
      for (let pt = 35; pt <= 63; pt++) if (!used.has(String(pt))) { used.add(String(pt)); return String(pt); }
      return null;
    };
    const [head, ...sections] = sdp.split(/\r\nm=/);
    const out = sections.map((section) => {
      const codecs = codecsOf(section);
      const byPt = Object.fromEntries(codecs.map((c) => [c.pt, c]));
      const map = {};
      for (const c of codecs.filter((x) => x.name.toLowerCase() !== "rtx")) {
        const k = key(c);
        if (!(k in this.ptOf)) this.ptOf[k] = free();
        map[c.pt] = this.ptOf[k];
      }
      for (const c of codecs.filter((x) => x.name.toLowerCase() === "rtx")) {
        const apt = /apt=(\d+)/.exec(c.fmtp || "")?.[1];
        if (!byPt[apt] || !map[apt]) continue;
        const k = "rtx:" + key(byPt[apt]);
        if (!(k in this.ptOf)) this.ptOf[k] = free();
        map[c.pt] = this.ptOf[k];
      }
      const lines = section.split("\r\n");
      const [kind, port, proto, ...pts] = lines[0].split(" ");
      lines[0] = [kind, port, proto, ...pts.filter((pt) => map[pt]).map((pt) => map[pt])].join(" ");
      return lines.flatMap((line, i) => {
        if (i === 0) return [line];
        const m = /^a=(rtpmap|fmtp|rtcp-fb):(\d+|\*)( .*)$/.exec(line);
        if (!m || m[2] === "*") return [line];
        if (!map[m[2]]) return [];
        const rest = m[1] === "fmtp" ? m[3].replace(/apt=(\d+)/, (_, a) => `apt=${map[a] || a}`) : m[3];
        return [`a=${m[1]}:${map[m[2]]}${rest}`];
      }).join("\r\n");
    });
    return [head, ...out].join("\r\nm=");
  }

  publish(track, stream) { this.toPublish.push({ track, stream }); }

  // Stop sending a track (a screen share ended): its sender goes idle and the track id the call
  // server knows it by (this description's msid) is returned for sfu.unpublish; null when the
  // track never reached an m-line (then it only leaves the waiting list).
  unpublish(track) {
    this.toPublish = this.toPublish.filter((x) => x.track !== track);
    const tr = this.pc.getTransceivers().find((t) => t.sender.track === track);
    if (!tr || this.closed) return null;
    const announced = this.ownSections().find((x) => x.mid === tr.mid)?.track;
    tr.sender.replaceTrack(null).catch(() => {});
    return announced || null;
  }

  // sfu.layer: the node moved our copy of a remote track to another layer (or transcoded rung).
  onLayer(msg) { this.layerOf[`${msg.participant}|${msg.track}`] = msg; }

  layer(participant, track) { return this.layerOf[`${participant}|${track}`] || null; }

  // sfu.layers (dynacast): encode only the layers of our camera that somebody receives.
  async onLayers(msg) {
    const secs = this.ownSections();
    for (const tr of this.pc.getTransceivers()) {
      // a camera still opening too: its layers start as the call server wants them
      if (!(tr.sender.track || this.awaiting.includes(tr)) || secs.find((x) => x.mid === tr.mid)?.track !== msg.track) continue;
      const p = tr.sender.getParameters();
      let changed = false;
      for (const e of p.encodings || []) {
        const on = !e.rid || msg.active.includes(e.rid);
        if (e.active !== on) { e.active = on; changed = true; }
      }
      if (changed) await tr.sender.setParameters(p).catch((err) => console.log("[parley] layers", err));
    }
  }

  // The height each remote video renders at (hooks.tileHeight), by the publisher's track id; null
  // when nothing changed since the last report.
  views() {
    const views = {};
    for (const tr of this.pc.getTransceivers()) {
      if (!this.receiving(tr) || tr.receiver.track.kind !== "video") continue;
      const sec = this.remote[tr.mid];
      const h = this.hooks.tileHeight?.(sec.stream, this.sourceOf(tr.mid, "video"));
      if (h && sec.track) views[sec.track] = h;
    }
    const key = JSON.stringify(views);
    if (key === this.sentViews || !Object.keys(views).length) return null;
    this.sentViews = key;
    return views;
  }

  // What our video senders encode now (rid, active, resolution, codec, scalability mode), for
  // stats() and the tests.
  async outbound() {
    const out = [];
    for (const tr of this.pc.getTransceivers()) {
      if (tr.sender.track?.kind !== "video") continue;
      const report = await tr.sender.getStats();
      report.forEach((s) => {
        if (s.type !== "outbound-rtp") return;
        out.push({ rid: s.rid || null, active: s.active !== false, frameHeight: s.frameHeight || 0,
                   framesEncoded: s.framesEncoded || 0, source: this.hooks.sourceOf(tr.sender.track),
                   codec: report.get(s.codecId)?.mimeType?.split("/")[1] || null,
                   scalabilityMode: s.scalabilityMode || null });
      });
    }
    return out;
  }

  // My video senders' track ids as they appear in my description (msid), -> camera | screen.
  localSources() {
    const secs = this.ownSections();
    const out = {};
    for (const tr of this.pc.getTransceivers()) {
      const t = tr.sender.track;
      const sec = secs.find((s) => s.mid === tr.mid);
      if (!sec?.track || tr.receiver.track.kind !== "video") continue;
      if (t) out[sec.track] = this.hooks.sourceOf(t);
      else if (this.isCamera(tr)) out[sec.track] = "camera";
    }
    return out;
  }

  sourceOf(mid, kind) {
    const sec = this.remote[mid];
    if (kind === "audio") return "microphone";
    return (sec && this.sources[sec.track]) || "camera";
  }

  onTrack(e) {
    const sec = this.remote[e.transceiver.mid];
    if (!sec?.stream) return;
    this.hooks.onTrack(sec.stream, this.sourceOf(e.transceiver.mid, e.track.kind), e.track);
  }

  receiving(tr) {
    const sec = this.remote[tr.mid];
    return sec && sec.stream && ["recvonly", "sendrecv"].includes(tr.currentDirection);
  }

  async inbound() {
    const out = [];
    for (const tr of this.pc.getTransceivers()) {
      if (!this.receiving(tr)) continue;
      const sec = this.remote[tr.mid];
      const report = await tr.receiver.getStats();
      report.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        const layer = s.kind === "video" ? this.layer(sec.stream, sec.track) : null;
        out.push({ participant: sec.stream, kind: s.kind, source: this.sourceOf(tr.mid, s.kind),
                   framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0,
                   bytesReceived: s.bytesReceived || 0, frameWidth: s.frameWidth || 0,
                   frameHeight: s.frameHeight || 0, freezeCount: s.freezeCount || 0,
                   totalFreezesDuration: s.totalFreezesDuration || 0,
                   layer: layer ? layer.rid : null, layerReason: layer ? layer.reason : null,
                   transcoded: !!layer?.transcoded,
                   codec: report.get(s.codecId)?.mimeType?.split("/")[1] || null });
      });
    }
    return out;
  }

  async candidatePair() {
    return selectedPair(await this.pc.getStats());
  }

  close() { this.closed = true; this.pc.close(); }
}

// The pair ICE carries media on: the transport's selectedCandidatePairId (W3C webrtc-stats), which
// stays set while a consent check leaves the pair itself "in-progress" for a moment.
function selectedPair(report) {
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (!pair) return null;
  const local = report.get(pair.localCandidateId); const remote = report.get(pair.remoteCandidateId);
  return { local: local?.candidateType, remote: remote?.candidateType,
           relayProtocol: local?.relayProtocol || null };
}

// Client telemetry (docs/signaling.md, "Telemetry"): client.info once per connection and a
// quality.sample every telemetryIntervalMs while in a room.
import { local, log, peers, send, server } from "./core.js";

// client.info once per connection, quality.sample every telemetryIntervalMs (from welcome) while
// in a room. Browser family, major version, OS family and device class only: no user agent string.
export function clientInfo() {
  const ua = navigator.userAgent;
  let browser = "other"; let browserVersion;
  for (const [token, name] of [["Edg", "edge"], ["Firefox", "firefox"], ["Chrome", "chrome"],
                               ["Version", "safari"]]) {
    const m = new RegExp(`${token}/(\\d+)`).exec(ua);
    if (m) { browser = name; browserVersion = m[1]; break; }
  }
  const mobile = navigator.userAgentData?.mobile ?? /Mobi|Android/.test(ua);
  const device = /iPad|Tablet/.test(ua) ? "tablet" : mobile ? "mobile" : "desktop";
  const os = navigator.userAgentData?.platform || [["Windows", /Windows/], ["macOS", /Mac OS/],
    ["Android", /Android/], ["iOS", /iPhone|iPad/], ["Linux", /Linux/]].find(([, re]) => re.test(ua))?.[0];
  return { browser, device, ...(browserVersion ? { browserVersion } : {}),
           ...(os ? { os: os.slice(0, 32) } : {}) };
}

export const telemetry = { timer: null, at: 0, prev: new WeakMap(), intervalMs: 10000 };
const clamp = (v, hi) => Math.min(hi, Math.max(0, v || 0));

// Every RTCPeerConnection carrying my media: mesh pairs (or a pair's call-server session) and
// the room's call-server session; "sfu" when it goes through a call server.
function mediaConnections() {
  const out = [];
  for (const peer of peers.values()) {
    out.push(peer.pairSfu ? { pc: peer.pairSfu.pc, sfu: true, peer } : { pc: peer.pc, sfu: false, peer });
  }
  if (server.sfu) out.push({ pc: server.sfu.pc, sfu: true, peer: null });
  return out;
}

export async function qualitySample() {
  const now = performance.now();
  const intervalMs = Math.round(clamp(now - telemetry.at, 600000)); telemetry.at = now;
  const tracks = []; let rtt = null; let lost = 0; let received = 0;
  let path = server.sfu ? "sfu" : "p2p";
  for (const { pc, sfu: viaSfu, peer } of mediaConnections()) {
    if (pc.connectionState === "closed") continue;
    if (viaSfu) path = "sfu";
    const report = await pc.getStats();
    const prev = telemetry.prev.get(pc) || new Map();
    const next = new Map();
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        if (s.currentRoundTripTime !== undefined) rtt = Math.max(rtt ?? 0, s.currentRoundTripTime * 1000);
        if (path === "p2p" && report.get(s.localCandidateId)?.candidateType === "relay") path = "turn";
      }
      if ((s.type !== "inbound-rtp" && s.type !== "outbound-rtp") || !["audio", "video"].includes(s.kind)) return;
      const inbound = s.type === "inbound-rtp";
      const bytes = (inbound ? s.bytesReceived : s.bytesSent) || 0;
      const was = prev.get(s.id) || { bytes: 0, at: telemetry.at - intervalMs, freezes: 0, freezeS: 0,
                                      lost: 0, received: 0 };
      const cur = { bytes, at: now, freezes: s.freezeCount || 0, freezeS: s.totalFreezesDuration || 0,
                    lost: s.packetsLost || 0, received: s.packetsReceived || 0 };
      next.set(s.id, cur);
      if (inbound && bytes === was.bytes) return;  // not receiving (a track that ended)
      const trackId = inbound ? s.trackIdentifier : report.get(s.mediaSourceId)?.trackIdentifier;
      const source = s.kind === "audio" ? "microphone"
        : (local.screen?.getTracks().some((t) => t.id === trackId)
           || peer?.trackSources[trackId] === "screen") ? "screen" : "camera";
      const t = { kind: s.kind, direction: inbound ? "in" : "out", source,
                  bitrateKbps: Math.round(clamp((bytes - was.bytes) * 8 / Math.max(1, now - was.at), 1e6)) };
      if (s.kind === "video") {
        Object.assign(t, { width: clamp(s.frameWidth, 16384), height: clamp(s.frameHeight, 16384),
                           fps: Math.round(clamp(s.framesPerSecond, 240) * 10) / 10 });
        if (inbound) {
          t.freezes = Math.round(clamp(cur.freezes - was.freezes, 10000));
          t.freezeMs = Math.round(clamp((cur.freezeS - was.freezeS) * 1000, 600000));
        }
      }
      if (inbound) {
        lost += Math.max(0, cur.lost - was.lost); received += Math.max(0, cur.received - was.received);
      }
      tracks.push(t);
    });
    telemetry.prev.set(pc, next);
  }
  const sample = { intervalMs, path, tracks: tracks.slice(0, 32) };
  if (rtt !== null) sample.rttMs = Math.round(clamp(rtt, 60000));
  if (lost + received > 0) sample.loss = Math.round(lost / (lost + received) * 1e4) / 1e4;
  return sample;
}

export function startTelemetry() {
  stopTelemetry();
  telemetry.at = performance.now();
  telemetry.timer = setInterval(async () => {
    try { send({ type: "quality.sample", sample: await qualitySample() }); }
    catch (err) { log("quality sample failed", err); }
  }, telemetry.intervalMs);
}
export function stopTelemetry() { clearInterval(telemetry.timer); telemetry.timer = null; }

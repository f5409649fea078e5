// Go live: publish the camera or a screen to a Parley broadcast over WHIP (RFC 9725).
// POST the offer (application/sdp, Bearer stream key) -> 201 + Location + answer; DELETE the
// Location on stop. No trickle ICE (Parley answers PATCH with 405): candidates go in the offer.
// H.264 packetization-mode 1 is what the broadcast path carries (HLS needs it), so it is the only
// video codec offered. docs/broadcast.md, "Pages".

const $ = (id) => document.getElementById(id);
const ICE_GATHER_MS = 2000;
// where /live is served (an ingest host; `parley signaling` adds it from PARLEY_BROADCAST_URL)
const base = (new URLSearchParams(location.search).get("base") || location.origin)
  .replace(/\/+$/, "");

// what the page is doing, for people and for tests (window.golive)
export const golive = { state: "idle", location: null, error: null, sent: null };
window.golive = golive;

let pc = null;
let media = null;
let token = "";
let statsTimer = null;

function show(state, text) {
  golive.state = state;
  $("state").dataset.state = state;
  $("state").textContent = text;
}

function fail(message) {
  golive.error = message;
  $("error").textContent = message;
  $("error").hidden = false;
  show("error", "error");
}

function whipUrl(name) {
  const custom = $("ingest-url").value.trim();
  return custom ? new URL(custom, location.href).href
    : `${base}/live/${encodeURIComponent(name)}/whip`;
}

async function capture() {
  const withMic = $("mic").checked;
  if ($("source").value === "screen") {
    const screen = await navigator.mediaDevices.getDisplayMedia({
      video: { frameRate: { ideal: 30 } }, audio: withMic });
    if (withMic && !screen.getAudioTracks().length) {  // a window or screen without audio
      const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      mic.getAudioTracks().forEach((t) => screen.addTrack(t));
    }
    return screen;
  }
  const h = Number($("height").value);
  return navigator.mediaDevices.getUserMedia({
    video: { height: { ideal: h }, width: { ideal: Math.round(h * 16 / 9) },
             frameRate: { ideal: 30 } },
    audio: withMic });
}

// H.264 packetization-mode 1 only, constrained baseline (42e0..) first, with its RTX
function preferH264(transceiver) {
  const codecs = RTCRtpSender.getCapabilities("video").codecs;
  const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264"
    && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
  if (!h264.length) {
    throw new Error("this browser cannot send H.264 (packetization-mode 1), the only video "
                    + "codec Parley's broadcast path carries");
  }
  const rank = (c) => (/profile-level-id=42e0/.test(c.sdpFmtpLine) ? 0 : 1);
  h264.sort((a, b) => rank(a) - rank(b));
  const rtx = codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
  transceiver.setCodecPreferences([...h264, ...rtx]);
}

// Under CPU or network pressure the browser would scale the picture down; a new source size
// re-opens every rung's encoder and puts a discontinuity in LL-HLS, so keep the size, drop frames.
async function keepResolution(sender) {
  try {
    const params = sender.getParameters();
    params.degradationPreference = "maintain-resolution";
    await sender.setParameters(params);
  } catch {
    if (sender.track) sender.track.contentHint = "detail";  // same effect in Chromium
  }
}

function gathered(peer) {
  return new Promise((resolve) => {
    if (peer.iceGatheringState === "complete") { resolve(); return; }
    const timer = setTimeout(resolve, ICE_GATHER_MS);  // host candidates come at once
    peer.addEventListener("icegatheringstatechange", () => {
      if (peer.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function refusal(res) {
  try {
    const body = await res.json();
    const d = body.detail || {};
    return `${res.status} ${d.code || ""}: ${d.message || JSON.stringify(body)}`;
  } catch {
    return `${res.status} ${res.statusText}`;
  }
}

async function goLive() {
  $("error").hidden = true;
  golive.error = null;
  const name = $("broadcast").value.trim();
  token = $("stream-key").value.trim();
  if (!name || !token) { fail("a broadcast name and a stream key are needed"); return; }
  $("go").disabled = true;
  show("connecting", "capturing");
  try {
    media = await capture();
    $("preview").srcObject = media;
    pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    for (const track of media.getTracks()) {
      const t = pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
      if (track.kind === "video") {
        preferH264(t);
        await keepResolution(t.sender);
      }
      track.addEventListener("ended", () => stop());  // "stop sharing" in the browser's bar
    }
    pc.addEventListener("connectionstatechange", () => {
      const s = pc && pc.connectionState;
      if (s === "connected") show("live", "LIVE");
      else if (s === "failed") { fail("the connection to the ingest failed"); stop(); }
      else if (s === "disconnected") show("connecting", "reconnecting");
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    show("connecting", "connecting");
    const url = whipUrl(name);
    const res = await fetch(url, {
      method: "POST", body: pc.localDescription.sdp,
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` } });
    if (res.status !== 201) throw new Error(`the ingest refused: ${await refusal(res)}`);
    golive.location = new URL(res.headers.get("Location"), url).href;
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
    $("stop").disabled = false;
    const watch = $("watch-link");
    watch.href = `/watch/${encodeURIComponent(name)}`
      + (base === location.origin ? "" : `?base=${encodeURIComponent(base)}`);
    watch.hidden = !!$("ingest-url").value.trim();
    statsTimer = setInterval(sample, 1000);
  } catch (err) {
    fail(err.message || String(err));
    await stop();
  }
}

let last = null;

async function sample() {
  if (!pc) return;
  const report = await pc.getStats();
  let out = null;
  report.forEach((s) => { if (s.type === "outbound-rtp" && s.kind === "video") out = s; });
  if (!out) return;
  const codec = out.codecId && report.get(out.codecId);
  const kbps = last ? (8 * (out.bytesSent - last.bytesSent)) / (out.timestamp - last.timestamp)
    : 0;
  last = out;
  golive.sent = { width: out.frameWidth, height: out.frameHeight, fps: out.framesPerSecond,
                  kbps: Math.round(kbps), codec: codec ? codec.mimeType : null,
                  framesEncoded: out.framesEncoded,
                  limitedBy: out.qualityLimitationReason };
  const g = golive.sent;
  $("stats").textContent = `${g.codec || "?"} ${g.width || 0}x${g.height || 0} `
    + `${g.fps || 0} fps ${g.kbps} kbit/s` + (g.limitedBy && g.limitedBy !== "none"
      ? ` (limited by ${g.limitedBy})` : "");
}

async function stop() {
  clearInterval(statsTimer);
  last = null;
  const where = golive.location;
  golive.location = null;
  if (where) {  // end the source at the ingest (RFC 9725 section 4.2)
    try {
      await fetch(where, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
    } catch { /* the ingest times the session out anyway */ }
  }
  if (pc) { pc.close(); pc = null; }
  if (media) { media.getTracks().forEach((t) => t.stop()); media = null; }
  $("preview").srcObject = null;
  $("go").disabled = false;
  $("stop").disabled = true;
  if (golive.state !== "error") show("idle", "off air");
}

$("golive-form").addEventListener("submit", goLive);
$("stop").addEventListener("click", stop);
window.addEventListener("pagehide", () => {
  if (golive.location) {
    fetch(golive.location, { method: "DELETE", keepalive: true,
                             headers: { Authorization: `Bearer ${token}` } });
  }
});
const wanted = new URLSearchParams(location.search).get("b");
if (wanted) $("broadcast").value = wanted;

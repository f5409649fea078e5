// Capture: camera and microphone tracks with the devices picked (prejoin, the meeting's device
// menu), what a refused or missing device means in plain words, and the capabilities a join
// announces. Its own module with no page code behind it, so early.js can open the camera and
// join while the rest of the client loads.
import { local, log, opts, state } from "./core.js";

// the kinds' device names and getUserMedia with the devices picked, from boot.js; takeMedia: the
// call boot.js began for a link that joins at once, if it asked for the same kinds
const { ask, takeMedia } = window.parleyBoot;
export const { KINDS } = window.parleyBoot;

const GONE = ["OverconstrainedError", "NotFoundError"];
const WHY = {
  NotAllowedError: ["refused", "was refused: allow it in the browser's site settings"],
  SecurityError: ["refused", "was refused: allow it in the browser's site settings"],
  NotFoundError: ["missing", "was not found"],
  OverconstrainedError: ["missing", "was not found"],
  NotReadableError: ["busy", "is in use by another application"],
};
function describe(failures) {
  const parts = Object.entries(failures).map(([kind, err]) => {
    const [code, text] = WHY[err.name] || ["failed", `failed (${err.name})`];
    return { code: `${kind === "video" ? "camera" : "microphone"}_${code}`,
             text: `The ${kind === "video" ? "camera" : "microphone"} ${text}` };
  });
  const without = Object.keys(failures).map((k) => (k === "video" ? "video" : "sound")).join(" or ");
  return { code: parts.map((p) => p.code).join(","),
           message: `${parts.map((p) => p.text).join(". ")}. You can still join, without ${without}.` };
}

// Camera and/or microphone tracks; each kind on its own when asking for both fails, so a
// refused camera still lets the microphone through. Failures land in state.mediaError.
export async function acquire(kinds) {
  const want = kinds.filter((k) => opts[k]);
  if (!want.length) return [];
  try {
    return (await takeMedia(want)).getTracks();
  } catch (err) {
    const failures = {}; const tracks = []; let defaulted = false;
    for (const kind of want) {
      try { tracks.push(...(await ask([kind])).getTracks()); continue; } catch (e) { failures[kind] = e; }
      if (!opts.devices[KINDS[kind]] || !GONE.includes(failures[kind].name)) continue;
      opts.devices[KINDS[kind]] = null;  // the remembered or picked device is gone: the default
      try {
        tracks.push(...(await ask([kind])).getTracks()); delete failures[kind]; defaulted = true;
      } catch (e) { failures[kind] = e; }
    }
    if (defaulted && !Object.keys(failures).length) return tracks;
    if (!Object.keys(failures).length) failures[want[0]] = err;
    state.mediaError = describe(failures);
    log("media:", state.mediaError.message);
    window.dispatchEvent(new CustomEvent("parley:media-error", { detail: state.mediaError }));
    return tracks;
  }
}

// The camera + microphone stream (opened once; the prejoin screen may have opened it already).
let cameraReady = null;
export function openCamera() {
  cameraReady = cameraReady || acquire(["audio", "video"]).then((tracks) => {
    local.stream = new MediaStream(tracks);
    local.sources[local.stream.id] = "camera";
    return local.stream;
  });
  return cameraReady;
}

// A join (early.js, rooms.js) needs the tracks (capabilities, what I send) but not their tile:
// the join goes out first, the self tile, device watch and screen share follow
// (media.js showLocalMedia) while it travels.
let mediaReady = null;
let mediaOpen = false;
export function ensureLocalMedia() {
  mediaReady = mediaReady || openLocalMedia().then(() => { mediaOpen = true; });
  return mediaReady;
}
// the camera and microphone are open (or refused, or not asked for): local.stream is final
export const localMediaOpen = () => mediaOpen;
async function openLocalMedia() {
  if (opts.audio || opts.video) {
    const stream = await openCamera();
    for (const t of stream.getAudioTracks()) t.enabled = !opts.muted;
    for (const t of stream.getVideoTracks()) t.enabled = !opts.cameraOff;
    if (!stream.getTracks().length) { delete local.sources[stream.id]; local.stream = null; }
  }
  const live = (kind) => !!local.stream?.getTracks().some((t) => t.kind === kind && t.enabled);
  Object.assign(state.media, { audio: live("audio"), video: live("video") });
  window.dispatchEvent(new CustomEvent("parley:media", { detail: state.media }));
}

export async function capabilities() {
  const codecs = new Set();
  for (const kind of ["video", "audio"]) {
    for (const c of (RTCRtpReceiver.getCapabilities(kind)?.codecs || [])) {
      const name = c.mimeType.split("/")[1];
      if (["VP8", "VP9", "H264", "AV1", "opus"].includes(name)) codecs.add(name);
    }
  }
  // the camera's own settings once it is open; before (a join that does not wait for it), what
  // it was asked for
  const track = local.stream?.getVideoTracks()[0];
  const asked = opts.video ? { height: opts.height, frameRate: opts.fps } : {};
  const settings = track?.getSettings() || asked;
  return {
    maxHeight: Math.max(90, settings.height || 720),
    maxFps: Math.round(settings.frameRate || 30),
    bandwidthKbps: opts.bandwidthKbps ||
      Math.max(50, Math.round((navigator.connection?.downlink || 1.5) * 1000)),
    codecs: [...codecs].slice(0, 16),
  };
}

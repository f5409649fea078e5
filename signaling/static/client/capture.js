// Capture: camera and microphone tracks with the devices picked (prejoin, the meeting's device
// menu), and what a refused or missing device means in plain words. Its own module with no
// page code behind it, so early.js can open the camera while the rest of the client loads.
import { local, log, opts, state } from "./core.js";

export const KINDS = { audio: "audioinput", video: "videoinput" };

// A picked device is asked for exactly: Chromium treats an `ideal` deviceId as one wish among
// the size and rate and may open the default camera instead (measured with its fake devices).
function constraints(kind) {
  const id = opts.devices[KINDS[kind]];
  const device = id ? { deviceId: { exact: id } } : {};
  if (kind === "audio") return id ? device : true;
  return { width: opts.width, height: opts.height, ...(opts.fps ? { frameRate: opts.fps } : {}), ...device };
}

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
  const ask = (ks) => navigator.mediaDevices.getUserMedia(
    Object.fromEntries(["audio", "video"].map((k) => [k, ks.includes(k) ? constraints(k) : false])));
  try {
    return (await ask(want)).getTracks();
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

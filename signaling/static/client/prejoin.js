// The prejoin screen of a meeting link: camera preview, camera / microphone / speaker pickers,
// the display name (remembered), join muted or with the camera off, and a clear message when a
// device is refused or missing; joining always stays possible. A link with ?name= skips it
// (the front page's form, scripts and tests made those choices already).
import { $, local, opts, remember, state } from "./core.js";
import { openCamera } from "./media.js";
import { fillPickers } from "./devices.js";

function showMediaError() {
  const el = $("#prejoin-error");
  if (!el) return;
  el.hidden = !state.mediaError;
  el.textContent = state.mediaError?.message || "";
}

function preview() {
  const video = $("#preview");
  if (!video) return;
  video.srcObject = local.stream?.getVideoTracks().length ? local.stream : null;
  video.play().catch(() => {});
  $("#preview-empty").hidden = !!video.srcObject && !opts.cameraOff;
}

function pickers() {
  return { videoinput: $("#pick-camera"), audioinput: $("#pick-mic"), audiooutput: $("#pick-speaker") };
}

export async function prejoin() {
  const screen = $("#prejoin");
  if (!screen) return;
  screen.hidden = false;
  const name = $("#prejoin-name");
  name.value = opts.name === "Guest" ? "" : opts.name;
  const mic = $("#prejoin-mic"); const cam = $("#prejoin-cam");
  mic.onchange = () => { opts.muted = !mic.checked; };
  cam.onchange = () => {
    opts.cameraOff = !cam.checked;
    for (const t of local.stream?.getVideoTracks() || []) t.enabled = cam.checked;
    preview();
  };
  name.focus();
  const joined = new Promise((resolve) => {
    $("#prejoin-form").addEventListener("submit", (e) => { e.preventDefault(); resolve(); }, { once: true });
  });
  // asks for permission (a refusal lands in state.mediaError); Join works while it is pending
  openCamera().then(async () => {
    showMediaError(); preview();
    // labels are known once permission is granted
    await fillPickers(pickers(), () => { showMediaError(); preview(); });
  });
  await joined;
  opts.name = name.value.trim().slice(0, 64) || "Guest";
  if (opts.name !== "Guest") remember("parley.name", opts.name);
  $("#preview").srcObject = null;
  screen.hidden = true;
}

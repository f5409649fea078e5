// The page's controls: microphone, camera, screen share (start / stop), the device menu
// (camera, microphone, speaker mid-meeting), layout, raise hand, people and chat panels, invite
// link, leave (with a confirmation), keyboard shortcuts (m, v), and the front page's
// "New meeting" / "Join" and 1:1 call forms. Every control has an aria label.
import { $, local, opts, pathRoom, remember, state } from "./core.js";
import { startScreen, stopScreen, toggle } from "./media.js";
import { fillPickers } from "./devices.js";
import { leaveRoom } from "./rooms.js";
import { raiseHand } from "./people.js";
import { setLayout, view } from "./view.js";
import { calls } from "./calls.js";
import { fillIcons } from "./icons.js";
import { showContacts } from "./contacts.js";

function setButton(sel, on, text, label) {
  const b = $(sel);
  if (!b) return;
  const t = b.querySelector(".text") || b;
  t.textContent = text;
  b.setAttribute("aria-label", label);
  b.title = label;
  b.setAttribute("aria-pressed", String(on));
}

export function renderControls() {
  const a = state.media.audio; const v = state.media.video;
  setButton("#toggle-audio", !a, a ? "Mute" : "Unmute",
    a ? "Mute the microphone (m)" : "Unmute the microphone (m)");
  setButton("#toggle-video", !v, v ? "Camera off" : "Camera on",
    v ? "Turn the camera off (v)" : "Turn the camera on (v)");
  setButton("#raise-hand", state.media.hand, state.media.hand ? "Lower hand" : "Raise hand",
    state.media.hand ? "Lower your hand" : "Raise your hand");
  const sharing = !!local.screen;
  setButton("#share-screen", sharing, sharing ? "Stop sharing" : "Share",
    sharing ? "Stop sharing your screen" : "Share your screen");
  setButton("#layout", view.layout === "speaker", view.layout === "grid" ? "Speaker view" : "Grid view",
    view.layout === "grid" ? "Switch to the speaker layout" : "Switch to the grid layout");
}

export function toast(text) {
  const el = $("#toast");
  if (!el) return;
  el.textContent = text; el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

export function inviteLink() {
  return `${location.origin}/m/${encodeURIComponent(state.room || pathRoom || "")}`;
}

async function copyInvite() {
  const link = inviteLink();
  try { await navigator.clipboard.writeText(link); toast("Invite link copied"); }
  catch { toast(`Invite link: ${link}`); }  // no clipboard permission: show it to copy by hand
}

function togglePanel(id, open) {
  const panel = $(`#${id}`);
  const button = $(`[aria-controls="${id}"]`);
  if (!panel) return;
  const show = open ?? panel.hidden;
  panel.hidden = !show;
  button?.setAttribute("aria-expanded", String(show));
}

// The device menu: the prejoin's pickers (devices.js), switching mid-meeting.
function devicePickers() {
  return { videoinput: $("#menu-camera"), audioinput: $("#menu-mic"), audiooutput: $("#menu-speaker") };
}
async function openDevices() {
  const dialog = $("#devices-dialog");
  if (!dialog) return;
  await fillPickers(devicePickers());
  if (!dialog.open) dialog.showModal();
}

function leaveAsked() {
  const dialog = $("#leave-dialog");
  if (dialog?.showModal) dialog.showModal(); else if (confirm("Leave the meeting?")) leaveNow();
}
function leaveNow() {
  leaveRoom();
  for (const s of [local.stream, local.screen]) for (const t of s?.getTracks() || []) t.stop();
  $("#left") && ($("#left").hidden = false);
  $("#meeting") && ($("#meeting").hidden = true);
  $("#controls") && ($("#controls").hidden = true);
}

// Keyboard shortcuts, outside text fields: m mutes / unmutes, v turns the camera off / on.
function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  if (e.target.closest?.("input, textarea, select, [contenteditable]")) return;
  if (!state.room) return;
  if (e.key === "m" || e.key === "M") { toggle("audio"); renderControls(); }
  else if (e.key === "v" || e.key === "V") { toggle("video"); renderControls(); }
}

// "New meeting": a random, readable room name (letters, digits and dashes).
export function randomRoom() {
  const words = ["amber", "brisk", "calm", "dawn", "ember", "fern", "gale", "harbor", "iris",
                 "jade", "kite", "lumen", "maple", "north", "opal", "pine", "quartz", "river",
                 "slate", "tide", "umber", "vale", "willow", "zephyr"];
  const r = crypto.getRandomValues(new Uint32Array(3));
  return `${words[r[0] % words.length]}-${words[r[1] % words.length]}-${(r[2] % 9000) + 1000}`;
}

// A room name or an invite link (…/m/<room>) typed into "Join".
export function roomFrom(text) {
  const t = text.trim();
  const m = /\/m\/([^?#\s]+)/.exec(t);
  return m ? decodeURIComponent(m[1]) : t;
}

export function wireUi() {
  fillIcons();
  $("#name-shown") && ($("#name-shown").textContent = opts.name);
  $("#room-shown") && ($("#room-shown").textContent = pathRoom || "");
  $("#toggle-audio")?.addEventListener("click", () => { toggle("audio"); renderControls(); });
  $("#toggle-video")?.addEventListener("click", () => { toggle("video"); renderControls(); });
  $("#share-screen")?.addEventListener("click", () => (local.screen ? stopScreen() : startScreen()));
  window.addEventListener("parley:screen", renderControls);
  $("#devices")?.addEventListener("click", () => openDevices());
  $("#devices-close")?.addEventListener("click", () => $("#devices-dialog").close());
  window.addEventListener("parley:devices", () => {
    if ($("#devices-dialog")?.open) fillPickers(devicePickers());
  });
  window.addEventListener("parley:device-lost", ({ detail }) => toast(detail.message));
  $("#raise-hand")?.addEventListener("click", () => { raiseHand(); renderControls(); });
  $("#layout")?.addEventListener("click", () => {
    setLayout(view.layout === "grid" ? "speaker" : "grid"); renderControls(); });
  $("#people-toggle")?.addEventListener("click", () => togglePanel("people-panel"));
  $("#copy-invite")?.addEventListener("click", () => copyInvite());
  $("#leave")?.addEventListener("click", () => leaveAsked());
  $("#leave-confirm")?.addEventListener("click", () => { $("#leave-dialog").close(); leaveNow(); });
  $("#leave-cancel")?.addEventListener("click", () => $("#leave-dialog").close());
  $("#rejoin")?.addEventListener("click", () => location.reload());
  window.addEventListener("parley:media", renderControls);
  // 1:1 calls are between signed-in users: a guest's front page shows meetings only
  window.addEventListener("parley:welcome", ({ detail }) => {
    if ($("#people")) $("#people").hidden = !!detail.guest;
    showContacts().catch(() => {});
  });
  document.addEventListener("keydown", onKey);

  // front page
  $("#new-meeting")?.addEventListener("click", () => location.assign(`/m/${randomRoom()}`));
  const room = $("#join-room");
  room?.addEventListener("input", () => {
    room.setCustomValidity(/^[A-Za-z0-9_.:@+-]{1,128}$/.test(roomFrom(room.value))
      ? "" : "a room name (letters, digits, _.:@+-) or an invite link");
  });
  if ($("#join-name") && opts.name !== "Guest") $("#join-name").value = opts.name;
  $("#join-form")?.addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("#join-name").value.trim();
    const q = new URLSearchParams();
    if (name) { q.set("name", name); remember("parley.name", name); }
    if (!$("#join-video").checked) q.set("video", "0");
    if (!$("#join-audio").checked) q.set("audio", "0");
    const query = q.toString();
    location.assign(`/m/${encodeURIComponent(roomFrom(room.value))}${query ? `?${query}` : ""}`);
  });
  $("#call-form")?.addEventListener("submit", (e) => {
    e.preventDefault(); calls.invite($("#callee").value.trim()); });
  $("#accept")?.addEventListener("click", () => calls.accept());
  $("#reject")?.addEventListener("click", () => calls.reject());
  $("#hangup")?.addEventListener("click", () => {
    if (state.activeCall?.state === "ringing") calls.cancel(); else calls.hangup(); });
  renderControls();
}

// Tiles: one per person and source (camera, screen), with the name, microphone and camera
// state, raised hand, connection quality and the quality badge (HD / SD / transcoded).
// `.tile[data-participant][data-source]` with `data-audio` / `data-video` / `data-hand` =
// on | off is part of the automation contract (docs/signaling.md, "Web client").
import { $, opts, state } from "./core.js";
import { tileSizes } from "./callserver.js";
import { arrange } from "./view.js";
import { icon } from "./icons.js";

export function tileId(identity, source) { return `tile-${identity}-${source}`.replace(/[^\w-]/g, "_"); }

function initials(name) {
  return (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
}

// A <video> whose source has no data yet delays the document's load event, for good if it never
// gets any (a page without camera and microphone; a pair that never connects). The join may now
// finish before the page's "load" (early.js), so a tile gets its source once the document has
// loaded, never before: the page's load never waits for media.
const unloaded = new Map();  // video -> the stream it gets at "load"
window.addEventListener("load", () => {
  for (const [video, stream] of unloaded) {
    if (video.isConnected) { video.srcObject = stream; video.play().catch(() => {}); }
  }
  unloaded.clear();
}, { once: true });
function setSource(video, stream) {
  if (document.readyState !== "complete") { unloaded.set(video, stream); return; }
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play().catch(() => {});
}

// Resolves when the first remote video shows a picture (start.js loads the rest of the page
// then); later tiles are not watched for it.
let pictured = null;
export const firstPicture = new Promise((resolve) => { pictured = resolve; });
firstPicture.then(() => { pictured = null; });

export function addTile(identity, source, label, stream, muted) {
  let tile = document.getElementById(tileId(identity, source));
  if (!tile) {
    tile = document.createElement("div");
    tile.className = "tile"; tile.id = tileId(identity, source);
    tile.dataset.participant = identity; tile.dataset.source = source;
    tile.setAttribute("role", "group");
    tile.innerHTML = `<video autoplay playsinline></video><div class="avatar" aria-hidden="true"></div>`
      + `<div class="label"><span class="hand">${icon("hand")}</span>`
      + `<span class="mic-off">${icon("mic", true)}</span><span class="name"></span></div>`
      + `<div class="conn"></div>`;
    if (identity === state.identity) tile.classList.add("self");
    // my camera's tile first, whether my camera opened before the others' pictures came or after
    if (identity === state.identity && source === "camera") $("#tiles").prepend(tile);
    else $("#tiles").appendChild(tile);
    tileSizes?.observe(tile);
  }
  tile.querySelector(".name").textContent = label;
  tile.querySelector(".avatar").textContent = initials(label);
  tile.setAttribute("aria-label", label);
  const video = tile.querySelector("video");
  video.muted = !!muted;
  if (pictured && identity !== state.identity) video.addEventListener("loadeddata", pictured, { once: true });
  setSource(video, stream);
  if (!muted && opts.devices.audiooutput && video.setSinkId) {
    video.setSinkId(opts.devices.audiooutput).catch(() => {});  // the speaker picked in prejoin
  }
  const p = identity === state.identity ? state.media : state.participants[identity];
  if (p) markMedia(identity, p);
  arrange();
  return tile;
}

// Camera / microphone / raised hand of a person, on their camera tile.
export function markMedia(identity, media) {
  const tile = document.getElementById(tileId(identity, "camera"));
  if (!tile) return;
  for (const key of ["audio", "video", "hand"]) {
    if (media[key] !== undefined) tile.dataset[key] = media[key] ? "on" : "off";
  }
  const name = tile.querySelector(".name").textContent;
  const notes = [tile.dataset.audio === "off" && "microphone off",
                 tile.dataset.video === "off" && "camera off", tile.dataset.hand === "on" && "hand raised"];
  tile.setAttribute("aria-label", [name, ...notes.filter(Boolean)].join(", "));
}

export function removeTiles(identity) {
  for (const el of document.querySelectorAll(".tile")) {
    if (el.dataset.participant === identity) el.remove();
  }
  arrange();
}

// One source's tile (a screen share that stopped); the stage goes back to the layout.
export function removeTile(identity, source) {
  document.getElementById(tileId(identity, source))?.remove();
  arrange();
}

// The connection badge: the state until connected, then the link quality (view.js measures it).
export function setConn(identity, s) {
  for (const el of document.querySelectorAll(".tile")) {
    if (el.dataset.participant !== identity) continue;
    const c = el.querySelector(".conn");
    c.dataset.state = s;
    if (s !== "connected") { c.textContent = s; delete c.dataset.link; }
    else if (!c.dataset.link) c.textContent = "connected";
  }
}

const BARS = { good: "▂▄▆", fair: "▂▄", poor: "▂" };
export function setLink(identity, quality, detail) {
  for (const el of document.querySelectorAll(".tile")) {
    if (el.dataset.participant !== identity) continue;
    const c = el.querySelector(".conn");
    if (c.dataset.state !== "connected") continue;
    c.dataset.link = quality; c.textContent = BARS[quality];
    c.title = `connection ${quality}${detail ? ` (${detail})` : ""}`;
    c.setAttribute("aria-label", c.title);
  }
}

// The quality badge of a remote tile: "transcoded" when the call server sends a rung made for
// this receiver, else HD from 720 received lines, SD below; the received height, and the call
// server's layer when there is one, in its title and aria-label.
export function showQuality(tile, { height, transcoded, layer }) {
  let badge = tile.querySelector(".quality");
  if (!badge) {
    badge = document.createElement("div"); badge.className = "quality"; tile.appendChild(badge);
  }
  const text = transcoded ? "transcoded" : height >= 720 ? "HD" : "SD";
  const detail = [height ? `${height}p` : null,
    layer ? (layer.transcoded ? `transcoded for this link (${layer.rid})`
      : `layer ${layer.index + 1} of ${layer.layers} (${layer.reason})`) : null].filter(Boolean);
  const label = `Video quality ${text}${detail.length ? `: ${detail.join(", ")}` : ""}`;
  if (badge.textContent !== text) badge.textContent = text;
  if (badge.title !== label) { badge.title = label; badge.setAttribute("aria-label", label); }
  badge.setAttribute("role", "img");
  tile.dataset.quality = text;
  tile.dataset.height = String(height || 0);
}

// Rendered tile heights go to the call server (sfu.view), so a small tile gets a small layer.
export function tileHeight(identity, source) {
  const video = document.getElementById(tileId(identity, source))?.querySelector("video");
  return video ? Math.round(video.clientHeight * (window.devicePixelRatio || 1)) : 0;
}

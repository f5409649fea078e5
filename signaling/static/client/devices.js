// Camera / microphone / speaker pickers (enumerateDevices), shared by the prejoin screen and the
// meeting's device menu: one list, one choice remembered in localStorage, one switch
// (media.js switchDevice: replaceTrack on every sender; setSpeaker: setSinkId on every tile).
import { local, opts, remember, state } from "./core.js";
import { setSpeaker, switchDevice } from "./media.js";

const KINDS = [["videoinput", "parley.camera", "Camera", "No camera available"],
               ["audioinput", "parley.mic", "Microphone", "No microphone available"],
               ["audiooutput", "parley.speaker", "Speaker", "Default"]];

// pickers: {videoinput, audioinput, audiooutput} -> <select>; after(kind) runs after a switch.
export async function fillPickers(pickers, after = () => {}) {
  const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
  const current = {};
  for (const t of local.stream?.getTracks() || []) {
    if (t.readyState === "live") current[t.kind === "audio" ? "audioinput" : "videoinput"] = t.getSettings().deviceId;
  }
  for (const [kind, key, noun, none] of KINDS) {
    const select = pickers[kind];
    if (!select) continue;
    const list = devices.filter((d) => d.kind === kind && d.deviceId);
    select.replaceChildren(...list.map((d, i) => {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label || `${noun} ${i + 1}`;
      return o;
    }));
    if (!list.length) {
      const o = document.createElement("option");
      o.textContent = none;
      select.replaceChildren(o);
    }
    const want = current[kind] || opts.devices[kind] || "";
    if (list.some((d) => d.deviceId === want)) select.value = want;
    select.disabled = list.length === 0;
    select.closest("label").hidden = kind === "audiooutput"
      && (list.length === 0 || !("setSinkId" in HTMLMediaElement.prototype));
    select.onchange = async () => {
      remember(key, select.value);
      if (kind === "audiooutput") { await setSpeaker(select.value); after(kind); return; }
      state.mediaError = null;  // a new device may well work where the last one did not
      await switchDevice(kind === "videoinput" ? "video" : "audio", select.value);
      after(kind);
    };
  }
}

// Recording in the web client: the Record button, the "being recorded" banner everyone in the
// room sees, and the download links that arrive when the file creator is done.
// Listens to the "parley:message" events parley.js dispatches for every signaling message.
(() => {
  const $ = (sel) => document.querySelector(sel);
  const parley = window.parley;
  const rec = { active: null, by: null, ready: [], error: null };

  function render() {
    const banner = $("#recording-banner");
    if (banner) {
      banner.hidden = !rec.active;
      banner.textContent = rec.active ? `● Recording${rec.by ? ` (started by ${rec.by})` : ""}` : "";
    }
    const button = $("#record");
    if (button) {
      button.textContent = rec.active ? "Stop recording" : "Record";
      button.disabled = !parley.state.room;
    }
    const list = $("#recordings");
    if (list) {
      list.replaceChildren(...rec.ready.map((r) => {
        const li = document.createElement("li");
        const a = document.createElement("a");
        // the link is fetched with this participant's token (the API checks who may see it)
        a.href = `${r.compositeUrl}&token=${encodeURIComponent(parley.state.token)}`;
        a.textContent = `recording ${r.id}`; a.target = "_blank";
        li.append(a);
        return li;
      }));
    }
  }

  async function call(method, path, body) {
    const resp = await fetch(path, {
      method, headers: { "content-type": "application/json",
                         authorization: `Bearer ${parley.state.token}` },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      rec.error = { code: data.detail?.code || `http_${resp.status}`,
                    message: data.detail?.message || resp.statusText };
      throw Object.assign(new Error(rec.error.message), rec.error);
    }
    return data;
  }

  const control = (action) =>
    call("POST", `/api/v1/rooms/${encodeURIComponent(parley.state.room)}/recording`, { action });

  // A late joiner learns from the API whether the room is already being recorded.
  async function refresh() {
    const { recordings } = await call(
      "GET", `/api/v1/recordings?room=${encodeURIComponent(parley.state.room)}`);
    const live = recordings.find((r) => r.state === "recording");
    rec.active = live ? live.id : null;
    render();
  }

  window.addEventListener("parley:message", ({ detail: msg }) => {
    switch (msg.type) {
      case "joined": refresh().catch(() => {}); break;
      case "recording.started": rec.active = msg.recording; rec.by = msg.by; break;
      case "recording.stopped": rec.active = null; break;
      case "recording.ready":
        if (msg.room === parley.state.room || !msg.room) rec.ready.push(msg);
        break;
      default: return;
    }
    render();
  });

  $("#record")?.addEventListener("click", () => {
    control(rec.active ? "stop" : "start").catch((err) => {
      const el = $("#error");
      if (el) { el.hidden = false; el.textContent = `${err.code}: ${err.message}`; }
    });
  });

  parley.recording = { state: rec, start: () => control("start"), stop: () => control("stop") };
  render();
})();

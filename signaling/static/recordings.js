// The recordings of a room or a broadcast (room "broadcast:<name>"), listed and played through
// the recordings API (docs/recording.md, "Playing"): a broadcast archive through its HLS VOD
// playlist with the vendored hls.js (Safari: natively), a meeting recording as its MP4. The
// token (a participant's, or one with the record/admin grant) comes as ?token= once and is taken
// out of the address bar; every request carries it as a Bearer header.
(() => {
  const $ = (sel) => document.querySelector(sel);
  const params = new URLSearchParams(location.search);
  const room = params.get("room") || "";
  const token = params.get("token") || sessionStorage.getItem(`parley-token:${room}`) || "";
  if (params.has("token")) {
    sessionStorage.setItem(`parley-token:${room}`, token);
    params.delete("token");
    history.replaceState(null, "", `${location.pathname}?${params}`);
  }
  const page = { room, recordings: [], playing: null, error: null, hls: null };
  window.recordingsPage = page;
  $("#room").textContent = room;

  function fail(code, message) {
    page.error = { code, message };
    const el = $("#error");
    el.hidden = false; el.textContent = `${code}: ${message}`;
  }

  function play(r) {
    const video = $("#video");
    video.hidden = false;
    page.playing = r.id;
    if (page.hls) { page.hls.destroy(); page.hls = null; }
    video.removeAttribute("src");
    if (r.hlsUrl && window.Hls && window.Hls.isSupported()) {
      const hls = new window.Hls({
        xhrSetup: (xhr) => xhr.setRequestHeader("authorization", `Bearer ${token}`) });
      hls.on(window.Hls.Events.ERROR, (_, d) => {
        if (d.fatal) fail("playback_failed", `${d.type}: ${d.details}`);
      });
      hls.loadSource(r.hlsUrl);
      hls.attachMedia(video);
      page.hls = hls;
    } else {  // native HLS (Safari) or the MP4: a plain link carries the token
      const url = r.hlsUrl && video.canPlayType("application/vnd.apple.mpegurl")
        ? r.hlsUrl : r.compositeUrl;
      video.src = `${url}&token=${encodeURIComponent(token)}`;
    }
    video.play().catch(() => {});
  }

  function render() {
    $("#list").replaceChildren(...page.recordings.map((r) => {
      const li = document.createElement("li");
      const label = `${r.kind === "broadcast" ? "broadcast" : "meeting"} recording ${r.id}`
        + (r.duration ? ` (${r.duration.toFixed(1)} s)` : "") + ` · ${r.state}`;
      li.append(label);
      if (r.state === "ready") {
        const button = document.createElement("button");
        button.type = "button"; button.textContent = "Play";
        button.dataset.recording = r.id;
        button.setAttribute("aria-label", `Play ${label}`);
        button.addEventListener("click", () => play(r));
        const a = document.createElement("a");
        a.href = `${r.compositeUrl}&token=${encodeURIComponent(token)}`;
        a.textContent = "Download"; a.target = "_blank";
        li.append(" ", button, " ", a);
      }
      return li;
    }));
  }

  async function load() {
    const resp = await fetch(`/api/v1/recordings?room=${encodeURIComponent(room)}`,
                             { headers: { authorization: `Bearer ${token}` } });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      fail(data.detail?.code || `http_${resp.status}`, data.detail?.message || resp.statusText);
      return;
    }
    page.recordings = data.recordings;
    render();
  }

  page.play = (id) => play(page.recordings.find((r) => r.id === id));
  page.loaded = load().catch((err) => fail("network", String(err)));
})();

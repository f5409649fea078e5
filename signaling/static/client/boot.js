// The page's first script: a classic one at the top of the head (room.html, index.html), run as
// soon as the parser gets there, while the modules are still being fetched (a module runs only
// once its whole graph is in: 40-90 ms later here, measured with bench/join_time). It holds the
// page's options from its URL and, for a meeting link that joins at once (/m/<room>?name=),
// starts the two slow parts of a join: the WebSocket and getUserMedia. core.js, capture.js and
// early.js take all of it from window.parleyBoot; nothing of it is defined in a module again.
"use strict";
window.parleyBoot = (() => {
  const params = new URLSearchParams(location.search);

  // Test-only hooks (blockDirect, connectTimeout, stats() and the other probes on window.parley)
  // exist only under automation: a browser driven by WebDriver/CDP (navigator.webdriver, as
  // Playwright's Chromium is) or an explicit ?automation=1 (docs/signaling.md, "Web client").
  const automation = params.get("automation") === "1" || navigator.webdriver === true;

  const stored = (key) => { try { return localStorage.getItem(key); } catch { return null; } };

  const opts = {
    name: params.get("name") || stored("parley.name") || "Guest",
    // A token the deployment minted for this user (its login, or `parley token`), handed over in
    // the fragment (#token=...) so it never reaches a server log; without one the page is a guest.
    token: new URLSearchParams(location.hash.slice(1)).get("token") || undefined,
    audio: params.get("audio") !== "0",   // open the microphone at all
    video: params.get("video") !== "0",   // open the camera at all
    muted: false, cameraOff: false,       // opened, but the track starts disabled (prejoin)
    devices: { audioinput: stored("parley.mic"), videoinput: stored("parley.camera"),
               audiooutput: stored("parley.speaker") },
    screen: params.get("screen") === "1",
    topology: params.get("topology") || "auto",
    relay: params.get("relay") === "1",
    autoAnswer: params.get("autoAnswer") === "1",
    bandwidthKbps: params.get("bw") ? Number(params.get("bw")) : undefined,
    width: Number(params.get("w")) || 640, height: Number(params.get("h")) || 480,
    fps: Number(params.get("fps")) || undefined,
    // Test hook modelling a firewall between this page and these identities: no direct (host,
    // srflx, prflx) candidates are exchanged with them, only relay ones (docs/signaling.md).
    blockDirect: new Set(automation ? (params.get("blockDirect") || "").split(",").filter(Boolean) : []),
    // Test hook modelling a device that decodes only these video codecs (e.g. "h264"): every video
    // m-line of its call-server session lists only them, so the call server transcodes for it.
    videoCodecs: automation ? (params.get("videoCodecs") || "").split(",").filter(Boolean) : [],
    // The codec the camera is published in on a call server: "vp9" or "av1" (simulcast, L1T1 per
    // layer), else VP8; every other codec stays announced for receiving.
    sendCodec: ["vp8", "vp9", "av1"].includes(params.get("sendCodec")) ? params.get("sendCodec") : undefined,
  };

  const pathRoom = location.pathname.startsWith("/m/")
    ? decodeURIComponent(location.pathname.slice(3)) : null;

  const KINDS = { audio: "audioinput", video: "videoinput" };

  // A picked device is asked for exactly: Chromium treats an `ideal` deviceId as one wish among
  // the size and rate and may open the default camera instead (measured with its fake devices).
  function constraints(kind) {
    const id = opts.devices[KINDS[kind]];
    const device = id ? { deviceId: { exact: id } } : {};
    if (kind === "audio") return id ? device : true;
    return { width: opts.width, height: opts.height, ...(opts.fps ? { frameRate: opts.fps } : {}), ...device };
  }
  const ask = (kinds) => navigator.mediaDevices.getUserMedia(
    Object.fromEntries(["audio", "video"].map((k) => [k, kinds.includes(k) ? constraints(k) : false])));

  // A WebSocket being opened with the deployment's token (#token=) or, for a guest, asking the
  // server to make the guest identity itself (/ws?guest=1: no token round trip first; the welcome
  // carries the token, for the HTTP API and its refresh). Its messages (and close) wait until
  // session.js takes it: {ws, queue, closed, info} (info: client.info was sent on it).
  function openSocket() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const enc = encodeURIComponent;
    const auth = opts.token ? `token=${enc(opts.token)}`
      : `guest=1&room=${enc(pathRoom || "lobby")}&name=${enc(opts.name)}`;
    const ws = new WebSocket(`${proto}://${location.host}/ws?${auth}`);
    const held = { ws, queue: [], closed: null, info: false };
    ws.onmessage = (e) => held.queue.push(e);
    ws.onclose = (e) => { held.closed = e; };
    return held;
  }

  const joinsAtOnce = !!(pathRoom && params.has("name"));
  const held = joinsAtOnce ? openSocket() : null;
  const bootKinds = ["audio", "video"].filter((k) => opts[k]);
  let media = joinsAtOnce && bootKinds.length ? ask(bootKinds) : null;
  media?.catch(() => {});  // its failure is read by whoever takes it (capture.js acquire)

  // resolves at DOMContentLoaded: every module of the page has run (session.js hands the
  // socket's held messages to the add-ons only then)
  const loaded = new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve, { once: true }));

  return {
    loaded, params, automation, stored, opts, pathRoom, KINDS, constraints, ask, openSocket,
    held,  // the socket opened here for a link that joins at once, else null
    // getUserMedia for these kinds: the call begun here if it asked for the same, once
    takeMedia(kinds) {
      const m = media; media = null;
      return m && kinds.join() === bootKinds.join() ? m : ask(kinds);
    },
  };
})();

// The rest of the meeting page, which start.js imports once the call shows its first picture: the
// page itself (parley.js: controls, contacts, direct messages, device pickers, prejoin, probes)
// and its add-ons. One module graph, so they are evaluated in this order in one task: the add-ons
// read window.parley, and nothing sees window.parley without them.
import "../parley.js";
import "../parley-recording.js";
import "../parley-chat.js";

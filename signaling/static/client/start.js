// The meeting's session for a link that joins at once (?name=), begun as soon as session.js and
// what it imports are here: a deferred module ahead of parley.js, so it runs when the page is
// parsed and this graph is in, not after parley.js's (the controls, contacts, direct messages,
// device pickers, prejoin and probes, none of which a join needs). The mesh offer answers
// `joined` from here; it waited 35-60 ms for the rest of the client (docs/benchmarks.md,
// "2026-12-04 (4)"). Any other page connects from parley.js, after its prejoin.
import { connect } from "./session.js";
import { early } from "./early.js";

if (early.socket) connect();

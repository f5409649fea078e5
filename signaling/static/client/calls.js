// 1:1 calls (docs/signaling.md, "1:1 calls"): invite, ring, accept into the room call-<id>, end.
import { $, opts, send, state } from "./core.js";
import { joinRoom, leaveRoom } from "./rooms.js";

export const calls = {
  invite: (to) => send({ type: "invite", to }),
  accept: (callId) => send({ type: "accept", callId: callId || state.incoming?.callId }),
  reject: (callId) => send({ type: "reject", callId: callId || state.incoming?.callId }),
  cancel: () => state.activeCall && send({ type: "cancel", callId: state.activeCall.callId }),
  hangup: () => state.activeCall && send({ type: "hangup", callId: state.activeCall.callId }),
};

export function renderCall() {
  const inc = $("#incoming");
  if (inc) {
    inc.hidden = !state.incoming;
    if (state.incoming) $("#incoming-from").textContent = state.incoming.name || state.incoming.from;
  }
  const cs = $("#call-state");
  if (cs) cs.textContent = state.activeCall ? `${state.activeCall.state} (${state.activeCall.callId})` : "no call";
  const stage = $("#call-stage");
  if (stage) stage.hidden = !state.room;
}

export function onCallMessage(msg) {
  const call = state.calls[msg.callId] = { ...(state.calls[msg.callId] || {}), ...msg };
  switch (msg.type) {
    case "call.ringing": call.state = "ringing"; state.activeCall = call; break;
    case "call.incoming":
      call.state = "incoming"; state.incoming = call;
      if (opts.autoAnswer) calls.accept(msg.callId);
      break;
    case "call.accepted":
      call.state = "active"; state.activeCall = call; state.incoming = null;
      joinRoom(msg.room).then(renderCall);
      break;
    case "call.ended":
      call.state = `ended:${msg.reason}`;
      if (state.room === `call-${msg.callId}`) leaveRoom(false);  // the server took us out
      if (state.incoming?.callId === msg.callId) state.incoming = null;
      else if (!state.activeCall || state.activeCall.callId === msg.callId
               || state.activeCall.state.startsWith("ended")) state.activeCall = call;
      break;
  }
  renderCall();
}

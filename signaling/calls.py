"""1:1 calls: invite -> ringing -> accept | reject | busy | no answer | offline | cancel; hangup.

A call's record lives in the shared store (``call:<id>``), so the callee's replica can accept a
call its caller's replica created. Every decision is a ``set_nx`` on ``calldecision:<id>`` (and
``callend:<id>`` once active): the first of accept / reject / cancel / no-answer timer / hangup
wins and the others become ``call_state`` errors, on one replica or many. ``busy:<identity>``
marks a user with a ringing or active call. An accepted call becomes the room ``call-<id>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from parley.signaling import metrics
from parley.signaling.protocol import Message, ProtocolError

if TYPE_CHECKING:
    from parley.signaling.hub import Hub
    from parley.signaling.session import Session

CALL_TTL_S = 12 * 3600


class Calls:
    def __init__(self, hub: Hub, ring_timeout_s: float = 30.0) -> None:
        self.hub = hub
        self.ring_timeout_s = ring_timeout_s
        self._timers: dict[str, asyncio.Task[None]] = {}

    async def record(self, call_id: str) -> dict[str, Any] | None:
        raw = await self.hub.store.get(f"call:{call_id}")
        return json.loads(raw) if raw else None

    async def _save(self, call: dict[str, Any]) -> None:
        await self.hub.store.set(f"call:{call['callId']}", json.dumps(call), CALL_TTL_S)

    async def invite(self, s: Session, msg: Message) -> None:
        callee: str = msg["to"]
        if callee == s.identity:
            raise ProtocolError("self_call", "you cannot call yourself", msg.id)
        allowed, reason = await self.hub.users.may_call(s.identity, callee)
        if not allowed:
            metrics.CALLS.labels("not_allowed").inc()
            raise ProtocolError("call_not_allowed", reason, msg.id)
        call_id = uuid.uuid4().hex[:16]
        if not await self.hub.store.set_nx(f"busy:{s.identity}", call_id, CALL_TTL_S):
            raise ProtocolError("already_in_call", "you already have a ringing or active call",
                                msg.id)
        call = {"callId": call_id, "caller": s.identity, "callerName": s.name, "callee": callee,
                "state": "ringing", "created": time.time()}
        s.calls.add(call_id)
        self.hub.emit("call.invited", call_id=call_id, data={"caller": s.identity,
                                                             "callee": callee})
        metrics.CALLS.labels("invited").inc()
        if not await self.hub.presence.online(callee):
            await self._end(call, "offline", by=None, decided=False)
            return
        if not await self.hub.store.set_nx(f"busy:{callee}", call_id, CALL_TTL_S):
            await self._end(call, "busy", by=None, decided=False)
            return
        await self._save(call)
        metrics.CALLS.labels("ringing").inc()
        metrics.ACTIVE_CALLS.labels("ringing").inc()
        s.send({"type": "call.ringing", "callId": call_id, "to": callee, "ref": msg.id})
        await self.hub.presence.deliver(callee, {
            "type": "call.incoming", "callId": call_id, "from": s.identity, "name": s.name})
        self._timers[call_id] = asyncio.create_task(self._ring_timeout(call_id))

    async def _ring_timeout(self, call_id: str) -> None:
        await asyncio.sleep(self.ring_timeout_s)
        self._timers.pop(call_id, None)
        call = await self.record(call_id)
        if call and await self.hub.store.set_nx(f"calldecision:{call_id}", "no_answer",
                                                CALL_TTL_S):
            metrics.ACTIVE_CALLS.labels("ringing").dec()
            await self._end(call, "no_answer", by=None)

    async def _party(self, s: Session, msg: Message, role: str | None) -> dict[str, Any]:
        call = await self.record(msg["callId"])
        if call is None or s.identity not in (call["caller"], call["callee"]) or (
                role is not None and call[role] != s.identity):
            raise ProtocolError("unknown_call", f"no call {msg['callId']} for you", msg.id)
        return call

    async def _decide(self, call: dict[str, Any], decision: str, msg: Message) -> None:
        if not await self.hub.store.set_nx(f"calldecision:{call['callId']}", decision,
                                           CALL_TTL_S):
            raise ProtocolError("call_state", f"call {call['callId']} is no longer ringing",
                                msg.id)
        metrics.ACTIVE_CALLS.labels("ringing").dec()
        timer = self._timers.pop(call["callId"], None)
        if timer:
            timer.cancel()

    async def accept(self, s: Session, msg: Message) -> None:
        call = await self._party(s, msg, "callee")
        await self._decide(call, "accepted", msg)
        call.update(state="active", room=f"call-{call['callId']}", started=time.time())
        await self._save(call)
        s.calls.add(call["callId"])
        metrics.CALLS.labels("active").inc()
        metrics.ACTIVE_CALLS.labels("active").inc()
        self.hub.emit("call.started", call_id=call["callId"], room=call["room"],
                      data={"caller": call["caller"], "callee": call["callee"]})
        accepted = {"type": "call.accepted", "callId": call["callId"], "room": call["room"],
                    "caller": call["caller"], "callee": call["callee"]}
        for who in (call["caller"], call["callee"]):
            await self.hub.presence.deliver(who, accepted)

    async def reject(self, s: Session, msg: Message) -> None:
        call = await self._party(s, msg, "callee")
        await self._decide(call, "rejected", msg)
        await self._end(call, "rejected", by=s.identity)

    async def cancel(self, s: Session, msg: Message) -> None:
        call = await self._party(s, msg, "caller")
        await self._decide(call, "cancelled", msg)
        await self._end(call, "cancelled", by=s.identity)

    async def hangup(self, s: Session, msg: Message) -> None:
        call = await self._party(s, msg, None)
        if call.get("state") != "active":
            raise ProtocolError("call_state", "only an active call can be hung up; "
                                "use cancel or reject while ringing", msg.id)
        await self._hangup(call, "hangup", s.identity, msg)

    async def _hangup(self, call: dict[str, Any], reason: str, by: str,
                      msg: Message | None) -> None:
        if not await self.hub.store.set_nx(f"callend:{call['callId']}", reason, CALL_TTL_S):
            if msg is not None:
                raise ProtocolError("call_state", "the call has already ended", msg.id)
            return
        metrics.ACTIVE_CALLS.labels("active").dec()
        await self._end(call, reason, by=by)

    async def _end(self, call: dict[str, Any], reason: str, by: str | None,
                   decided: bool = True) -> None:
        """Tell both parties, free their busy marks, record the end."""
        call_id = call["callId"]
        metrics.CALLS.labels(reason).inc()
        started = call.get("started")
        call.update(state="ended", reason=reason)
        if decided:
            await self._save(call)
        for who in (call["caller"], call["callee"]):
            await self.hub.store.delete_if(f"busy:{who}", call_id)
        # The event first: leaving the call room (participant.left) follows the end.
        self.hub.emit("call.ended", call_id=call_id, room=call.get("room"), data={
            "caller": call["caller"], "callee": call["callee"], "reason": reason, "by": by,
            "durationMs": int((time.time() - started) * 1000) if started else None})
        ended = {"type": "call.ended", "callId": call_id, "reason": reason, "by": by}
        await self.hub.presence.deliver(call["caller"], ended)
        if reason not in ("offline", "busy"):
            await self.hub.presence.deliver(call["callee"], ended)

    async def disconnected(self, s: Session) -> None:
        """A party's last connection went away: end what it was part of."""
        for call_id in list(s.calls):
            call = await self.record(call_id)
            if call is None or call.get("state") == "ended":
                continue
            if call["state"] == "ringing":
                reason = "cancelled" if call["caller"] == s.identity else "offline"
                if await self.hub.store.set_nx(f"calldecision:{call_id}", reason, CALL_TTL_S):
                    metrics.ACTIVE_CALLS.labels("ringing").dec()
                    timer = self._timers.pop(call_id, None)
                    if timer:
                        timer.cancel()
                    await self._end(call, reason, by=s.identity)
            elif call["state"] == "active":
                await self._hangup(call, "disconnected", s.identity, None)
        s.calls.clear()

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._timers.clear()

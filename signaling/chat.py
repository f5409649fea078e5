"""Chat: messages in a room (to everyone or to one participant) and direct messages between users
outside meetings (docs/signaling.md, "Chat").

Every message is written to a log first (signaling/chatlog.py: a Redis stream, or memory in the
embedded default), then delivered through presence, so whichever replica holds a recipient hands
it over. A room's log gives late joiners the recent history. A direct message stays in the
recipient's inbox until their client acks it (``chat.ack``), so an offline user gets it when they
connect, on any replica, after any replica restart; the client also dedupes by id, so a message
both replayed and delivered live is shown once. It is also kept in its conversation's log, which
either of the two users reads page by page (``chat.history {with}``) from any browser. A resend
with the same ``clientId`` is acked with the first send's message and delivered to nobody again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parley.signaling import protocol as p
from parley.signaling.chatlog import ChatLog, chat_log_for, conversation
from parley.signaling.limits import TokenBucket
from parley.signaling.rooms import call_of
from parley.tokens import GUEST_PREFIX

if TYPE_CHECKING:
    from parley.signaling.hub import Hub
    from parley.signaling.session import Session

logger = logging.getLogger("parley.signaling.chat")


@dataclass(frozen=True)
class ChatOptions:
    """Chat limits, read from the environment (docs/signaling.md, "Chat")."""

    max_chars: int = 2000  # characters of one message's text
    rate: float = 1.0  # chat.send per second per connection ...
    burst: float = 10.0  # ... after a burst of this many
    history: int = 50  # messages a joiner gets in chat.history
    room_keep: int = 200  # about this many kept per room (MAXLEN ~)
    room_ttl_s: float = 24 * 3600  # a room's log expires this long after its last message
    inbox_keep: int = 100  # unacked direct messages kept per user (oldest dropped)
    inbox_ttl_s: float = 7 * 24 * 3600  # an inbox expires this long after its last message
    dm_keep: int = 500  # about this many kept per conversation of two users (MAXLEN ~)
    dm_ttl_s: float = 30 * 24 * 3600  # a conversation expires this long after its last message
    history_rate: float = 5.0  # chat.history pages per second per connection ...
    history_burst: float = 20.0  # ... after a burst of this many
    dedupe_ttl_s: float = 600  # a clientId is remembered this long

    @classmethod
    def from_env(cls) -> ChatOptions:
        def num(name: str, default: float) -> float:
            return float(os.environ.get(name) or default)

        return cls(max_chars=int(num("PARLEY_CHAT_MAX_CHARS", 2000)),
                   rate=num("PARLEY_RATE_CHAT_PER_S", 1.0),
                   burst=num("PARLEY_RATE_CHAT_BURST", 10.0),
                   history=int(num("PARLEY_CHAT_HISTORY", 50)),
                   room_keep=int(num("PARLEY_CHAT_ROOM_KEEP", 200)),
                   room_ttl_s=num("PARLEY_CHAT_ROOM_TTL_S", 24 * 3600),
                   inbox_keep=int(num("PARLEY_CHAT_INBOX_KEEP", 100)),
                   inbox_ttl_s=num("PARLEY_CHAT_INBOX_TTL_S", 7 * 24 * 3600),
                   dm_keep=int(num("PARLEY_CHAT_DM_KEEP", 500)),
                   dm_ttl_s=num("PARLEY_CHAT_DM_TTL_S", 30 * 24 * 3600))


def _message(entry_id: str, fields: dict[str, str], room: str | None) -> dict[str, Any]:
    """The ``chat.message`` a log entry is shown as."""
    out: dict[str, Any] = {"type": "chat.message", "id": entry_id, "from": fields["from"],
                           "name": fields["name"], "text": fields["text"],
                           "ts": int(fields["ts"])}
    if room is not None:
        out["room"] = room
    if fields.get("to"):
        out["to"] = fields["to"]
    return out


class Chat:
    def __init__(self, hub: Hub, options: ChatOptions | None = None,
                 log: ChatLog | None = None) -> None:
        self.hub = hub
        self.options = options or ChatOptions.from_env()
        self.log = log or chat_log_for(hub.store)
        self._buckets: weakref.WeakKeyDictionary[Session, TokenBucket] = (
            weakref.WeakKeyDictionary())
        self._history_buckets: weakref.WeakKeyDictionary[Session, TokenBucket] = (
            weakref.WeakKeyDictionary())

    def _limit(self, s: Session, msg: p.Message, history: bool = False) -> None:
        buckets = self._history_buckets if history else self._buckets
        bucket = buckets.get(s)
        if bucket is None:
            o = self.options
            bucket = buckets[s] = (TokenBucket(o.history_rate, o.history_burst) if history
                                   else TokenBucket(o.rate, o.burst))
        wait = bucket.take()
        if wait:
            raise p.ProtocolError("rate_limited", f"too many {msg.type} messages; retry later",
                                  msg.id, retryAfterMs=int(wait * 1000) + 1)

    async def _may_message(self, s: Session, to: str, msg: p.Message) -> None:
        """Direct messages are between users: guests chat in their room only, and a user may
        message whom they may call (the user service's policy)."""
        if s.token.guest or to.startswith(GUEST_PREFIX):
            raise p.ProtocolError("chat_not_allowed", "direct messages are between users; "
                                  "guests chat in their room", msg.id)
        if to == s.identity:
            raise p.ProtocolError("chat_not_allowed", "a user cannot message themselves", msg.id)
        allowed, reason = await self.hub.users.may_call(s.identity, to)
        if not allowed:
            raise p.ProtocolError("chat_not_allowed", reason, msg.id)

    async def send(self, s: Session, msg: p.Message) -> None:
        """``chat.send``: check, dedupe, log, deliver, ack, emit the metadata event."""
        self._limit(s, msg)
        text: str = msg["text"]
        if len(text) > self.options.max_chars:
            raise p.ProtocolError("chat_too_long", f"a message has at most "
                                  f"{self.options.max_chars} characters", msg.id,
                                  maxChars=self.options.max_chars)
        if not text.strip():
            raise p.ProtocolError("bad_message", "chat.send.text is empty", msg.id)
        room, to = msg.get("room"), msg.get("to")
        if room is not None:
            if s.room != room:
                raise p.ProtocolError("not_joined", f"chat in '{room}' needs joining it", msg.id)
            if to is not None and (to == s.identity or await self.hub.store.hget(
                    f"room:{room}", to) is None):
                raise p.ProtocolError("peer_not_in_room", f"{to} is not in room '{room}'",
                                      msg.id)
        elif to is not None:
            await self._may_message(s, to, msg)
        else:
            raise p.ProtocolError("bad_message", "chat.send needs a room, a to, or both", msg.id)
        dedupe = f"chat:sent:{s.identity}:{msg['clientId']}"
        if not await self.hub.store.set_nx(dedupe, "", self.options.dedupe_ttl_s):
            await self._resent(s, msg, dedupe)
            return
        fields = {"from": s.identity, "name": s.name, "text": text,
                  "ts": str(int(time.time() * 1000)), "to": to or ""}
        try:
            if room is not None:
                entry_id = await self.log.append(f"chat:room:{room}", fields,
                                                 self.options.room_keep, self.options.room_ttl_s)
            else:
                o = self.options
                entry_id = await self.log.append_direct(
                    conversation(s.identity, to or ""), f"chat:inbox:{to}", fields,
                    (o.dm_keep, o.inbox_keep), (o.dm_ttl_s, o.inbox_ttl_s))
        except Exception:
            await self.hub.store.delete(dedupe)  # not sent: a resend must try again
            raise
        message = _message(entry_id, fields, room)
        await self.hub.store.set(dedupe, json.dumps(message), self.options.dedupe_ttl_s)
        s.send({"type": "chat.sent", "clientId": msg["clientId"], "message": message,
                "ref": msg.id})
        if to is not None:
            await self.hub.presence.deliver(to, message)  # offline: it waits in the inbox
        else:
            for other in await self.hub.rooms.members(room or ""):
                if other != s.identity:
                    await self.hub.presence.deliver(other, message)
        kind = "direct" if room is None else "participant" if to else "room"
        self.hub.emit("chat.message", room=room, call_id=call_of(room or ""), data={
            "identity": s.identity, "toKind": kind, "length": len(text)})

    async def _resent(self, s: Session, msg: p.Message, dedupe: str) -> None:
        """The same clientId again (a resend after a lost ack): ack with the first message."""
        for _ in range(20):  # the first send may still be writing its log entry
            stored = await self.hub.store.get(dedupe)
            if stored:
                s.send({"type": "chat.sent", "clientId": msg["clientId"],
                        "message": json.loads(stored), "duplicate": True, "ref": msg.id})
                return
            await asyncio.sleep(0.05)
        s.send({"type": "chat.sent", "clientId": msg["clientId"], "duplicate": True,
                "ref": msg.id})

    async def joined(self, s: Session) -> None:
        """A joiner gets the room's recent messages it may see (public ones, its own private
        ones) as one ``chat.history``."""
        room = s.room
        if room is None:
            return
        visible = [_message(i, f, room) for i, f in await self.log.recent(
            f"chat:room:{room}", self.options.history * 4)
            if not f.get("to") or s.identity in (f["to"], f["from"])]
        s.send({"type": "chat.history", "room": room,
                "messages": visible[-self.options.history:]})

    async def connected(self, s: Session) -> None:
        """Replay the direct messages waiting in this user's inbox, oldest first."""
        if s.token.guest:
            return
        try:
            waiting = await self.log.all(f"chat:inbox:{s.identity}", self.options.inbox_keep)
        except Exception:  # the inbox stays; the next connect replays it
            logger.exception("inbox of %s not replayed", s.identity)
            return
        for entry_id, fields in waiting:
            s.send(_message(entry_id, fields, None))

    async def history(self, s: Session, msg: p.Message) -> None:
        """``chat.history {with, before?, limit?}``: a page of the requester's conversation
        with one user, oldest first, ``more`` when older ones remain. The conversation is always
        the requester's own, and only with a user they may message now: nobody reads another
        pair's messages."""
        self._limit(s, msg, history=True)
        peer: str = msg["with"]
        await self._may_message(s, peer, msg)
        limit: int = msg.get("limit") or 50
        page = await self.log.before(conversation(s.identity, peer), msg.get("before"),
                                     limit + 1)
        s.send({"type": "chat.history", "with": peer, "more": len(page) > limit,
                "messages": [_message(i, f, None) for i, f in page[-limit:]], "ref": msg.id})

    async def ack(self, s: Session, msg: p.Message) -> None:
        """``chat.ack``: the client showed these direct messages; they leave the inbox."""
        deleted = await self.log.delete(f"chat:inbox:{s.identity}", msg["ids"])
        s.send({"type": "chat.acked", "ids": msg["ids"], "deleted": deleted, "ref": msg.id})

"""Moving a room's media from the peer-to-peer mesh to a call server, without anyone rejoining.

A room is ``p2p`` until it needs a call server (a join past the mesh limit, a ``topology: "sfu"``
join, or a recording); from then on it stays on the call server until it empties (going back to a
mesh would cost everyone a second renegotiation for little gain). The switch is one shared key
(``roomtopo:<room>``) plus an ``sfu.start`` to every member: each client closes its mesh
connections and opens its call-server session (``sfu.join``); its tiles are refilled by the new
tracks. Callers hold the room lock (``Rooms._locked``) so a join cannot race a switch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parley.signaling.hub import Hub

SFU = "sfu"


def topology_key(room: str) -> str:
    return f"roomtopo:{room}"


async def room_topology(hub: Hub, room: str) -> str:
    """``sfu`` once the room went to a call server, else ``p2p``."""
    return await hub.store.get(topology_key(room)) or "p2p"


async def switch(hub: Hub, room: str, members: Iterable[str], reason: str) -> None:
    """Record the room as on a call server and tell ``members`` to move their media there."""
    await hub.store.set(topology_key(room), SFU, ttl_s=24 * 3600)
    start = {"type": "sfu.start", "room": room, "reason": reason}
    members = list(members)
    for identity in members:
        await hub.presence.deliver(identity, start)
    hub.emit("topology.switched", room=room, data={
        "from": "p2p", "to": SFU, "reason": reason, "moved": len(members)})


async def move_room_to_call_server(hub: Hub, room: str, reason: str = "recording") -> bool:
    """For callers outside a join (recording start): put ``room`` on a call server now.

    True when the room's media is (or already was) on a call server; False when no call server
    takes it, in which case nothing changed. Idempotent."""
    async with hub.rooms._locked(room):
        if await room_topology(hub, room) == SFU:
            return True
        members = await hub.rooms.members(room)
        if await hub.directory.place(room, max(1, len(members)), []) is None:
            return False
        await switch(hub, room, list(members), reason)
        return True


async def room_emptied(hub: Hub, room: str) -> None:
    """The last member left: the next meeting in this room starts peer to peer again."""
    await hub.store.delete(topology_key(room))
    await hub.sfu.room_emptied(room)

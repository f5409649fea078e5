"""The user service: who a user is (organisation, contacts) and who may call whom.

Policy ``org`` (the embedded default): users of the same organisation may call each other;
users not in the directory (guests) belong to the ``default`` organisation, so on `parley up`
everyone may call everyone. Policy ``contacts``: a call needs the callee in the caller's contact
list or the caller in the callee's. The directory comes from a JSON file
(``PARLEY_USERS_FILE``) and can be changed at run time through the HTTP API; API changes are
kept in the shared store so every replica sees them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parley.signaling.store import Store
from parley.tokens import GUEST_PREFIX

DEFAULT_ORG = "default"
POLICIES = ("org", "contacts")


@dataclass(frozen=True)
class User:
    identity: str
    org: str = DEFAULT_ORG
    contacts: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        return {"identity": self.identity, "org": self.org, "contacts": sorted(self.contacts)}


def _user(identity: str, data: dict[str, Any]) -> User:
    if identity.startswith(GUEST_PREFIX):  # server-made guest identities are never users
        raise ValueError(f"user {identity!r}: identities starting with {GUEST_PREFIX!r} are "
                         "reserved for guests")
    org = data.get("org", DEFAULT_ORG)
    contacts = data.get("contacts", [])
    if not isinstance(org, str) or not isinstance(contacts, list) or not all(
            isinstance(c, str) for c in contacts):
        raise ValueError(f"user {identity!r}: org must be a string, contacts a list of strings")
    return User(identity, org, frozenset(contacts))


class UserDirectory:
    def __init__(self, store: Store, users: dict[str, User] | None = None,
                 policy: str = "org") -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        self.store = store
        self.base = users or {}
        self.base_policy = policy

    @classmethod
    def from_file(cls, store: Store, path: str | Path | None) -> UserDirectory:
        """Load ``{"policy": "org"|"contacts", "users": {id: {"org", "contacts"}}}``."""
        if not path:
            return cls(store)
        data = json.loads(Path(path).read_text())
        users = {k: _user(k, v) for k, v in data.get("users", {}).items()}
        return cls(store, users, data.get("policy", "org"))

    async def policy(self) -> str:
        return await self.store.get("users:policy") or self.base_policy

    async def set_policy(self, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        await self.store.set("users:policy", policy)

    async def get(self, identity: str) -> User:
        raw = await self.store.hget("users", identity)
        if raw is not None:
            return _user(identity, json.loads(raw))
        return self.base.get(identity) or User(identity)

    async def registered(self, identity: str) -> bool:
        """Whether ``identity`` is a user of the directory (file or API), not a guest."""
        return identity in self.base or await self.store.hget("users", identity) is not None

    async def put(self, identity: str, data: dict[str, Any]) -> User:
        user = _user(identity, data)
        await self.store.hset("users", identity, json.dumps(user.to_json()))
        return user

    async def may_call(self, caller: str, callee: str) -> tuple[bool, str]:
        """(allowed, reason); the reason is shown to a refused caller."""
        a, b = await self.get(caller), await self.get(callee)
        if await self.policy() == "contacts":
            if b.identity in a.contacts or a.identity in b.contacts:
                return True, "contacts"
            return False, f"{callee} is not in {caller}'s contacts"
        if a.org == b.org:
            return True, "same organisation"
        return False, f"{caller} ({a.org}) may not call {callee} (another organisation)"
